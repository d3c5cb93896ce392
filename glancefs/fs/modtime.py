"""Modification times that tools set, kept in an image property.

Why: rsync, ``cp -u``, make and backup tools decide by size and mtime. Glance
has no modification time of its own a client may set (``updated_at`` is the
server's), so a file copied in never looks up to date and ``rsync -a`` would
upload everything again, every time. rclone solves the same on object stores
by keeping the time in the object's metadata; glancefs does it in an image
property.

The rules:

* The property is ``mtime`` (:data:`PROPERTY`), as rclone names it on Swift
  and S3, holding seconds since the epoch as a decimal with nanoseconds
  (``1700000000.123456789``), the form rclone writes there. Reading also
  accepts a plain integer or float and an RFC 3339 time (``2023-11-14T22:13:20.5Z``),
  the form rclone uses elsewhere, so times set by other tools are shown too.
* ``stat`` shows it as mtime when it is present and valid, else the image's
  ``updated_at``. atime is never kept (the mount is ``noatime``).
* A value that cannot be read is ignored (``updated_at`` is shown), never an
  error: the property belongs to whoever set it.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone

PROPERTY = "mtime"
NS = 1_000_000_000
_DECIMAL = re.compile(r"^\s*(-?\d+)(?:\.(\d{1,9})\d*)?\s*$")


def format_ns(ns: int) -> str:
    """The property's value for a time in nanoseconds since the epoch."""
    seconds, fraction = divmod(abs(ns), NS)
    return f"{'-' if ns < 0 else ''}{seconds}.{fraction:09d}"


def parse_ns(text: str | None) -> int | None:
    """Nanoseconds since the epoch from the property's value, or None."""
    if not text:
        return None
    match = _DECIMAL.match(text)
    if match:
        whole = abs(int(match.group(1))) * NS + int((match.group(2) or "").ljust(9, "0"))
        return -whole if match.group(1).startswith("-") else whole
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    whole = int(when.replace(microsecond=0).timestamp())
    return whole * NS + when.microsecond * 1000


def shown_ns(properties: Mapping[str, str], fallback_seconds: float) -> int:
    """The mtime to show: the property's, else ``fallback_seconds`` (updated_at)."""
    kept = parse_ns(properties.get(PROPERTY))
    return kept if kept is not None else int(fallback_seconds * NS)

"""The one parser of each kind of value people type: booleans, sizes,
Images API versions and comma-separated lists.

The mount's ``-o`` options, the command line's flags, xattr values, the
environment and the v1 headers all read these the same way; each caller only
turns a ``ValueError`` into its own kind of refusal (EINVAL, a usage error).

* Booleans: ``true/false``, ``yes/no``, ``on/off``, ``1/0``, and the
  one-letter ``t/f``, ``y/n`` (python-glanceclient's ``--protected`` takes
  those), in any case. Anything else is an error, except where a lenient
  reading is asked for (:func:`is_true`: a header or variable that is not
  true is false).
* Sizes: a number of bytes with an optional binary unit, ``512``, ``64k``,
  ``256M``, ``2G``, ``1GiB``, ``1.5T``.
* API versions: ``2``, ``v2``, ``2.1``, ``v2.16`` all mean major version
  ``"2"``; only 1 and 2 exist.
* Comma-separated lists (stores, tags, ``--prefer``, Glance's own ``stores``
  field): items stripped, empty ones dropped; ``None`` is no item.
"""
from __future__ import annotations

from collections.abc import Sequence

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TRUE_WORDS = frozenset({"1", "true", "yes", "on", "t", "y"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", "f", "n"})
API_VERSIONS = ("1", "2")


def comma_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def parse_bool(text: str) -> bool:
    """``text`` as a boolean; ValueError when it is neither."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"not true or false: {text!r}")


def is_true(text: object) -> bool:
    """Lenient: True for the true words (or True itself), False for anything else."""
    if isinstance(text, bool):
        return text
    return str(text).strip().lower() in TRUE_WORDS


def parse_size(text: str) -> int:
    """``512``, ``64k``, ``256M``, ``2G``, ``1GiB`` -> bytes."""
    value = text.strip().lower().removesuffix("ib").removesuffix("b")
    units = {"k": KiB, "m": MiB, "g": GiB, "t": 1024 * GiB}
    scale = 1
    if value and value[-1] in units:
        scale = units[value[-1]]
        value = value[:-1]
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 512M or 2G)") from None
    if number < 0:
        raise ValueError(f"a size cannot be negative: {text!r}")
    return int(number * scale)


def major_version(raw: object) -> str:
    """The major Images API version ``raw`` names (``"v2.1"`` -> ``"2"``);
    ValueError unless it is 1 or 2."""
    major = str(raw).strip().lower().lstrip("v").split(".")[0]
    if major not in API_VERSIONS:
        raise ValueError(f"Images API version {raw!r} does not exist; use 1 or 2")
    return major


def check_one_of(name: str, value: str | None, allowed: Sequence[str]) -> None:
    """None, or one of ``allowed``; else python-glanceclient's ValueError text."""
    if value is not None and value not in allowed:
        raise ValueError(f"{name} must be one of the following: {', '.join(allowed)}.")

"""Image metadata as extended attributes.

* ``user.glance.<field>`` for the core fields (``glancefs.api.fields``, the
  one schema; ``name`` is the image's real name, which matters when the
  file name is escaped or carries a duplicate suffix).
* ``user.<key>`` for every other property, e.g. ``user.os_distro``.

Values are the API's values as text: strings as they are, integers in
decimal, booleans ``true``/``false`` (as JSON writes them), ``tags`` as a
JSON list (``["a", "b"]``; JSON because a tag may contain a comma). A field
the server has no value for (JSON null, e.g. ``virtual_size`` before the
data is checked) has no attribute: ``getfattr`` gives ENODATA, as for any
missing name.
"""
from __future__ import annotations

import json
from typing import Any

from glancefs.api import fields
from glancefs.api.service import ImageRecord

CORE_PREFIX = "user.glance."
PROPERTY_PREFIX = "user."
CORE_FIELDS = fields.SHOWN               # user.glance.<field>, in this order
READ_ONLY_FIELDS = fields.READ_ONLY_SHOWN  # set by the server (or an admin): EPERM
XATTR_NAME_MAX = 255
# This project's answer to an image shared with it (glancefs.fs.views, .shared):
# not an image field, so not in the schema; shown where a listing said it.
MEMBER_STATUS = b"user.glance.member_status"


def text_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), ensure_ascii=False)
    return str(value)


def attributes(record: ImageRecord) -> dict[bytes, bytes]:
    """Every extended attribute of the image's file, in a stable order."""
    out: dict[bytes, bytes] = {}
    core = record.core_fields()
    for field in CORE_FIELDS:
        value = core.get(field)
        if value is None:
            continue
        out[(CORE_PREFIX + field).encode()] = text_value(value).encode("utf-8", "surrogatepass")
    if record.member_status:
        out[MEMBER_STATUS] = record.member_status.encode()
    for key in sorted(record.properties):
        name = (PROPERTY_PREFIX + key).encode("utf-8", "surrogatepass")
        if name in out or len(name) > XATTR_NAME_MAX:
            continue
        out[name] = record.properties[key].encode("utf-8", "surrogatepass")
    return out


# What ``cp -a`` (``--preserve=xattr``, ``rsync -X``) copies onto a new file
# while it is being written and the mount skips without an error: the fields
# and the properties Glance sets (``os_glance*``), the name (the new file's
# name is the target's) and the source's member status. The source's hashes
# among them are checked against the target's once it is active
# (glancefs.fs.write, PendingMeta.source_hashes).
SOURCE_HASHES = frozenset({"checksum", "os_hash_algo", "os_hash_value"})


def skipped_when_copied(kind: str, key: str) -> bool:
    """Is ``(kind, key)`` (from :func:`parse_name`) one of the attributes a
    copy skips (see SOURCE_HASHES above)?"""
    return (kind == "member" or (kind == "core" and (key == "name" or key in READ_ONLY_FIELDS))
            or (kind == "property" and fields.reserved(key)))


def parse_name(name: bytes) -> tuple[str, str] | None:
    """``('core', field)``, ``('member', 'status')`` or ``('property', key)``
    for an xattr name, None for names outside ``user.``."""
    if name == MEMBER_STATUS:
        return "member", "status"
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.startswith(CORE_PREFIX) and text[len(CORE_PREFIX):] in CORE_FIELDS:
        return "core", text[len(CORE_PREFIX):]
    if text.startswith(PROPERTY_PREFIX) and len(text) > len(PROPERTY_PREFIX):
        return "property", text[len(PROPERTY_PREFIX):]
    return None

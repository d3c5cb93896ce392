"""The one schema of an image's core fields, which v1, v2, the mount's xattrs
and the command line read.

Each field says who may change it:

* ``server``: Glance sets it; a PATCH of it is refused before it is sent
  (v2's read-only attributes: ids, hashes, sizes, dates, where the data is).
* ``user``: the image's owner changes it (``name``, formats, ``min_*``,
  ``protected``, ``visibility``, ``tags``, ``os_hidden``); ``settable`` lists
  those the mount lets a user change with ``setfattr`` or ``mv``, with the
  type their text is read as.
* ``admin``: only an administrator may (``owner``): the client sends such a
  change, the mount refuses it as a field the server manages.

``shown`` fields are a file's ``user.glance.<field>`` xattrs, in this order;
everything that is not a core field of v2 is a property (``user.<key>``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Field:
    name: str
    type: type
    changed_by: str          # "server", "user" or "admin"
    settable: bool = False   # through the mount (setfattr user.glance.<name>, mv)
    shown: bool = True       # a user.glance.<name> xattr


_FIELDS = (
    Field("id", str, "server"),
    Field("name", str, "user", settable=True),
    Field("status", str, "server"),
    Field("disk_format", str, "user", settable=True),
    Field("container_format", str, "user", settable=True),
    Field("checksum", str, "server"),
    Field("os_hash_algo", str, "server"),
    Field("os_hash_value", str, "server"),
    Field("size", int, "server"),
    Field("virtual_size", int, "server"),
    Field("visibility", str, "user", settable=True),
    Field("protected", bool, "user", settable=True),
    Field("owner", str, "admin"),
    Field("min_disk", int, "user", settable=True),
    Field("min_ram", int, "user", settable=True),
    Field("tags", list, "user", settable=True),
    Field("created_at", str, "server"),
    Field("updated_at", str, "server"),
    Field("stores", str, "server"),
    # v2 core attributes a file does not show as xattrs.
    Field("os_hidden", bool, "user", shown=False),
    Field("file", str, "server", shown=False),
    Field("schema", str, "server", shown=False),
    Field("self", str, "server", shown=False),
    Field("direct_url", str, "server", shown=False),
    Field("locations", list, "server", shown=False),
    Field("os_glance_failed_import", str, "server", shown=False),
    Field("os_glance_importing_to_stores", str, "server", shown=False),
)

FIELDS: Mapping[str, Field] = MappingProxyType({f.name: f for f in _FIELDS})
# Every core field of Images v2; any other key of an image is a property.
CORE: frozenset[str] = frozenset(FIELDS)
# Fields only Glance sets: a change is refused before it is sent.
SERVER_OWNED: frozenset[str] = frozenset(f.name for f in _FIELDS if f.changed_by == "server")
# Fields a user changes through the mount, with the type their text is read as.
SETTABLE: Mapping[str, type] = MappingProxyType(
    {f.name: f.type for f in _FIELDS if f.settable})
# The user.glance.<field> xattrs, in the order getfattr lists them.
SHOWN: tuple[str, ...] = tuple(f.name for f in _FIELDS if f.shown)
# Shown but not settable through the mount (setfattr gives EPERM).
READ_ONLY_SHOWN: frozenset[str] = frozenset(f for f in SHOWN if f not in SETTABLE)

# Glance reserves every property whose name starts with this (os_glance_import_task,
# os_glance_failed_import, ...): only Glance sets them; a PATCH of one is refused (403).
RESERVED_PREFIX = "os_glance"
# The lock an import holds on its image while its task runs: Glance refuses another
# import of the image (409) while it is there, also for a moment after the image is active.
IMPORT_LOCK = "os_glance_import_task"


def reserved(key: str) -> bool:
    """Is ``key`` a name only Glance may set (a server field, or an ``os_glance*``
    property)?"""
    return key in SERVER_OWNED or key.startswith(RESERVED_PREFIX)

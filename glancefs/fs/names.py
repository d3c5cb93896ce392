"""Image names <-> file names.

Glance names are free text (any JSON string, or none at all) and are not
unique; a directory entry is 1..255 bytes without ``/`` or NUL and is never
``.`` or ``..``. These pure functions bridge the two; the rules are the
contract README.rst documents:

Escape (reversible, :func:`escape` / :func:`unescape`)
    ``%`` -> ``%25``, ``/`` -> ``%2F``, NUL -> ``%00``; a name that is exactly
    ``.`` or ``..`` -> ``%2E`` / ``%2E%2E`` (and the names of the mount's
    directories, ``.by-id``, ``.shared``, ``.community``, ``.hidden`` and
    ``.by-tag``, -> ``%2Eby-id`` and so on); no name (None) or an empty name ->
    ``%`` alone (which no other name escapes to, because a literal ``%`` is
    always ``%25``). Characters that are not valid UTF-8 on their own (lone
    surrogates, which JSON can carry) are written as ``%XX`` of their
    surrogatepass bytes. Every other character is shown as it is, so ordinary
    names (spaces, dots, unicode) are untouched. ``unescape(escape(n)) == n``.

Duplicates (:func:`assign_names`)
    Among images whose escaped names are equal, one keeps the bare name: the
    image that already held it in this mount (so a file never changes name
    when another image of the same name appears), else the oldest by
    ``(created_at, id)`` (so a fresh mount shows the same). The others are
    shown as ``<name>~<first 8 characters of the id>``, or with the whole id
    when that is taken too. ``.by-id/<id>`` always works.

Too long
    An escaped name over 255 bytes is cut (on a character boundary) and given
    the whole id: ``<prefix>~<id>``; such a name cannot be typed back, only
    looked up.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

NAME_MAX = 255
RESERVED = ".by-id"   # the directory of every image by id
# The root's directories (glancefs.fs.views): an image of one of these names
# is shown escaped, so the directory keeps its name.
RESERVED_NAMES: frozenset[str] = frozenset({RESERVED, ".shared", ".community", ".hidden",
                                            ".by-tag"})
UNNAMED = b"%"
SUFFIX_SEP = b"~"
SHORT_ID = 8

_ALWAYS = {"%": b"%25", "/": b"%2F", "\0": b"%00"}
_HEX = b"0123456789ABCDEFabcdef"


def escape(name: str | None) -> bytes:
    """The reversible file-name form of an image name (may exceed 255 bytes)."""
    if not name:
        return UNNAMED
    if name == ".":
        return b"%2E"
    if name == "..":
        return b"%2E%2E"
    if name in RESERVED_NAMES:
        return b"%2E" + name[1:].encode()
    out = bytearray()
    for char in name:
        special = _ALWAYS.get(char)
        if special is not None:
            out += special
            continue
        try:
            out += char.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate: keep it reversible but never emit invalid UTF-8.
            out += b"".join(b"%%%02X" % byte for byte in char.encode("utf-8", "surrogatepass"))
    return bytes(out)


def unescape(shown: bytes) -> str | None:
    """The image name a file name stands for (None for the unnamed marker).

    Raises ValueError for bytes that are not UTF-8 after decoding escapes.
    ``%`` not followed by two hex digits is taken literally, so a name typed
    by a user that merely contains ``%`` still means something sensible.
    """
    if shown == UNNAMED:
        return None
    out = bytearray()
    i = 0
    while i < len(shown):
        byte = shown[i]
        if byte == 0x25 and i + 2 < len(shown) and shown[i + 1] in _HEX and shown[i + 2] in _HEX:
            out.append(int(shown[i + 1:i + 3], 16))
            i += 3
            continue
        out.append(byte)
        i += 1
    try:
        return out.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as error:
        raise ValueError(f"file name is not UTF-8: {shown!r}") from error


def is_valid_entry(shown: bytes) -> bool:
    return (0 < len(shown) <= NAME_MAX and b"/" not in shown and b"\0" not in shown
            and shown not in (b".", b"..")
            and shown.decode("utf-8", "replace") not in RESERVED_NAMES)


def _cut(shown: bytes, limit: int) -> bytes:
    """The longest prefix of ``shown`` within ``limit`` bytes that splits neither
    a UTF-8 character nor a ``%XX`` escape."""
    if len(shown) <= limit:
        return shown
    cut = limit
    # Back off over UTF-8 continuation bytes so the prefix stays valid UTF-8.
    while cut > 0 and (shown[cut] & 0xC0) == 0x80:
        cut -= 1
    # Back off over a %XX escape that the cut would split.
    for back in (1, 2):
        if cut - back >= 0 and shown[cut - back] == 0x25:
            cut -= back
            break
    return shown[:cut]


def with_suffix(base: bytes, suffix: str) -> bytes:
    """``base~suffix`` cut so that the whole stays within NAME_MAX bytes."""
    tail = SUFFIX_SEP + suffix.encode("utf-8")
    return _cut(base, NAME_MAX - len(tail)) + tail


def base_name(name: str | None, image_id: str) -> tuple[bytes, bool]:
    """(shown name before de-duplication, whether it is the reversible escape)."""
    shown = escape(name)
    if len(shown) <= NAME_MAX:
        return shown, True
    return with_suffix(shown, image_id), False


@dataclass(frozen=True)
class NameEntry:
    """What :func:`assign_names` needs of an image."""
    id: str
    name: str | None
    created_at: str | None = None


def assign_names(images: Iterable[NameEntry],
                 holders: Mapping[bytes, str] | None = None) -> dict[bytes, str]:
    """Shown name -> image id for every image, unique and valid.

    ``holders`` is the previous result (shown name -> id): an image keeps the
    bare name it held before even if an older image takes the same name.
    """
    previous = holders or {}
    groups: dict[bytes, list[NameEntry]] = {}
    for image in images:
        groups.setdefault(base_name(image.name, image.id)[0], []).append(image)
    result: dict[bytes, str] = {}
    losers: list[tuple[bytes, NameEntry]] = []
    # Bare names first: a literal name always wins over someone's suffix.
    for base, members in groups.items():
        held = previous.get(base)
        members.sort(key=lambda m: (m.created_at or "", m.id))
        winner = next((m for m in members if m.id == held), members[0])
        result[base] = winner.id
        losers.extend((base, m) for m in members if m is not winner)
    losers.sort(key=lambda item: (item[1].created_at or "", item[1].id))
    for base, image in losers:
        for candidate in (with_suffix(base, image.id[:SHORT_ID]), with_suffix(base, image.id)):
            if candidate not in result:
                result[candidate] = image.id
                break
        else:
            # Only reachable when literal names mimic id suffixes; stay unique.
            count = 2
            while (candidate := with_suffix(base, f"{image.id}~{count}")) in result:
                count += 1
            result[candidate] = image.id
    return result

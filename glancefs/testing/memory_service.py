"""An in-memory stand-in for :class:`glancefs.api.service.ImageService`.

What it is for: driving the filesystem (``glancefs.fs.filesystem.GlanceFS``,
the catalog, the read and write paths) in-process, with no server, no
network and no root, so the fs rules can be tested in milliseconds
(``tests/test_fs_fast.py``). It has the methods and properties the fs calls
on its service, with the same signatures, and answers them the way Glance
and glancefs's client do, as far as the fs can tell:

* Records are built by the real ``ImageRecord.from_v2`` / ``from_v1`` from
  raw dicts shaped like the API's, so the fs sees exactly what it would see
  from the real service of that version (``version="2"`` by default; ``"1"``:
  no tags, no ``os_hash_*``, visibility as ``is_public``, no usage, ranged
  reads answered whole, which the client hides but reports through
  ``ranges_ignored``).
* ``create`` makes a queued image (``image_id`` chooses its id; an id in use
  is 409); ``upload`` consumes the data (a ``DataSource`` or any iterable of
  bytes), stores it, sets ``size``, the MD5 ``checksum`` and (v2) the sha512
  ``os_hash_value`` and makes the image active, then checks the checksum
  against what was sent as the real client does (``HashMismatch``). Missing
  disk/container formats are guessed from the data first, as the v2 client
  does. Only a queued image takes data (409 otherwise).
* ``read`` yields ``chunk_size`` chunks of the range asked for (416 past the
  end); a whole read with ``verify`` raises ``HashMismatch`` after the last
  chunk when the stored bytes no longer match the published hash
  (:meth:`MemoryImageService.tamper` changes them).
* Changes follow the real service's rules: only settable fields
  (``glancefs.api.fields.SETTABLE``) may change (403 before anything is
  sent), v1 has no tags (403) and only public/private visibility (400),
  v2 JSON-patch semantics (a property the caller's record has but the
  server lost is a 409 ``replace``; removing a missing one is 409), v1's
  PUT replaces the whole property set with the caller's view. Deleting a
  protected image is 403; anything unknown or deleted is 404.
* ``usage`` publishes the bytes stored and ``quota`` (v2 only); an upload
  that would exceed ``quota`` is 413 with "quota" in the message.

Fault hooks for tests: :meth:`fail_next` (the next call(s) of a method raise
a given error), :meth:`stall_next` (the next call of a method waits until
the test lets it go: a server that never answers), ``down = True`` (every
call raises ``CommunicationError``, as an unreachable server does after the
client's retries), :meth:`corrupt_next_upload` (the server stores other
bytes than it was sent), :meth:`tamper`, and ``calls`` (every call, in
order; :meth:`count`) to assert how many requests an operation cost.
:meth:`add`, :meth:`set_status` and :meth:`remove` change the server as
another client would, without logging a call.

What it does not model: HTTP, retries, deadlines (``within`` is a no-op),
pagination, authentication, ownership and visibility between projects
(every image is visible), members, import, stores and ``virtual_size``,
statuses in between (an upload goes straight from queued to active;
other statuses only through :meth:`set_status`), Glance's format inspection, the v1 rule
that an empty upload leaves the image queued, a size header that disagrees
with the data, and connections that break in the middle of a transfer
(a fault is raised when the call is made, before any byte). Time stamps
come from ``now`` (seconds since the epoch), which every change advances
by one second, so they are deterministic. ``client`` is None: the fs
should not reach past the service (the read path still looks for an HTTP
session there, and finds none).
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from glancefs.api import exceptions as exc
from glancefs.api import fields as schema
from glancefs.api.buffers import BufferPool, Chunk
from glancefs.api.formats import SNIFF_BYTES, guess_formats
from glancefs.api.service import MEMBER_STATUSES, WRITABLE_FIELDS, ImageRecord
from glancefs.api.v2 import DataSource

DEFAULT_CHUNK = 1024 * 1024
DISK_FORMATS = frozenset({"ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi",
                          "iso", "ploop"})
CONTAINER_FORMATS = frozenset({"ami", "ari", "aki", "bare", "ovf", "ova", "docker",
                               "compressed"})
V2_VISIBILITY = frozenset({"public", "private", "shared", "community"})
NAME_MAX = 255
# The HTTP method each call would send (a CommunicationError names it, which
# is how glancefs.fs.errors tells "unreachable" from "broke mid-transfer").
METHODS: Mapping[str, str] = {
    "list_images": "GET", "get": "GET", "create": "POST", "upload": "PUT", "read": "GET",
    "set_property": "PATCH", "remove_property": "PATCH", "set_field": "PATCH",
    "update": "PATCH", "rename": "PATCH", "delete": "DELETE", "usage": "GET",
    "shared_images": "GET", "set_member_status": "PUT",
}
PROJECT = "memory-project"   # the project this service speaks as (the owner of what it creates)


@dataclass
class StoredImage:
    """One image as the fake server holds it (mutable; records are snapshots)."""
    id: str
    name: str | None
    status: str = "queued"
    data: bytes | None = None
    disk_format: str | None = None
    container_format: str | None = None
    checksum: str | None = None
    os_hash_value: str | None = None
    visibility: str = "shared"
    protected: bool = False
    owner: str | None = PROJECT
    os_hidden: bool = False
    members: dict[str, str] = field(default_factory=dict)   # project -> member status
    min_disk: int = 0
    min_ram: int = 0
    tags: list[str] = field(default_factory=list)
    created_at: float = 0.0
    updated_at: float = 0.0
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int | None:
        return None if self.data is None else len(self.data)


@dataclass(frozen=True)
class Call:
    """One request the fake answered (or refused): the service method and the
    image it was about (None for list_images, usage)."""
    method: str
    image_id: str | None = None


def stamp(seconds: float) -> str:
    """A Glance time stamp (whole seconds, UTC, ``Z``)."""
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class MemoryImageService:
    """The ImageService face the fs uses, answered from memory; thread-safe
    (the fs calls it from trio worker threads and upload threads)."""

    def __init__(self, version: str = "2", endpoint: str = "memory://glance/",
                 now: float = 1_700_000_000.0) -> None:
        if version not in ("1", "2"):
            raise exc.UnsupportedVersion(f"Images API version {version!r}")
        self.version = version
        self._endpoint = endpoint
        self.now = now
        self.images: dict[str, StoredImage] = {}
        self.calls: list[Call] = []
        self.down = False
        self.quota: int | None = None        # bytes all images may hold (413 beyond)
        self.usage_published = True          # False: usage() says None (no /v2/info)
        self.retried = 0                     # what ``retries`` reports
        self.ignores_ranges = version == "1"  # v1 servers answer ranged GETs whole
        self._ranges_ignored = False
        self._failures: dict[str, list[BaseException]] = {}
        self._stalls: dict[str, list[threading.Event]] = {}
        self._corrupt_next = False
        self._lock = threading.RLock()

    # -- seeding and inspection (tests only; not logged as calls) -------------------

    def add(self, name: str | None, data: bytes | None = b"", *, status: str | None = None,
            image_id: str | None = None, properties: Mapping[str, str] | None = None,
            created_at: float | None = None, protected: bool = False,
            disk_format: str = "raw", container_format: str = "bare",
            tags: Iterable[str] = (), visibility: str = "shared", min_disk: int = 0,
            min_ram: int = 0, os_hash_value: str | None = None,
            checksum: str | None = None, owner: str = PROJECT, os_hidden: bool = False,
            members: Mapping[str, str] | None = None) -> ImageRecord:
        """An image as if uploaded earlier: active with ``data`` (None: queued,
        no data). ``status`` overrides; ``os_hash_value``/``checksum`` override
        the computed hashes (a server that published wrong ones)."""
        with self._lock:
            when = self._tick() if created_at is None else created_at
            image = StoredImage(
                id=image_id or str(uuid.uuid4()), name=name,
                status=status or ("queued" if data is None else "active"),
                data=data, disk_format=disk_format if data is not None else None,
                container_format=container_format if data is not None else None,
                protected=protected, tags=list(tags), visibility=visibility,
                min_disk=min_disk, min_ram=min_ram, created_at=when, updated_at=when,
                properties=dict(properties or {}), owner=owner, os_hidden=os_hidden,
                members=dict(members or {}))
            if data is not None:
                image.checksum = checksum or hashlib.md5(data).hexdigest()
                image.os_hash_value = os_hash_value or hashlib.sha512(data).hexdigest()
            self.images[image.id] = image
            return self._record(image)

    def stored(self, image_id: str) -> StoredImage:
        """The server's own copy of an image (KeyError when there is none)."""
        with self._lock:
            return self.images[image_id]

    def named(self, name: str | None) -> list[StoredImage]:
        with self._lock:
            return sorted((i for i in self.images.values() if i.name == name),
                          key=lambda i: (i.created_at, i.id))

    def count(self, method: str, image_id: str | None = None) -> int:
        """Calls of ``method`` so far (about ``image_id`` if given)."""
        with self._lock:
            return sum(1 for c in self.calls if c.method == method
                       and (image_id is None or c.image_id == image_id))

    def tamper(self, image_id: str, data: bytes) -> None:
        """Replace an image's bytes behind the published hashes (bit rot)."""
        with self._lock:
            self.images[image_id].data = data

    def set_status(self, image_id: str, status: str) -> None:
        """Change an image's status as the server would on its own (deactivate,
        an import finishing, ...)."""
        with self._lock:
            self.images[image_id].status = status
            self.images[image_id].updated_at = self._tick()

    def remove(self, image_id: str) -> None:
        """Delete an image as another client would."""
        with self._lock:
            del self.images[image_id]

    # -- fault hooks -------------------------------------------------------------------

    def fail_next(self, method: str, error: BaseException, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` (e.g. ``"upload"``) raise ``error``."""
        if method not in METHODS:
            raise ValueError(f"no such service method: {method}")
        with self._lock:
            self._failures.setdefault(method, []).extend([error] * times)

    def stall_next(self, method: str) -> threading.Event:
        """The next call of ``method`` waits (in its thread) until the event
        returned is set, as a server that takes the request and never answers;
        then it goes on as usual. Set the event before the test ends."""
        if method not in METHODS:
            raise ValueError(f"no such service method: {method}")
        release = threading.Event()
        with self._lock:
            self._stalls.setdefault(method, []).append(release)
        return release

    def corrupt_next_upload(self) -> None:
        """The next upload stores other bytes than it was sent (and hashes
        those): the client's checksum check must catch it."""
        with self._lock:
            self._corrupt_next = True

    def _enter(self, method: str, image_id: str | None = None) -> None:
        """Log the call, wait out a planned stall and raise the planned fault,
        if any. Called without holding the lock (a stall must not hold others)."""
        with self._lock:
            self.calls.append(Call(method, image_id))
            stalls = self._stalls.get(method)
            stall = stalls.pop(0) if stalls else None
        if stall is not None:
            stall.wait()
        with self._lock:
            if self.down:
                raise exc.CommunicationError(
                    f"{self._endpoint} is unreachable (connection refused)",
                    method=METHODS[method], url=self._endpoint)
            planned = self._failures.get(method)
            if planned:
                raise planned.pop(0)

    # -- what ImageService offers besides requests ---------------------------------------

    @property
    def retries(self) -> int:
        return self.retried

    @property
    def ranges_ignored(self) -> bool:
        return self._ranges_ignored

    @property
    def serves_ranges(self) -> bool:
        return self.version != "1"

    @contextlib.contextmanager
    def within(self, seconds: float | None, retries: int | None = None) -> Iterator[None]:
        """No deadlines here: every answer is immediate."""
        yield

    @property
    def endpoint(self) -> str:
        return self._endpoint

    # -- records ------------------------------------------------------------------------

    def _tick(self) -> float:
        self.now += 1.0
        return self.now

    def _record(self, image: StoredImage) -> ImageRecord:
        common: dict[str, Any] = {
            "id": image.id, "name": image.name, "status": image.status, "size": image.size,
            "disk_format": image.disk_format, "container_format": image.container_format,
            "checksum": image.checksum, "protected": image.protected, "owner": image.owner,
            "min_disk": image.min_disk, "min_ram": image.min_ram,
            "created_at": stamp(image.created_at), "updated_at": stamp(image.updated_at),
        }
        if self.version == "1":
            return ImageRecord.from_v1({**common, "is_public": image.visibility == "public",
                                        "properties": dict(image.properties)})
        raw = {**image.properties, **common, "visibility": image.visibility,
               "tags": list(image.tags), "virtual_size": None,
               "os_hash_algo": "sha512" if image.os_hash_value else None,
               "os_hash_value": image.os_hash_value}
        return ImageRecord.from_v2(raw)

    def _find(self, image_id: str) -> StoredImage:
        image = self.images.get(image_id)
        if image is None:
            raise exc.HTTPNotFound(f"No image found with ID {image_id}", code=404)
        return image

    # -- requests -----------------------------------------------------------------------

    @property
    def serves_views(self) -> bool:
        return self.version == "2"

    def _listed(self, image: StoredImage, filters: Mapping[str, str]) -> bool:
        """Glance v2's list filters, for this project (not an admin)."""
        ours = image.owner == PROJECT
        status = image.members.get(PROJECT)
        visibility = filters.get("visibility")
        if filters.get("os_hidden", "false") != ("true" if image.os_hidden else "false"):
            return False
        if "tag" in filters and filters["tag"] not in image.tags:
            return False
        if "owner" in filters and filters["owner"] != image.owner:
            return False
        if visibility == "all":
            # What the project may see of every kind (not other projects' private).
            return ours or image.visibility in ("public", "community") or (
                image.visibility == "shared" and status == "accepted")
        if visibility == "shared":
            # Glance: shared images this project is a member of, not its own.
            wanted = filters.get("member_status", "accepted")
            return (image.visibility == "shared" and not ours and status is not None
                    and wanted in ("all", status))
        if visibility is not None:
            return image.visibility == visibility and (ours or visibility in ("public",
                                                                              "community"))
        # The default: ours, public, and shared with us and accepted.
        return ours or image.visibility == "public" or (
            image.visibility == "shared" and status == "accepted")

    def list_images(self, filters: Mapping[str, str] | None = None) -> list[ImageRecord]:
        self._enter("list_images")
        with self._lock:
            # Glance's default order: newest first.
            ordered = sorted(self.images.values(), key=lambda i: (i.created_at, i.id),
                             reverse=True)
            return [self._record(i) for i in ordered if self._listed(i, filters or {})]

    def shared_images(self) -> list[ImageRecord]:
        self._enter("shared_images")
        with self._lock:
            return [replace(self._record(i), member_status=i.members[PROJECT])
                    for i in self.images.values()
                    if self._listed(i, {"visibility": "shared", "member_status": "all"})]

    def set_member_status(self, image_id: str, status: str) -> ImageRecord:
        self._enter("set_member_status", image_id)
        with self._lock:
            if status not in MEMBER_STATUSES:
                raise exc.HTTPBadRequest(f"invalid member status {status!r}", code=400)
            image = self._find(image_id)
            if PROJECT not in image.members:
                raise exc.HTTPNotFound(f"{PROJECT} is not a member of {image_id}", code=404)
            image.members[PROJECT] = status
            return replace(self._record(image), member_status=status)

    def get(self, image_id: str) -> ImageRecord:
        self._enter("get", image_id)
        with self._lock:
            return self._record(self._find(image_id))

    def create(self, name: str | None, disk_format: str | None = None,
               container_format: str | None = None,
               properties: Mapping[str, str] | None = None,
               image_id: str | None = None) -> ImageRecord:
        self._enter("create", image_id)
        with self._lock:
            if image_id is not None and image_id in self.images:
                raise exc.HTTPConflict(f"Image with identifier {image_id} already exists!",
                                       code=409)
            if name is not None and len(name) > NAME_MAX:
                raise exc.HTTPBadRequest(f"name is longer than {NAME_MAX} characters",
                                         code=400)
            self._check_formats(disk_format, container_format)
            props = dict(properties or {})
            for key in props:
                self._check_property_key(key)
            when = self._tick()
            image = StoredImage(id=image_id or str(uuid.uuid4()), name=name,
                                disk_format=disk_format, container_format=container_format,
                                created_at=when, updated_at=when, properties=props)
            self.images[image.id] = image
            return self._record(image)

    def upload(self, image_id: str, data: DataSource | Iterable[bytes], size: int | None = None,
               filename: str | None = None, store: str | None = None) -> ImageRecord:
        source = data if isinstance(data, DataSource) else DataSource(data, size)
        self._enter("upload", image_id)
        with self._lock:
            image = self._find(image_id)
            if image.status != "queued":
                raise exc.HTTPConflict(f"Image status transition from {image.status} to "
                                       "saving is not allowed", code=409)
            if self.version == "2" and (not image.disk_format or not image.container_format):
                # The v2 client patches the formats in before sending data.
                disk, container, _how = guess_formats(source.peek(SNIFF_BYTES),
                                                      filename or image.name)
                image.disk_format = image.disk_format or disk
                image.container_format = image.container_format or container
            image.status = "saving"
        # The data comes from the writer's queue: never read it under the lock.
        try:
            received = b"".join(bytes(chunk) for chunk in source)
        except BaseException:
            with self._lock:
                if image_id in self.images and self.images[image_id].status == "saving":
                    self.images[image_id].status = "queued"
            raise
        with self._lock:
            image = self._find(image_id)
            if self.quota is not None and self._used() + len(received) > self.quota:
                image.status = "queued"
                raise exc.HTTPOverLimit(
                    f"Denying attempt to upload image because it exceeds the quota: "
                    f"the remaining storage quota is {self.quota - self._used()} bytes",
                    code=413)
            stored = received
            if self._corrupt_next:
                self._corrupt_next = False
                stored = bytes([received[0] ^ 0xFF]) + received[1:] if received else b"\0"
            image.data = stored
            image.checksum = hashlib.md5(stored).hexdigest()
            if self.version == "2":
                image.os_hash_value = hashlib.sha512(stored).hexdigest()
            image.status = "active"
            image.updated_at = self._tick()
            record = self._record(image)
        # As the real client does after the upload: the server's checksum must
        # be the MD5 of what was sent.
        source.check(image_id, record.checksum)
        return record

    def import_methods(self) -> tuple[str, ...]:
        """No import workflow here: the mount's upload=auto uploads directly."""
        return ()

    def stores(self) -> tuple[str, ...]:
        return ()

    def set_stores(self, image_id: str, wanted: Iterable[str], timeout: float,
                   poll: float = 0.25) -> ImageRecord:
        """One store only, as the real service answers a server without several."""
        raise exc.HTTPForbidden("this server has no multiple stores (stores-info)", code=403)

    def read(self, image: ImageRecord, offset: int = 0, length: int | None = None,
             verify: bool = True, chunk_size: int | None = None,
             buffers: BufferPool | None = None) -> Iterator[Chunk]:
        self._enter("read", image.id)
        with self._lock:
            stored = self._find(image.id)
            if stored.status == "deactivated":
                raise exc.HTTPForbidden("The requested image has been deactivated",
                                        code=403)
            if stored.status != "active" or stored.data is None:
                raise exc.HTTPConflict(f"image {image.id} is {stored.status}: no data",
                                       code=409)
            data = stored.data
            if offset or (length is not None and length < len(data)):
                if self.ignores_ranges:
                    # The client skips to the offset itself; it only notices.
                    self._ranges_ignored = True
                if data and offset >= len(data):
                    raise exc.HTTPRequestedRangeNotSatisfiable(
                        f"range {offset}- of a {len(data)}-byte image", code=416)
        end = len(data) if length is None else min(len(data), offset + length)
        whole = offset == 0 and end == len(data)
        expected = _expected_hash(image)
        return self._chunks(image.id, data, offset, end, chunk_size or DEFAULT_CHUNK,
                            expected if verify and whole else None, buffers)

    @staticmethod
    def _chunks(image_id: str, data: bytes, offset: int, end: int, chunk_size: int,
                expected: tuple[str, str] | None,
                buffers: BufferPool | None = None) -> Iterator[Chunk]:
        view = memoryview(data)
        for start in range(offset, end, chunk_size):
            piece = view[start:min(end, start + chunk_size)]
            if buffers is not None and len(piece) == buffers.size:
                # Received into a pooled buffer, as the real client does: a buffer
                # written again while still in use would show in what is read.
                buffer = buffers.take()
                buffer[:] = piece
                yield buffer
                del buffer
            else:
                yield bytes(piece)
        if expected is not None:
            algo, digest = expected
            got = hashlib.new(algo, data).hexdigest()
            if got != digest:
                raise exc.HashMismatch(f"image {image_id}: {algo} of the data is {got}, "
                                       f"the server published {digest}")

    def set_property(self, image: ImageRecord, key: str, value: str) -> ImageRecord:
        return self._change("set_property", image, {}, {key: value}, ())

    def remove_property(self, image: ImageRecord, key: str) -> ImageRecord:
        if key not in image.properties:
            # The real service refuses before sending anything.
            raise exc.HTTPNotFound(f"image {image.id} has no property {key!r}", code=404)
        return self._change("remove_property", image, {}, {}, (key,))

    def set_field(self, image: ImageRecord, name: str, value: Any) -> ImageRecord:
        return self._change("set_field", image, {name: value}, {}, ())

    def update(self, image: ImageRecord, fields: Mapping[str, Any] | None = None,
               properties: Mapping[str, str] | None = None,
               removals: Iterable[str] = ()) -> ImageRecord:
        return self._change("update", image, dict(fields or {}), dict(properties or {}),
                            tuple(removals))

    def rename(self, image: ImageRecord, new_name: str) -> ImageRecord:
        return self._change("rename", image, {"name": new_name}, {}, ())

    def delete(self, image_id: str) -> None:
        self._enter("delete", image_id)
        with self._lock:
            image = self._find(image_id)
            if image.protected:
                raise exc.HTTPForbidden(f"Image {image_id} is protected and cannot be deleted.",
                                        code=403)
            del self.images[image_id]

    def usage(self) -> tuple[int, int | None] | None:
        if self.version != "2":
            return None     # v1 has no usage, and the real service asks nothing
        self._enter("usage")
        with self._lock:
            if not self.usage_published:
                return None
            return self._used(), self.quota

    # -- rules ----------------------------------------------------------------------------

    def _used(self) -> int:
        return sum(i.size or 0 for i in self.images.values())

    @staticmethod
    def _check_formats(disk_format: str | None, container_format: str | None) -> None:
        if disk_format is not None and disk_format not in DISK_FORMATS:
            raise exc.HTTPBadRequest(f"Invalid disk format '{disk_format}' for image.",
                                     code=400)
        if container_format is not None and container_format not in CONTAINER_FORMATS:
            raise exc.HTTPBadRequest(f"Invalid container format '{container_format}' for "
                                     "image.", code=400)

    def _check_property_key(self, key: str) -> None:
        if key in schema.CORE and self.version == "2":
            raise exc.HTTPForbidden(f"Attribute '{key}' is read-only.", code=403)
        if key.startswith("os_glance"):
            raise exc.HTTPForbidden(f"Attribute '{key}' is reserved.", code=403)
        if not key or len(key) > NAME_MAX:
            raise exc.HTTPBadRequest(f"property name {key!r} is not allowed", code=400)

    def _check_field_sendable(self, name: str, value: Any) -> None:
        """What the real service refuses before sending anything (403/400)."""
        if name not in WRITABLE_FIELDS:
            raise exc.HTTPForbidden(f"{name} is managed by the server", code=403)
        if self.version == "1":
            if name == "tags":
                raise exc.HTTPForbidden("Images v1 has no tags", code=403)
            if name == "visibility" and value not in ("public", "private"):
                raise exc.HTTPBadRequest(f"v1 visibility is public or private, not {value}",
                                         code=400)

    def _check_field(self, name: str, value: Any) -> None:
        """What Glance refuses of a well-formed request (400)."""
        if name == "visibility" and value not in V2_VISIBILITY:
            raise exc.HTTPBadRequest(f"Invalid visibility value: {value}", code=400)
        if name == "protected" and not isinstance(value, bool):
            raise exc.HTTPBadRequest(f"protected must be a boolean, not {value!r}", code=400)
        if name in ("min_disk", "min_ram") and (not isinstance(value, int) or value < 0):
            raise exc.HTTPBadRequest(f"{name} must be a non-negative integer", code=400)
        if name == "tags" and (not isinstance(value, list)
                               or not all(isinstance(t, str) for t in value)):
            raise exc.HTTPBadRequest("tags must be a list of strings", code=400)
        if name == "name" and value is not None and len(value) > NAME_MAX:
            raise exc.HTTPBadRequest(f"name is longer than {NAME_MAX} characters", code=400)

    def _change(self, method: str, seen: ImageRecord, fields: dict[str, Any],
                properties: dict[str, str], removals: Iterable[str]) -> ImageRecord:
        """One PATCH (v2) or PUT (v1) built from the record the caller saw."""
        for name, value in fields.items():
            self._check_field_sendable(name, value)   # refused before anything is sent
        removals = tuple(removals)
        self._enter(method, seen.id)
        with self._lock:
            image = self._find(seen.id)
            for name, value in fields.items():
                self._check_field(name, value)
                if name in ("disk_format", "container_format"):
                    if image.status != "queued":
                        raise exc.HTTPForbidden(f"Attribute {name} can be only replaced for "
                                                "a queued image.", code=403)
                    self._check_formats(value if name == "disk_format" else None,
                                        value if name == "container_format" else None)
            for key in properties:
                self._check_property_key(key)
            if self.version == "2":
                props = dict(image.properties)
                for key, value in properties.items():
                    if key in seen.properties and key not in props:
                        # A "replace" of what the caller saw, gone on the server.
                        raise exc.HTTPConflict(f"Property {key} does not exist.", code=409)
                    props[key] = value
                for key in removals:
                    if key in seen.properties and key not in properties:
                        if key not in props:
                            raise exc.HTTPConflict(f"Property {key} does not exist.",
                                                   code=409)
                        del props[key]
            else:
                # PUT with purge_props: the caller's view, changed, replaces them all.
                props = {k: v for k, v in seen.properties.items() if k not in set(removals)}
                props.update(properties)
            for name, value in fields.items():
                setattr(image, name, list(value) if name == "tags" else value)
            image.properties = props
            image.updated_at = self._tick()
            return self._record(image)


def _expected_hash(image: ImageRecord) -> tuple[str, str] | None:
    """(algorithm, digest) a whole read is checked against, as the client picks it."""
    if image.os_hash_algo and image.os_hash_value:
        return image.os_hash_algo, image.os_hash_value
    if image.checksum:
        return "md5", image.checksum
    return None

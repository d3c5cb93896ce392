"""One interface over Images v1 and v2 for the filesystem.

The filesystem sees immutable :class:`ImageRecord` values and calls
:class:`ImageService`; it never learns which API version is behind it.
Where v1 lacks something (tags, os_hash_value, usage), the record holds an
empty value and the service says so by raising ``HTTPForbidden`` for
changes v1 cannot make.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from glancefs.api import exceptions as exc
from glancefs.api import fields as schema
from glancefs.api import v1, v2
from glancefs.api.buffers import BufferPool, Chunk
from glancefs.api.download import Expected
from glancefs.api.v2 import DataSource
from glancefs.api.values import comma_list

LOG = logging.getLogger(__name__)

LIST_PAGE_SIZE = 1000
# A member's answer to an image shared with its project (Images v2 image members).
MEMBER_STATUSES: tuple[str, ...] = ("accepted", "pending", "rejected")
# Fields a user may change through the filesystem, with their types.
WRITABLE_FIELDS: Mapping[str, type] = schema.SETTABLE


@dataclass(frozen=True)
class ImageRecord:
    id: str
    name: str | None
    status: str
    size: int | None = None
    disk_format: str | None = None
    container_format: str | None = None
    checksum: str | None = None
    os_hash_algo: str | None = None
    os_hash_value: str | None = None
    virtual_size: int | None = None
    visibility: str | None = None
    protected: bool = False
    owner: str | None = None
    min_disk: int = 0
    min_ram: int = 0
    tags: tuple[str, ...] = ()
    created_at: str | None = None
    updated_at: str | None = None
    stores: str | None = None
    # The stores an import or copy is still writing to, and those it failed in (v2).
    importing_to_stores: str | None = None
    failed_import: str | None = None
    properties: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # This project's member status of an image shared with it, where a listing
    # by member status said so (``shared_images``); None otherwise.
    member_status: str | None = None

    @property
    def created(self) -> float:
        return parse_time(self.created_at)

    @property
    def updated(self) -> float:
        return parse_time(self.updated_at) or self.created

    def core_fields(self) -> dict[str, Any]:
        """The ``user.glance.*`` fields, as the API names them."""
        return {
            "id": self.id, "name": self.name, "status": self.status,
            "disk_format": self.disk_format, "container_format": self.container_format,
            "checksum": self.checksum, "os_hash_algo": self.os_hash_algo,
            "os_hash_value": self.os_hash_value, "size": self.size,
            "virtual_size": self.virtual_size, "visibility": self.visibility,
            "protected": self.protected, "owner": self.owner, "min_disk": self.min_disk,
            "min_ram": self.min_ram, "tags": list(self.tags), "created_at": self.created_at,
            "updated_at": self.updated_at, "stores": self.stores,
        }

    @classmethod
    def from_v2(cls, raw: Mapping[str, Any]) -> ImageRecord:
        props = {k: _text(v) for k, v in raw.items() if k not in schema.CORE and v is not None}
        return cls(
            id=raw["id"], name=raw.get("name"), status=raw.get("status", "unknown"),
            size=raw.get("size"), disk_format=raw.get("disk_format"),
            container_format=raw.get("container_format"), checksum=raw.get("checksum"),
            os_hash_algo=raw.get("os_hash_algo"), os_hash_value=raw.get("os_hash_value"),
            virtual_size=raw.get("virtual_size"), visibility=raw.get("visibility"),
            protected=bool(raw.get("protected")), owner=raw.get("owner"),
            min_disk=raw.get("min_disk") or 0, min_ram=raw.get("min_ram") or 0,
            tags=tuple(raw.get("tags") or ()), created_at=raw.get("created_at"),
            updated_at=raw.get("updated_at"), stores=raw.get("stores"),
            importing_to_stores=raw.get("os_glance_importing_to_stores"),
            failed_import=raw.get("os_glance_failed_import"),
            properties=MappingProxyType(props))

    @classmethod
    def from_v1(cls, raw: Mapping[str, Any]) -> ImageRecord:
        props = {k: _text(v) for k, v in (raw.get("properties") or {}).items()}
        public = raw.get("is_public")
        return cls(
            id=raw["id"], name=raw.get("name"), status=raw.get("status", "unknown"),
            size=raw.get("size"), disk_format=raw.get("disk_format"),
            container_format=raw.get("container_format"), checksum=raw.get("checksum"),
            visibility=None if public is None else ("public" if public else "private"),
            protected=bool(raw.get("protected")), owner=raw.get("owner"),
            min_disk=raw.get("min_disk") or 0, min_ram=raw.get("min_ram") or 0,
            created_at=raw.get("created_at"), updated_at=raw.get("updated_at"),
            properties=MappingProxyType(props))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def parse_time(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


class ImageService:
    """What the filesystem asks of the Images API, for either version."""

    def __init__(self, client: v1.Client | v2.Client) -> None:
        self.client = client
        self.version = client.version

    @property
    def retries(self) -> int:
        """Requests the client sent again and downloads it resumed, so far."""
        return self.client.http.retried

    @staticmethod
    def hash_of(image: ImageRecord) -> tuple[str, str] | None:
        """(algorithm, expected hex digest) a whole read of ``image`` is checked
        against: the client's one rule (``download.Expected.choice``)."""
        return Expected(image.size, image.os_hash_algo, image.os_hash_value,
                        image.checksum).choice()

    @property
    def serves_ranges(self) -> bool:
        """Whether the API answers ranged GETs (Images v1 has no Range)."""
        return self.version != "1"

    @property
    def ranges_ignored(self) -> bool:
        """True once the server answered a ranged GET with the whole image."""
        return self.client.http.range_ignored

    @contextlib.contextmanager
    def within(self, seconds: float | None, retries: int | None = None) -> Iterator[None]:
        """Calls made by this thread inside the block are answered within
        ``seconds`` in all, retries included, or raise ``DeadlineExceeded``;
        ``retries``: retried that many times at most (0: fail fast)."""
        with self.client.http.within(seconds, retries):
            yield

    @property
    def endpoint(self) -> str:
        """The Images endpoint this service talks to (found in the catalog
        with Keystone): what identifies the server, e.g. for the write journal."""
        return self.client.http.endpoint

    def _record(self, raw: Mapping[str, Any]) -> ImageRecord:
        return ImageRecord.from_v2(raw) if self.version == "2" else ImageRecord.from_v1(raw)

    @property
    def serves_views(self) -> bool:
        """Whether the API can list by visibility, member status, os_hidden and
        tag (Images v2; v1 has none of them)."""
        return self.version == "2"

    def list_images(self, filters: Mapping[str, str] | None = None) -> list[ImageRecord]:
        """The images the server lists (its default: what this project may
        use), or those matching ``filters`` (v2 list filters, e.g.
        ``{"visibility": "community"}``, ``{"os_hidden": "true"}``, ``{"tag": t}``)."""
        return [self._record(raw) for raw in
                self.client.images.list(dict(filters or {}), page_size=LIST_PAGE_SIZE)]

    def shared_images(self) -> list[ImageRecord]:
        """Images other projects shared with this one, whatever this project
        answered, each with its ``member_status``: one listing per status,
        because the API tells a member's status only through the filter.
        An admin (who may list every shared image) sees none here."""
        found: dict[str, list[tuple[ImageRecord, str]]] = {}
        for status in MEMBER_STATUSES:
            for record in self.list_images({"visibility": "shared", "member_status": status}):
                found.setdefault(record.id, []).append((record, status))
        # A member has one status per image; Glance lists the project's own
        # shared images (and, to an admin, every shared image) under every
        # status: those are not shared *with* this project.
        return [replace(seen[0][0], member_status=seen[0][1]) for seen in found.values()
                if len(seen) == 1]

    def set_member_status(self, image_id: str, status: str) -> ImageRecord:
        """Accept, reject or leave pending an image shared with this project;
        returns the image with its new ``member_status``. The member is found
        by listing the image's members: to a member, Glance shows only its own
        membership."""
        if status not in MEMBER_STATUSES:
            raise exc.HTTPBadRequest(f"member status is one of {', '.join(MEMBER_STATUSES)}, "
                                     f"not {status!r}", code=400)
        if not isinstance(self.client, v2.Client):
            raise exc.HTTPForbidden("Images v1 has no image members", code=403)
        members = list(self.client.image_members.list(image_id))
        if len(members) != 1:
            raise exc.HTTPForbidden(
                f"image {image_id} has {len(members)} members visible to this project: "
                "only a member that is not its owner answers a share", code=403)
        self.client.image_members.update(image_id, members[0]["member_id"], status)
        return replace(self.get(image_id), member_status=status)

    def get(self, image_id: str) -> ImageRecord:
        return self._record(self.client.images.get(image_id))

    def create(self, name: str | None, disk_format: str | None = None,
               container_format: str | None = None,
               properties: Mapping[str, str] | None = None,
               image_id: str | None = None) -> ImageRecord:
        """A new queued image; ``image_id`` chooses its id (both API versions allow it).

        With ``image_id``, a create that got no answer (a pooled connection that the
        server or a load balancer had closed, a reset, a read timeout) is sent once
        more: the id makes that safe. A repeat of a create that did arrive is refused
        (409), and the image it made is then the one returned (when its name is ours).
        A create past its overall deadline is not repeated."""
        fields: dict[str, Any] = {"name": name, "disk_format": disk_format,
                                  "container_format": container_format, "id": image_id}
        fields = {k: v for k, v in fields.items() if v is not None}

        def send() -> ImageRecord:
            if isinstance(self.client, v2.Client):
                # v2 takes properties as top-level keys, beside the fields.
                return self._record(self.client.images.create(**{**dict(properties or {}),
                                                                **fields}))
            return self._record(self.client.images.create(properties=dict(properties or {}),
                                                          **fields))
        if image_id is None:
            return send()
        try:
            return send()
        except exc.DeadlineExceeded:
            raise
        except exc.CommunicationError as error:
            LOG.info("the create of image %s got no answer (%s); sending it again (the id is "
                     "ours, so a repeat cannot make a second image)", image_id,
                     exc.describe(error))
        try:
            return send()
        except exc.HTTPConflict:
            made = self.get(image_id)
            if made.name != name:
                raise
            LOG.info("image %s: the first create had arrived; using the image it made",
                     image_id)
            return made

    def upload(self, image_id: str, data: DataSource | Iterable[bytes], size: int | None = None,
               filename: str | None = None, store: str | None = None) -> ImageRecord:
        """Send the data into a queued image; returns the active image after
        checking that the server's hashes equal the data sent. ``store``: the
        store it goes to (v2, multiple stores)."""
        if isinstance(self.client, v2.Client):
            self.client.images.upload(image_id, data, image_size=size, filename=filename,
                                      backend=store)
            return self.get(image_id)
        return self._record(self.client.images.update(image_id, data=data, image_size=size))

    # -- the interoperable import workflow (v2 only) -------------------------------------

    def import_methods(self) -> tuple[str, ...]:
        """The import methods the server offers (``/v2/info/import``); none under v1
        or where the server has no import workflow."""
        if not isinstance(self.client, v2.Client):
            return ()
        try:
            info = self.client.info.get_import_info()
        except (exc.HTTPNotFound, exc.HTTPForbidden, exc.HTTPMethodNotAllowed):
            return ()
        return tuple((info.get("import-methods") or {}).get("value") or ())

    def stores(self) -> tuple[str, ...]:
        """The ids of the server's stores (``/v2/info/stores``); none where it has
        no multiple stores."""
        if not isinstance(self.client, v2.Client):
            return ()
        try:
            info = self.client.info.get_stores_info()
        except (exc.HTTPNotFound, exc.HTTPForbidden, exc.HTTPMethodNotAllowed):
            return ()
        return tuple(str(s.get("id")) for s in info.get("stores") or [] if s.get("id"))

    def _v2(self, what: str) -> v2.Client:
        if not isinstance(self.client, v2.Client):
            raise exc.HTTPForbidden(f"Images v1 has no {what}", code=403)
        return self.client

    def stage(self, image_id: str, data: DataSource | Iterable[bytes],
              size: int | None = None) -> None:
        """Send the data into the image's staging area (status ``uploading``)."""
        self._v2("import workflow").images.stage(image_id, data, image_size=size)

    def start_import(self, image_id: str, method: str = "glance-direct",
                     stores: Iterable[str] = (), all_stores: bool = False,
                     allow_failure: bool = True) -> None:
        """Ask the server to import the image (a task it runs on its own):
        ``glance-direct`` takes the staged data, ``copy-image`` copies an
        active image's data to more ``stores``."""
        self._v2("import workflow").images.image_import(
            image_id, method=method, stores=list(stores) or None,
            all_stores=all_stores or None, allow_failure=allow_failure)

    def import_failure(self, image_id: str) -> exc.ImportFailed:
        """Why the image's last import failed: its newest task's message."""
        tasks: list[Any] = []
        try:
            tasks = list(self._v2("import workflow").images.get_associated_image_tasks(
                image_id).get("tasks") or [])
        except exc.ClientException as error:
            LOG.debug("tasks of image %s: %s", image_id, error)
        tasks.sort(key=lambda t: t.get("updated_at") or t.get("created_at") or "", reverse=True)
        failed = [t for t in tasks if t.get("status") == "failure"] or tasks
        if not failed:
            return exc.ImportFailed(f"the import of image {image_id} failed (the server "
                                    "kept no task saying why)")
        task = failed[0]
        message = " ".join(str(task.get("message") or "no message").split())
        return exc.ImportFailed(f"the import of image {image_id} failed: task "
                                f"{task.get('id')} says {message!r}")

    def set_stores(self, image_id: str, wanted: Iterable[str], timeout: float,
                   poll: float = 0.25) -> ImageRecord:
        """Put the active image in exactly the ``wanted`` stores: copy it to the
        new ones (the copy-image import, waited for up to ``timeout`` seconds),
        then delete it from those left out. Raises ImportFailed with the task's
        message when a copy fails; deletes nothing then."""
        wanted = [s for s in dict.fromkeys(wanted) if s]
        if not wanted:
            raise exc.HTTPBadRequest("an image is in one store at least", code=400)
        record = self.get(image_id)
        have = comma_list(record.stores)
        known = self.stores()
        if not known:
            raise exc.HTTPForbidden("this server has no multiple stores (stores-info)",
                                    code=403)
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise exc.HTTPBadRequest(f"no store {unknown[0]!r} on this server "
                                     f"(stores: {', '.join(known) or 'none'})", code=400)
        missing = [s for s in wanted if s not in have]
        if missing:
            deadline = time.monotonic() + timeout
            self._start_copy(image_id, missing, deadline, poll)
            while True:
                record = self.get(image_id)
                now = comma_list(record.stores)
                failed = comma_list(record.failed_import)
                if any(s in failed for s in missing):
                    raise self.import_failure(image_id)
                if all(s in now for s in missing) and not record.importing_to_stores:
                    break
                if time.monotonic() > deadline:
                    raise exc.DeadlineExceeded(f"image {image_id} is not in store(s) "
                                               f"{', '.join(missing)} after {timeout:.0f} s")
                time.sleep(poll)
            have = now
        for store in [s for s in have if s not in wanted]:
            self.delete_from_store(image_id, store)
        return self.get(image_id)

    def _start_copy(self, image_id: str, stores: list[str], deadline: float,
                    poll: float) -> None:
        """Start the copy-image import. The import that made the image active holds
        its lock (``fields.IMPORT_LOCK``) a moment longer, and Glance refuses another
        import (409) meanwhile: a ``setfattr`` right after ``cp`` met it. While the
        image still carries that lock, the start is tried again until ``deadline``.
        The lock can go between Glance's refusal and the look at the image: a
        refusal with no lock left is tried once more at once; a second one is the
        answer."""
        lock_gone_once = False
        while True:
            try:
                self.start_import(image_id, "copy-image", stores=stores, allow_failure=False)
                return
            except exc.HTTPConflict:
                if time.monotonic() > deadline:
                    raise
                if not self.get(image_id).properties.get(schema.IMPORT_LOCK):
                    if lock_gone_once:
                        raise
                    lock_gone_once = True
                    continue
                LOG.debug("image %s: its last import still holds the lock; the copy "
                          "waits for it", image_id)
            time.sleep(poll)

    def delete_from_store(self, image_id: str, store: str) -> None:
        """Remove the image's data from one store; it stays in its others."""
        self._v2("stores").images.delete_from_store(store, image_id)

    def read(self, image: ImageRecord, offset: int = 0, length: int | None = None,
             verify: bool = True, chunk_size: int | None = None,
             buffers: BufferPool | None = None) -> Iterator[Chunk]:
        raw = {"id": image.id, "status": image.status, "size": image.size,
               "checksum": image.checksum, "os_hash_algo": image.os_hash_algo,
               "os_hash_value": image.os_hash_value}
        kwargs: dict[str, Any] = {"chunk_size": chunk_size} if chunk_size else {}
        return self.client.images.data(raw, do_checksum=verify, offset=offset,
                                       length=length, buffers=buffers, **kwargs)

    def set_property(self, image: ImageRecord, key: str, value: str) -> ImageRecord:
        return self._change(image, {key: value}, ())

    def remove_property(self, image: ImageRecord, key: str) -> ImageRecord:
        if key not in image.properties:
            raise exc.HTTPNotFound(f"image {image.id} has no property {key!r}", code=404)
        return self._change(image, {}, (key,))

    def set_field(self, image: ImageRecord, name: str, value: Any) -> ImageRecord:
        return self._change(image, dict([self._field(name, value)]), ())

    def update(self, image: ImageRecord, fields: Mapping[str, Any] | None = None,
               properties: Mapping[str, str] | None = None,
               removals: Iterable[str] = ()) -> ImageRecord:
        """Several writable fields and properties at once, in one PATCH (v2) or
        PUT (v1): what a file written through the mount collected before its
        image existed."""
        changes = dict(self._field(name, value) for name, value in (fields or {}).items())
        changes.update(properties or {})
        return self._change(image, changes, removals)

    def _field(self, name: str, value: Any) -> tuple[str, Any]:
        """(API name, value) of a writable field for this version."""
        if name not in WRITABLE_FIELDS:
            raise exc.HTTPForbidden(f"{name} is managed by the server", code=403)
        if self.version == "1":
            if name == "tags":
                raise exc.HTTPForbidden("Images v1 has no tags", code=403)
            if name == "visibility":
                if value not in ("public", "private"):
                    raise exc.HTTPBadRequest(f"v1 visibility is public or private, not {value}",
                                             code=400)
                return "is_public", value == "public"
        return name, value

    def rename(self, image: ImageRecord, new_name: str) -> ImageRecord:
        return self._change(image, {"name": new_name}, ())

    def _change(self, image: ImageRecord, changes: dict[str, Any],
                removals: Iterable[str]) -> ImageRecord:
        """One PATCH (v2) or PUT (v1), built from the record the caller saw."""
        if isinstance(self.client, v2.Client):
            current = {**image.properties, **{k: v for k, v in image.core_fields().items()
                                               if v is not None}}
            ops = v2.patch_ops(current, changes, removals)
            return self._record(self.client.images.patch(image.id, ops))
        props = {k: v for k, v in image.properties.items() if k not in set(removals)}
        fields = {k: v for k, v in changes.items() if k in v1.UPDATE_FIELDS or k == "is_public"}
        props.update({k: v for k, v in changes.items() if k not in fields})
        return self._record(self.client.images.update(image.id, properties=props,
                                                       purge_props=True, **fields))

    def delete(self, image_id: str) -> None:
        self.client.images.delete(image_id)

    def usage(self) -> tuple[int, int | None] | None:
        """(bytes used, quota or None) where the server publishes them."""
        if not isinstance(self.client, v2.Client):
            return None
        try:
            usage = self.client.info.get_usage().get("usage", {})
        except (exc.HTTPNotFound, exc.HTTPForbidden, exc.HTTPMethodNotAllowed):
            return None
        size = usage.get("image_size_total") or {}
        used = size.get("usage")
        if used is None:
            return None
        limit = size.get("limit")
        return int(used), (int(limit) if isinstance(limit, int) and limit >= 0 else None)

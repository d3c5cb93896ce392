"""The filesystem's view of the image list: names, inodes, freshness.

One ``list_images()`` call (the API client follows the pages) serves every
``readdir``, ``lookup`` and ``getattr`` for ``ttl`` seconds; nothing here
asks the server per entry. A refresh that fails keeps the previous listing
(and logs why) rather than making the whole mount disappear.

Inodes are stable for the life of the mount: an image keeps its inode across
refreshes and renames, and ``name`` and ``.by-id/<id>`` lead to the same
inode (so the kernel's page cache is shared).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from glancefs.api import exceptions as exc
from glancefs.api.service import ImageRecord, ImageService
from glancefs.fs import names
from glancefs.fs.errors import describe

LOG = logging.getLogger("glancefs.fs.catalog")

ROOT_INODE = 1
BY_ID_INODE = 2
BY_ID_NAME = b".by-id"
FIRST_IMAGE_INODE = 3


class Catalog:
    def __init__(self, service: ImageService, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self.ttl = ttl
        self.clock = clock
        self.records: dict[str, ImageRecord] = {}
        self.listed: set[str] = set()            # ids in the last listing
        self.by_name: dict[bytes, str] = {}
        self.name_of: dict[str, bytes] = {}
        self.fetched_at: float | None = None
        self._inode_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._next_inode = FIRST_IMAGE_INODE
        self._lock = trio.Lock()
        self.limiter = trio.CapacityLimiter(4)
        self.on_change: Callable[[list[int]], None] | None = None

    # -- loading -----------------------------------------------------------

    def load(self, records: list[ImageRecord]) -> list[int]:
        """Replace the listing; returns inodes whose data or size changed."""
        changed = []
        for record in records:
            old = self.records.get(record.id)
            if old is not None and (old.size, old.status, old.checksum) != (
                    record.size, record.status, record.checksum):
                changed.append(self.inode(record.id))
            self.records[record.id] = record
        self.listed = {r.id for r in records}
        entries = [names.NameEntry(r.id, r.name, r.created_at) for r in records]
        self.by_name = names.assign_names(entries, self.by_name)
        self.name_of = {image_id: shown for shown, image_id in self.by_name.items()}
        self.fetched_at = self.clock()
        return changed

    def stale(self) -> bool:
        return self.fetched_at is None or self.clock() - self.fetched_at >= self.ttl

    async def refresh(self, force: bool = False) -> None:
        """Re-list when stale; one listing at a time, concurrent callers share it."""
        if not force and not self.stale():
            return
        started = self.clock()
        async with self._lock:
            if self.fetched_at is not None and self.fetched_at >= started and not force:
                return   # someone refreshed while we waited
            try:
                records = await trio.to_thread.run_sync(self.service.list_images,
                                                        limiter=self.limiter)
            except exc.ClientException as error:
                if self.fetched_at is None:
                    raise
                LOG.warning("listing images failed, keeping the previous listing: %s",
                            describe(error))
                self.fetched_at = self.clock()   # do not hammer a failing server
                return
            changed = self.load(records)
            if changed and self.on_change is not None:
                self.on_change(changed)

    # -- inodes -------------------------------------------------------------------

    def inode(self, image_id: str) -> int:
        ino = self._inode_of.get(image_id)
        if ino is None:
            ino = self._next_inode
            self._next_inode += 1
            self._inode_of[image_id] = ino
            self._id_of[ino] = image_id
        return ino

    def image_id(self, inode: int) -> str | None:
        return self._id_of.get(inode)

    def record(self, inode: int) -> ImageRecord | None:
        image_id = self._id_of.get(inode)
        return None if image_id is None else self.records.get(image_id)

    # -- names ----------------------------------------------------------------------

    def lookup(self, shown: bytes) -> ImageRecord | None:
        image_id = self.by_name.get(shown)
        return None if image_id is None else self.records.get(image_id)

    async def lookup_id(self, image_id: str) -> ImageRecord | None:
        """``.by-id/<id>``: from the listing, else one GET (an image shared with us
        or created since the listing)."""
        record = self.records.get(image_id) if image_id in self.listed else None
        if record is not None:
            return record
        try:
            record = await trio.to_thread.run_sync(self.service.get, image_id,
                                                   limiter=self.limiter)
        except exc.HTTPNotFound:
            return None
        except exc.HTTPBadRequest:
            return None  # not an id at all
        self.records[record.id] = record
        return record

    def entries(self) -> list[tuple[bytes, ImageRecord]]:
        return sorted((shown, self.records[i]) for shown, i in self.by_name.items())

    def update(self, record: ImageRecord) -> None:
        """A fresher record of one image (from a GET); keeps names as they are."""
        self.records[record.id] = record

    # -- files written through the mount ---------------------------------------------

    def new_inode(self) -> int:
        """An inode for a file that has no image yet (created through the mount)."""
        ino = self._next_inode
        self._next_inode += 1
        return ino

    def bind(self, inode: int, image_id: str) -> None:
        """``inode`` now stands for ``image_id``: a file written through the mount
        got its image, or a new version of it (the kernel keeps the inode)."""
        old = self._id_of.get(inode)
        if old == image_id:
            return
        if old is not None:
            self._inode_of.pop(old, None)
        previous = self._inode_of.get(image_id)
        if previous is not None and previous != inode:
            self._id_of.pop(previous, None)
        self._inode_of[image_id] = inode
        self._id_of[inode] = image_id

    def add(self, record: ImageRecord, shown: bytes) -> None:
        """An image made or renamed through the mount, listed at once under
        ``shown``, which it then holds across refreshes."""
        self.records[record.id] = record
        self.listed.add(record.id)
        old = self.name_of.get(record.id)
        if old is not None and self.by_name.get(old) == record.id:
            del self.by_name[old]
        self.by_name[shown] = record.id
        self.name_of[record.id] = shown

    def forget(self, image_id: str) -> None:
        """An image deleted through the mount: gone from the listing at once."""
        self.listed.discard(image_id)
        self.records.pop(image_id, None)
        shown = self.name_of.pop(image_id, None)
        if shown is not None and self.by_name.get(shown) == image_id:
            del self.by_name[shown]
        inode = self._inode_of.pop(image_id, None)
        if inode is not None and self._id_of.get(inode) == image_id:
            del self._id_of[inode]

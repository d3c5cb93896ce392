"""The filesystem's view of the image list: names, inodes, freshness.

One ``list_images()`` call (the API client follows the pages) serves every
``readdir``, ``lookup`` and ``getattr`` for ``ttl`` seconds; nothing here
asks the server per entry.

Why refreshing is shaped this way (stale-while-revalidate): a mount lives in
shells, prompts and ``find`` runs, and a server that is slow, stalled or dead
must not hold them. Once the listing is older than ``ttl``, the next caller
starts one refresh in the background and waits for it at most
``FRESH_WAIT`` (a healthy server answers in that time, so callers see fresh
data); every caller after it answers from the last good listing at once. A
refresh ends within ``deadline`` (the mount's ``metadata_timeout``), and one
that fails is logged once, keeps the listing as it was, and is tried again
with back-off (``RETRY_FIRST`` doubling up to the ``ttl``). An entry goes
only when a listing that succeeded no longer has it. A name not in the
listing is not asked for on its own: it waits like any caller (``FRESH_WAIT``)
and is ENOENT until a refresh shows it; ``.by-id/<id>`` is one GET within the
deadline.

Inodes are stable for the life of the mount: an image keeps its inode across
refreshes and renames, and ``name`` and ``.by-id/<id>`` lead to the same
inode (so the kernel's page cache is shared).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import trio

from glancefs.api import exceptions as exc
from glancefs.api.service import ImageRecord, ImageService
from glancefs.fs import names
from glancefs.fs.errors import describe

LOG = logging.getLogger("glancefs.fs.catalog")

T = TypeVar("T")
FRESH_WAIT = 0.3     # seconds a caller waits for a refresh in flight before the old listing
RETRY_FIRST = 1.0    # seconds after a failed refresh before the next try; doubles

ROOT_INODE = 1
BY_ID_INODE = 2
BY_ID_NAME = b".by-id"
FIRST_IMAGE_INODE = 3


class Listing:
    """One listing kept fresh by the rules above (stale-while-revalidate, one
    refresh at a time, back-off after a failure), with its names. The root's
    listing is the :class:`Catalog`; each view (``.shared``, ``.by-tag/<tag>``
    ...) is a :class:`ViewListing` over the catalog's records and inodes. The
    refresh rules live here only, so a view cannot drift from the root."""

    what = "images"   # what the log calls this listing

    def __init__(self, fetch: Callable[[], list[ImageRecord]], ttl: float,
                 clock: Callable[[], float] = time.monotonic,
                 deadline: float = 10.0) -> None:
        self.fetch = fetch
        self.ttl = ttl
        self.clock = clock
        self.deadline = deadline
        self.listed: set[str] = set()            # ids in the last listing
        self.by_name: dict[bytes, str] = {}
        self.name_of: dict[str, bytes] = {}
        self.fetched_at: float | None = None
        self._refreshing: trio.Event | None = None   # set when the refresh in flight ends
        self._refresh_started = 0.0                  # trio time it started
        self._failures = 0                           # failed refreshes in a row
        self._retry_at: float | None = None          # no new refresh before (clock)
        self._last_error: BaseException | None = None

    # What a listing shares with the catalog (the catalog is its own).

    @property
    def nursery(self) -> trio.Nursery | None:
        raise NotImplementedError

    def keep(self, records: list[ImageRecord]) -> list[int]:
        """Store fresher records; returns inodes whose data or size changed."""
        raise NotImplementedError

    def changed(self, inodes: list[int]) -> None:
        raise NotImplementedError

    async def ask(self, fn: Callable[..., T], *args: Any,
                  limiter: trio.CapacityLimiter | None = None) -> T:
        raise NotImplementedError

    # -- loading -----------------------------------------------------------

    def load(self, records: list[ImageRecord]) -> list[int]:
        """Replace the listing; returns inodes whose data or size changed."""
        changed = self.keep(records)
        self.listed = {r.id for r in records}
        entries = [names.NameEntry(r.id, r.name, r.created_at) for r in records]
        self.by_name = names.assign_names(entries, self.by_name)
        self.name_of = {image_id: shown for shown, image_id in self.by_name.items()}
        self.fetched_at = self.clock()
        return changed

    def stale(self) -> bool:
        return self.fetched_at is None or self.clock() - self.fetched_at >= self.ttl

    async def refresh(self, wait: float = FRESH_WAIT) -> None:
        """Make the listing fresh if the server answers within ``wait`` seconds
        (counted from when the refresh in flight started); else return and
        let callers use the last good listing. Raises only when there has
        never been a listing to answer from."""
        first = self.fetched_at is None
        if not first and not self.stale():
            return
        if self._refreshing is None:
            if not first and self._retry_at is not None and self.clock() < self._retry_at:
                return   # the last try failed just now: answer from the listing
            self._refreshing = trio.Event()
            self._refresh_started = trio.current_time()
            if first or self.nursery is None:
                await self._refresh()   # nothing to answer from, or not serving yet
            else:
                self.nursery.start_soon(self._refresh)
        done = self._refreshing
        if done is not None:
            allowed = self.deadline + 2.0 if first else wait
            left = self._refresh_started + allowed - trio.current_time()
            if left > 0:
                with trio.move_on_after(left):
                    await done.wait()
        if first and self.fetched_at is None:
            raise self._last_error or exc.DeadlineExceeded(
                f"no listing within {self.deadline:g} s")

    async def _refresh(self) -> None:
        """One listing, within ``deadline``; the outcome is logged and kept.
        ``_refreshing`` is set by the caller and cleared here."""
        try:
            records = await self.ask(self.fetch)
        except Exception as error:  # noqa: BLE001 - a background task must not end the mount
            self._failed(error)
        else:
            self._loaded(records)
        finally:
            done, self._refreshing = self._refreshing, None
            if done is not None:
                done.set()

    def _failed(self, error: Exception) -> None:
        self._last_error = error
        self._failures += 1
        pause = min(RETRY_FIRST * 2 ** (self._failures - 1), max(RETRY_FIRST, self.ttl))
        self._retry_at = self.clock() + pause
        if self.fetched_at is None:
            return   # the caller raises it
        if self._failures == 1:
            LOG.warning("listing %s failed, answering from the listing of %.0f s ago "
                        "until the server answers: %s", self.what,
                        self.clock() - self.fetched_at, describe(error))
        else:
            LOG.debug("listing %s failed again (%d in a row; next try in %.0f s): %s",
                      self.what, self._failures, pause, describe(error))

    def _loaded(self, records: list[ImageRecord]) -> None:
        if self._failures and self.fetched_at is not None:
            LOG.info("listing %s works again (after %d failed tries)", self.what,
                     self._failures)
        self._failures = 0
        self._retry_at = None
        self._last_error = None
        changed = self.load(records)
        if changed:
            self.changed(changed)

    # -- names ----------------------------------------------------------------------

    def known(self) -> Mapping[str, ImageRecord]:
        """The records by id (the catalog's, shared by every listing)."""
        raise NotImplementedError

    def lookup(self, shown: bytes) -> ImageRecord | None:
        image_id = self.by_name.get(shown)
        return None if image_id is None else self.known().get(image_id)

    def entries(self) -> list[tuple[bytes, ImageRecord]]:
        known = self.known()
        return sorted((shown, known[i]) for shown, i in self.by_name.items() if i in known)

    def drop(self, image_id: str) -> None:
        """An image deleted through the mount: gone from this listing at once."""
        self.listed.discard(image_id)
        shown = self.name_of.pop(image_id, None)
        if shown is not None and self.by_name.get(shown) == image_id:
            del self.by_name[shown]


class Catalog(Listing):
    """The root's listing, and what every listing shares: the records (the
    freshest one of each image, whichever listing brought it) and the inodes
    (an image is one inode wherever it appears)."""

    def __init__(self, service: ImageService, ttl: float,
                 clock: Callable[[], float] = time.monotonic,
                 deadline: float = 10.0) -> None:
        super().__init__(service.list_images, ttl, clock, deadline)
        self.service = service
        self.records: dict[str, ImageRecord] = {}
        self._inode_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._next_inode = FIRST_IMAGE_INODE
        self.limiter = trio.CapacityLimiter(4)
        self.on_change: Callable[[list[int]], None] | None = None
        # Background refreshes run here once the mount serves (start()).
        self._nursery: trio.Nursery | None = None
        self.views: list[ViewListing] = []       # for the link count (nlink)

    @property
    def nursery(self) -> trio.Nursery | None:
        return self._nursery

    def start(self, nursery: trio.Nursery,
              on_change: Callable[[list[int]], None] | None = None) -> None:
        """Refreshes run in the background from now on; ``on_change`` hears of
        the inodes whose size or status a refresh changed."""
        self._nursery = nursery
        if on_change is not None:
            self.on_change = on_change

    def keep(self, records: list[ImageRecord]) -> list[int]:
        changed = []
        for record in records:
            old = self.records.get(record.id)
            if old is not None and (old.size, old.status, old.checksum) != (
                    record.size, record.status, record.checksum):
                changed.append(self.inode(record.id))
            if record.member_status is None and old is not None and old.member_status:
                # Only a listing by member status tells it: other listings keep it.
                record = replace(record, member_status=old.member_status)
            self.records[record.id] = record
        return changed

    def changed(self, inodes: list[int]) -> None:
        if self.on_change is not None:
            self.on_change(inodes)

    def view(self, fetch: Callable[[], list[ImageRecord]], what: str,
             tells_member_status: bool = False) -> ViewListing:
        """A new listing over this catalog's records and inodes (a view)."""
        listing = ViewListing(self, fetch, what, tells_member_status)
        self.views.append(listing)
        return listing

    def links(self, image_id: str) -> int:
        """In how many places the mount knows of the image appears (the root
        and the views listed so far): its link count, so find -samefile,
        du and rsync -H see one file."""
        count = (image_id in self.listed) + sum(image_id in v.listed for v in self.views)
        return max(1, count)

    async def ask(self, fn: Callable[..., T], *args: Any,
                  limiter: trio.CapacityLimiter | None = None) -> T:
        """A metadata request in a worker thread, answered within ``deadline``
        or ``DeadlineExceeded``. The HTTP layer's deadline covers the retries;
        this one also covers what it cannot see (a token request, a full
        connection pool): the caller is answered in time, and the thread ends
        on its own later."""
        def call() -> T:
            with self.service.within(self.deadline):
                return fn(*args)
        with trio.move_on_after(self.deadline + 1.0):
            return await trio.to_thread.run_sync(call, limiter=limiter or self.limiter,
                                                 abandon_on_cancel=True)
        raise exc.DeadlineExceeded(f"no answer within {self.deadline:g} s")

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

    def known(self) -> Mapping[str, ImageRecord]:
        return self.records

    async def lookup_id(self, image_id: str) -> ImageRecord | None:
        """``.by-id/<id>``: from the listing, else one GET (an image shared with us
        or created since the listing)."""
        record = self.records.get(image_id) if image_id in self.listed else None
        if record is not None:
            return record
        try:
            record = await self.ask(self.service.get, image_id)
        except exc.HTTPNotFound:
            return None
        except exc.HTTPBadRequest:
            return None  # not an id at all
        self.records[record.id] = record
        return record

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
        """An image deleted through the mount: gone from every listing at once."""
        for listing in (self, *self.views):
            listing.drop(image_id)
        self.records.pop(image_id, None)
        inode = self._inode_of.pop(image_id, None)
        if inode is not None and self._id_of.get(inode) == image_id:
            del self._id_of[inode]


class ViewListing(Listing):
    """A view's listing (``.shared``, ``.community``, ``.hidden``,
    ``.by-tag/<tag>``): its own request, names and freshness, the catalog's
    records, inodes, deadline and nursery. Nothing is asked until someone
    looks (the first ``refresh``)."""

    def __init__(self, catalog: Catalog, fetch: Callable[[], list[ImageRecord]],
                 what: str, tells_member_status: bool = False) -> None:
        super().__init__(fetch, catalog.ttl, catalog.clock, catalog.deadline)
        self.catalog = catalog
        self.what = what
        # The listing of what is shared with the project: the one that knows
        # member statuses, so an image it no longer lists has none.
        self.tells_member_status = tells_member_status

    def load(self, records: list[ImageRecord]) -> list[int]:
        gone = self.listed - {r.id for r in records}
        changed = super().load(records)
        if self.tells_member_status:
            for image_id in gone:
                record = self.catalog.records.get(image_id)
                if record is not None and record.member_status is not None:
                    self.catalog.records[image_id] = replace(record, member_status=None)
        return changed

    @property
    def nursery(self) -> trio.Nursery | None:
        return self.catalog.nursery

    def keep(self, records: list[ImageRecord]) -> list[int]:
        return self.catalog.keep(records)

    def changed(self, inodes: list[int]) -> None:
        self.catalog.changed(inodes)

    def known(self) -> Mapping[str, ImageRecord]:
        return self.catalog.records

    async def ask(self, fn: Callable[..., T], *args: Any,
                  limiter: trio.CapacityLimiter | None = None) -> T:
        return await self.catalog.ask(fn, *args, limiter=limiter)

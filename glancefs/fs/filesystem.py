"""The filesystem in plain domain terms (borg's split): a tree of nodes
(glancefs.fs.nodes) behind the operations of a filesystem, with no pyfuse3
in sight.

GlanceFS resolves an inode to its node and delegates; it never asks which
kind of file it holds. It keeps what all nodes share: the catalog (the
listing), the read path, the write path, and one table of open files.
glancefs.fs.operations adapts this to pyfuse3; tests and other front ends
can drive it directly. Refusals are :class:`FsError` (or the API's own
exceptions), turned into errno in exactly one place (errors.py).
"""
from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import trio

from glancefs.api import exceptions as exc
from glancefs.api.service import ImageRecord, ImageService
from glancefs.fs import modtime, names, stats, xattrs
from glancefs.fs.cache import DiskCache
from glancefs.fs.catalog import BY_ID_INODE, FRESH_WAIT, ROOT_INODE, Catalog
from glancefs.fs.errors import FsError, describe, refuse
from glancefs.fs.nodes import (
    Attr,
    ByIdDir,
    Directory,
    ImageNode,
    Node,
    OpenFile,
    ReadHandle,
    RootDir,
    WriteHandle,
    WrittenNode,
)
from glancefs.fs.options import MountOptions
from glancefs.fs.reader import ReadConfig, Reader
from glancefs.fs.views import make_views
from glancefs.fs.write import WriteConfig, WritePath, WrittenFile

T = TypeVar("T")
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

LOG = logging.getLogger("glancefs.fs")

CLOSE_DEADLINE = 3.0       # seconds the mount's end gives the server, all requests
NO_QUOTA_FREE = 1 << 50    # "unlimited": what df shows as free without a quota

__all__ = ["Attr", "Face", "GlanceFS", "RENAME_EXCHANGE", "RENAME_NOREPLACE"]


class Face(Protocol):
    """What the pyfuse3 adapter and the mount's life ask of a file system: a
    cloud's tree (GlanceFS) or the trees of several (glancefs.fs.clouds)."""

    options: MountOptions

    def start(self, nursery: trio.Nursery,
              on_change: Callable[[list[int]], None] | None = None) -> None: ...
    def close(self) -> None: ...
    @property
    def image_count(self) -> int: ...
    def subject(self, inode: int) -> ImageRecord | None: ...
    def record_of_handle(self, fh: int) -> ImageRecord | None: ...
    async def getattr(self, inode: int) -> Attr: ...
    async def lookup(self, parent: int, name: bytes) -> Attr: ...
    async def listdir(self, inode: int) -> list[tuple[bytes, Attr]]: ...
    async def set_mtime(self, inode: int, ns: int) -> None: ...
    async def set_size(self, inode: int, size: int, fh: int | None) -> None: ...
    async def open(self, inode: int, flags: int, pid: int = 0) -> tuple[int, bool]: ...
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview: ...
    async def write(self, fh: int, off: int, data: bytes) -> int: ...
    async def flush(self, fh: int) -> None: ...
    async def release(self, fh: int) -> None: ...
    async def getxattr(self, inode: int, name: bytes) -> bytes: ...
    async def listxattr(self, inode: int) -> list[bytes]: ...
    async def setxattr(self, inode: int, name: bytes, value: bytes) -> None: ...
    async def removexattr(self, inode: int, name: bytes) -> None: ...
    async def statfs(self) -> dict[str, int]: ...
    async def create(self, parent: int, shown: bytes, flags: int, pid: int = 0
                     ) -> tuple[int, Attr]: ...
    async def unlink(self, parent: int, shown: bytes) -> None: ...
    async def rename(self, parent_old: int, old: bytes, parent_new: int, new: bytes,
                     flags: int) -> None: ...
    def refuse_write(self, what: str) -> FsError: ...


class GlanceFS:
    """One cloud's tree (a whole mount, or one cloud's folder of a mount of
    several: glancefs.fs.clouds).

    ``label`` names the cloud in a mount of several ("" otherwise): its
    journal and its disk cache are its own."""

    def __init__(self, service: ImageService, options: MountOptions, label: str = "") -> None:
        self.service = service
        self.options = options
        self.label = label
        self.catalog = Catalog(service, options.ttl, deadline=options.metadata_timeout)
        cache_dir = (os.path.join(options.cache_dir, label) if options.cache_dir and label
                     else options.cache_dir)
        disk = (DiskCache(cache_dir, options.cache_size, options.block_size)
                if cache_dir else None)
        self.stats = stats.MountStats()
        self.reader = Reader(service, ReadConfig(
            block_size=options.block_size, prefetch_start=options.prefetch_start,
            prefetch_max=options.prefetch_max, memory=options.memory, verify=options.verify,
            streams=options.streams,
            range_supported=service.serves_ranges, deadline=options.timeout), disk,
            self.stats)
        self._xattrs: dict[str, tuple[ImageRecord, dict[bytes, bytes]]] = {}
        self.writes = WritePath(service, WriteConfig(
            spool_dir=options.spool_dir, spool_size=options.spool_size,
            write_buffer=options.write_buffer, active_timeout=options.upload_timeout,
            upload=options.upload, stores=tuple(options.stores),
            all_stores=options.all_stores, allow_failure=options.allow_failure),
            replace_on_close=options.replace_on_close,
            stats=self.stats)
        self.open_files: dict[int, OpenFile] = {}     # the one table of open files
        # Writers wait for the server (a full queue, a flush): their own threads.
        self.write_limiter = trio.CapacityLimiter(64)
        self._next_fh = 1
        self._usage: tuple[float, tuple[int, int | None] | None] | None = None
        self._usage_refresh: trio.Event | None = None   # set when the refresh in flight ends
        self._usage_asked = 0.0
        self.started_wall = time.time()   # directory times: when mounted
        self.root = RootDir(self, ROOT_INODE)
        self.by_id = ByIdDir(self, BY_ID_INODE)
        self.dirs: dict[int, Directory] = {}          # every directory, by inode
        for directory in (self.root, self.by_id):
            self.add_dir(directory)
        self.views = make_views(self)                  # the root's views, by name
        for view in self.views.values():
            self.add_dir(view)

    def add_dir(self, directory: Directory) -> None:
        """A directory of the tree (a view, a tag's folder) is known by its inode."""
        self.dirs[directory.inode] = directory

    def start(self, nursery: trio.Nursery,
              on_change: Callable[[list[int]], None] | None = None) -> None:
        """Serving starts: background work (listing refreshes, fetches) runs in
        ``nursery``; ``on_change`` hears of inodes whose data changed."""
        self.reader.nursery = nursery
        self.catalog.start(nursery, on_change)
        if on_change is not None:
            # After a hash mismatch the kernel must not keep serving those pages.
            self.reader.on_corrupt = lambda image_id: on_change([self.catalog.inode(image_id)])

    @property
    def image_count(self) -> int:
        return len(self.catalog.listed)

    # -- the tree ------------------------------------------------------------------------

    def node_now(self, inode: int) -> Node | None:
        """The node of ``inode`` from what is known now (no request), or None."""
        directory = self.dirs.get(inode)
        if directory is not None:
            return directory
        file = self._written(inode)
        if file is not None:
            return WrittenNode(self, file)
        record = self.catalog.record(inode)
        return None if record is None else ImageNode(self, record)

    async def node(self, inode: int, fresh: bool = True) -> Node:
        """The node of ``inode``; an image's record from a listing refreshed
        as the ttl says (``fresh``)."""
        if fresh and inode not in self.dirs and self._written(inode) is None:
            await self.catalog.refresh()
        node = self.node_now(inode)
        if node is None:
            raise FsError(errno.ENOENT, f"inode {inode} is not an image")
        return node

    def subject(self, inode: int) -> ImageRecord | None:
        """What a log line about ``inode`` names."""
        node = self.node_now(inode)
        return None if node is None else node.subject()

    # -- metadata ----------------------------------------------------------------------

    async def getattr(self, inode: int) -> Attr:
        return (await self.node(inode)).attr()

    async def lookup(self, parent: int, name: bytes) -> Attr:
        directory = await self.node(parent, fresh=False)
        return (await directory.lookup(name)).attr()

    async def listdir(self, inode: int) -> list[tuple[bytes, Attr]]:
        return await (await self.node(inode, fresh=False)).entries()

    def mtime_ns(self, properties: Mapping[str, str], otherwise: float) -> int:
        """What stat shows as mtime (glancefs.fs.modtime): the time a tool set,
        else ``otherwise`` (updated_at; the last change of a file being written)."""
        if not self.options.modtime:
            return int(otherwise * modtime.NS)
        return modtime.shown_ns(properties, otherwise)

    async def set_mtime(self, inode: int, ns: int) -> None:
        """utimes/utimensat: the time is kept in the image's ``mtime`` property,
        with the upload when the file is being written (one create or update),
        else in one PATCH. Ignored on read-only mounts and with no_modtime."""
        if self.options.ro or not self.options.modtime:
            return
        await (await self.node(inode, fresh=False)).set_mtime(ns)

    async def set_size(self, inode: int, size: int, fh: int | None) -> None:
        """truncate/ftruncate: drafts and files being written change; an active
        image only with replace_on_close (a new version replaces it)."""
        await (await self.node(inode, fresh=False)).set_size(size, fh)

    # -- data ----------------------------------------------------------------------------

    def new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    async def open(self, inode: int, flags: int, pid: int = 0) -> tuple[int, bool]:
        """(file handle, keep the kernel's page cache); ``pid`` opens it."""
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            return await self.open_write(inode, flags, pid), False
        node = await self.node(inode, fresh=False)
        fh = self.new_fh()
        opened, keep = await node.open_read(fh)
        self._add_open(fh, opened, pid)
        return fh, keep

    async def open_write(self, inode: int, flags: int, pid: int = 0) -> int:
        self.check_writable("open for writing")
        node = await self.node(inode, fresh=False)
        fh = self.new_fh()
        self._add_open(fh, await node.open_write(fh, flags), pid)
        return fh

    def _add_open(self, fh: int, opened: OpenFile, pid: int) -> None:
        """Into the table of open files, with the process that opened it (reads_failed)."""
        opened.pid = pid
        self.open_files[fh] = opened

    def _open_file(self, fh: int) -> OpenFile:
        opened = self.open_files.get(fh)
        if opened is None:
            raise FsError(errno.EBADF, f"file handle {fh} is not open")
        return opened

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        opened = self._open_file(fh)
        try:
            return await opened.read(off, size)
        except Exception as error:
            if isinstance(opened, ReadHandle):
                self.reads_failed(opened.pid, error)
            raise

    def pid_of(self, fh: int) -> int:
        opened = self.open_files.get(fh)
        return 0 if opened is None else opened.pid

    def reads_failed(self, pid: int, error: BaseException) -> None:
        """``pid``'s read of an image failed (a cp from a cloud that died
        mid-copy): the files it is writing through the mount are not made into
        images. cp leaves a partial target behind when its source fails; a copy
        whose source was not read in full must not become an image that looks
        complete. Tied by the process that opened both."""
        if not pid:
            return
        for opened in self.open_files.values():
            if isinstance(opened, WriteHandle) and opened.pid == pid and opened.writing:
                opened.file.tainted = (f"its writer (pid {pid}) failed to read from the mount "
                                       f"meanwhile: {describe(error)}")

    async def write(self, fh: int, off: int, data: bytes) -> int:
        opened = self.open_files.get(fh)
        if opened is None:
            raise FsError(errno.EBADF, f"file handle {fh} is not open for writing")
        return await opened.write(off, data)

    async def flush(self, fh: int) -> None:
        opened = self.open_files.get(fh)
        if opened is not None:
            await opened.flush()

    async def release(self, fh: int) -> None:
        opened = self.open_files.pop(fh, None)
        if opened is not None:
            await opened.release()

    def record_of_handle(self, fh: int) -> ImageRecord | None:
        opened = self.open_files.get(fh)
        return None if opened is None else opened.subject()

    # -- extended attributes -------------------------------------------------------------

    def attributes(self, record: ImageRecord) -> dict[bytes, bytes]:
        """The xattrs of a record, built once per record (records are immutable)."""
        cached = self._xattrs.get(record.id)
        if cached is None or cached[0] is not record:
            cached = (record, xattrs.attributes(record))
            self._xattrs[record.id] = cached
        return cached[1]

    async def getxattr(self, inode: int, name: bytes) -> bytes:
        if not name.startswith(xattrs.PROPERTY_PREFIX.encode()):
            # ls -l asks for security.selinux and ACLs of every file: answer at once,
            # and with ENOTSUP (not ENODATA), which ls caches per device (one round
            # trip per listing instead of two per entry). setxattr says the same.
            raise FsError(errno.EOPNOTSUPP, f"only user.* attributes exist here, not {name!r}")
        value = (await (await self.node(inode)).xattrs()).get(name)
        if value is None:
            raise FsError(errno.ENODATA, f"no attribute {name!r}")
        return value

    async def listxattr(self, inode: int) -> list[bytes]:
        return list(await (await self.node(inode)).xattrs())

    async def setxattr(self, inode: int, name: bytes, value: bytes) -> None:
        await self._change_xattr(inode, name, value)

    async def removexattr(self, inode: int, name: bytes) -> None:
        await self._change_xattr(inode, name, None)

    async def _change_xattr(self, inode: int, name: bytes, value: bytes | None) -> None:
        """user.KEY adds, replaces or removes a property, user.glance.FIELD sets a
        field: one PATCH (v2) or PUT (v1) each, from a fresh record."""
        node = await self.node(inode, fresh=False)
        if isinstance(node, Directory):
            raise FsError(errno.EPERM, "directories have no attributes")
        parsed = xattrs.parse_name(name)
        if parsed is None:
            raise FsError(errno.EOPNOTSUPP, f"only user.* attributes exist here, not {name!r}")
        self.check_writable("change attributes")
        await node.change_xattr(*parsed, value)

    # -- the filesystem --------------------------------------------------------------

    async def statfs(self) -> dict[str, int]:
        """df, and umount(8) before it unmounts: answered from the last usage
        known, refreshed as the listing is (stale-while-revalidate)."""
        now = trio.current_time()
        if self._usage_refresh is None and (
                self._usage is None or now - self._usage[0] >= self.options.ttl):
            self._usage_refresh = trio.Event()
            self._usage_asked = now
            nursery = self.catalog.nursery
            if nursery is None:
                await self._refresh_usage()
            else:
                nursery.start_soon(self._refresh_usage)
        if self._usage_refresh is not None:
            with trio.move_on_at(self._usage_asked + FRESH_WAIT):
                await self._usage_refresh.wait()
        usage = self._usage[1] if self._usage is not None else None
        await self.catalog.refresh()
        if usage is None:
            used = sum(self.catalog.records[i].size or 0 for i in self.catalog.listed)
            quota = None
        else:
            used, quota = usage
        frsize = 4096
        used_blocks = (used + frsize - 1) // frsize
        if quota is None:
            total = used_blocks + NO_QUOTA_FREE // frsize
        else:
            total = max(used_blocks, quota // frsize)
        free = total - used_blocks
        files = len(self.catalog.listed)
        return {"f_bsize": self.options.block_size, "f_frsize": frsize, "f_blocks": total,
                "f_bfree": free, "f_bavail": free, "f_files": files + 1_000_000,
                "f_ffree": 1_000_000, "f_favail": 1_000_000, "f_namemax": names.NAME_MAX}

    async def _refresh_usage(self) -> None:
        try:
            usage = await self.catalog.ask(self.service.usage)
        except Exception as error:  # noqa: BLE001 - a background task must not end the mount
            refuse("statfs", error)
            # Tried again after a ttl; what was known stays shown until then.
            usage = self._usage[1] if self._usage is not None else None
        finally:
            done, self._usage_refresh = self._usage_refresh, None
            if done is not None:
                done.set()
        self._usage = (trio.current_time(), usage)

    # -- names: create, remove, rename (in the root) ---------------------------------------

    def _image_name(self, parent: int, shown: bytes, what: str) -> str | None:
        self.check_writable(what)
        if parent != ROOT_INODE:
            raise FsError(errno.EPERM, f"{what}: images live at the top of the mount, "
                          ".by-id and the views only show them")
        if len(shown) > names.NAME_MAX:
            raise FsError(errno.ENAMETOOLONG, f"{what}: a file name has at most "
                          f"{names.NAME_MAX} bytes")
        if not names.is_valid_entry(shown):
            raise FsError(errno.EINVAL, f"{what}: {shown!r} cannot be an image's file name")
        try:
            name = names.unescape(shown)
            # Lone surrogates survive unescape (names read from JSON may hold
            # them) but the server cannot store them in a new name.
            if name is not None:
                name.encode("utf-8")
        except (ValueError, UnicodeEncodeError) as error:
            raise FsError(errno.EINVAL, f"{what}: {shown!r} is not a UTF-8 name: {error}") from None
        return name

    async def _entry(self, shown: bytes) -> Node | None:
        return await self.root.entry(shown)

    async def create(self, parent: int, shown: bytes, flags: int, pid: int = 0
                     ) -> tuple[int, Attr]:
        """A new file: shown at once, its image made when data arrives."""
        name = self._image_name(parent, shown, "create")
        if await self._entry(shown) is not None:
            raise FsError(errno.EEXIST, f"{shown!r} exists")
        fh = self.new_fh()
        file = self.writes.create(self.catalog.new_inode(), name, fh, flags)
        file.shown = shown
        self._add_open(fh, WriteHandle(self, file, fh), pid)
        LOG.info("create %r (image name %r)", shown.decode("utf-8", "replace"), name)
        return fh, WrittenNode(self, file).attr()

    async def unlink(self, parent: int, shown: bytes) -> None:
        self._image_name(parent, shown, "unlink")
        target = await self._entry(shown)
        if target is None:
            raise FsError(errno.ENOENT, f"no image named {shown!r}")
        await target.remove()

    async def rename(self, parent_old: int, old: bytes, parent_new: int, new: bytes,
                     flags: int) -> None:
        """mv renames the image; mv over an existing file replaces it: the
        target is deleted once the rename succeeded."""
        self._image_name(parent_old, old, "rename")
        new_name = self._image_name(parent_new, new, "rename")
        if flags & RENAME_EXCHANGE:
            raise FsError(errno.EINVAL, "rename: exchanging two images is not supported")
        source = await self._entry(old)
        if source is None:
            raise FsError(errno.ENOENT, f"no image named {old!r}")
        if old == new:
            return
        target = await self._entry(new)
        if target is not None:
            if flags & RENAME_NOREPLACE:
                raise FsError(errno.EEXIST, f"{new!r} exists")
            if target.protected:
                raise FsError(errno.EPERM, f"{new!r} is a protected image: it cannot be "
                              "replaced")
        record = await source.rename(new_name, new)
        if record is not None:
            self.catalog.add(record, new)
        if target is not None:
            await target.remove()

    def refuse_write(self, what: str) -> FsError:
        return FsError(errno.EPERM, f"{what}: images are plain files in one directory")

    # -- what the nodes share ------------------------------------------------------------

    async def thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking write-path work (HTTP, the spool, a full upload queue).
        Abandoned when cancelled (the mount ends): the thread finishes alone."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.write_limiter,
                                             abandon_on_cancel=True)

    async def ask(self, fn: Callable[..., T], *args: Any) -> T:
        """A request a metadata change waits on (rm, mv, setfattr): answered
        within ``metadata_timeout``."""
        return await self.catalog.ask(fn, *args, limiter=self.write_limiter)

    def check_writable(self, what: str) -> None:
        if self.options.ro:
            raise FsError(errno.EROFS, f"{what}: the mount is read-only")

    def forget(self, image_id: str) -> None:
        """An image deleted or replaced through the mount: gone from the
        listing and from the caches at once."""
        self.catalog.forget(image_id)
        self.reader.forget_data(image_id)

    def _written(self, inode: int) -> WrittenFile | None:
        file = self.writes.get(inode)
        if file is None or file.unlinked or file.failed is not None:
            return None
        return file

    def visible_written(self) -> list[WrittenFile]:
        return [f for f in list(self.writes.files.values())
                if f.shown and not f.unlinked and f.failed is None]

    def written_by_name(self, shown: bytes) -> WrittenFile | None:
        for file in self.visible_written():
            if file.shown == shown:
                return file
        return None

    def sync_written(self) -> None:
        """Images created by uploads in progress belong to their files' inodes
        (so a listing never shows them twice); closed files past their reopen
        window become plain images."""
        for file in list(self.writes.files.values()):
            image_id = file.image_id
            if image_id and self.catalog.image_id(file.inode) != image_id:
                self.catalog.bind(file.inode, image_id)
        self.writes.expire()

    def if_gone(self, file: WrittenFile) -> None:
        """A new file whose upload failed is gone, with its half-made image."""
        if file.failed is not None:
            image_id = self.catalog.image_id(file.inode)
            if image_id is not None and (file.image is None or file.image.id != image_id):
                self.catalog.forget(image_id)

    async def may_finish(self, file: WrittenFile, fn: Callable[..., ImageRecord | None],
                         *args: Any) -> None:
        """A write-path call that may finish an upload (flush, release, a
        truncate nobody holds open): the finished image takes the file's place."""
        previous = file.image.id if file.image is not None else None
        record = await self.thread(fn, file, *args)
        if record is not None:
            self.uploaded(file, record, previous)

    def uploaded(self, file: WrittenFile, record: ImageRecord, previous: str | None) -> None:
        self.catalog.bind(file.inode, record.id)
        self.catalog.add(record, file.shown or names.escape(record.name))
        if previous is not None and previous != record.id:
            self.forget(previous)       # replaced, and deleted by the upload

    # -- the mount's life ----------------------------------------------------------------

    def start_journal(self) -> None:
        """The write journal (glancefs.fs.write.journal), once the listing proved the
        server answers: what dead mounts of this endpoint left half-made is
        deleted, and what this mount creates is recorded. A read-only mount
        creates nothing and deletes nothing."""
        if self.options.ro or not self.options.journal_dir:
            return
        try:
            endpoint = self.service.endpoint
        except exc.ClientException as error:
            LOG.warning("no write journal: the image endpoint is not known (%s)", error)
            return
        if self.writes.start_journal(self.options.journal_dir, endpoint, tag=self.label):
            # The first listing still shows the leftovers just deleted.
            try:
                self.catalog.load(self.service.list_images())
            except exc.ClientException as error:
                LOG.warning("listing again after deleting leftovers failed: %s", error)

    def close(self) -> None:
        """The mount ends: uploads not finished are given up (and cleaned up).
        Bounded whatever the server does: what cannot be deleted within
        CLOSE_DEADLINE stays in the write journal for the next mount."""
        with self.service.within(CLOSE_DEADLINE):
            self.writes.close()

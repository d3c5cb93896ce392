"""The filesystem in plain domain terms (borg's split): directories, files,
attributes, reads and xattrs of images, with no pyfuse3 in sight.

glancefs.fs.operations adapts this to pyfuse3; tests and other front ends
can drive it directly. Refusals are :class:`FsError` (or the API's own
exceptions), turned into errno in exactly one place (errors.py).
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import time
from dataclasses import dataclass

import trio

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from glancefs.api import exceptions as exc
from glancefs.api.service import ImageRecord, ImageService
from glancefs.api.v2 import CORE_FIELDS as API_CORE_FIELDS
from glancefs.fs import modtime, names, stats, xattrs
from glancefs.fs.cache import DiskCache
from glancefs.fs.catalog import BY_ID_INODE, BY_ID_NAME, FRESH_WAIT, ROOT_INODE, Catalog
from glancefs.fs.drafts import WritePath, WrittenFile, parse_field
from glancefs.fs.errors import FsError, refuse
from glancefs.fs.options import MountOptions
from glancefs.fs.reader import Handle, ReadConfig, Reader
from glancefs.fs.writer import WriteConfig

T = TypeVar("T")
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

LOG = logging.getLogger("glancefs.fs")

# What open() says for an image that is not active (DESIGN.md, Attributes).
STATUS_ERRNO: dict[str, tuple[int, str]] = {
    "queued": (errno.EAGAIN, "has no data yet"),
    "saving": (errno.EAGAIN, "is being uploaded"),
    "uploading": (errno.EAGAIN, "is being uploaded"),
    "importing": (errno.EAGAIN, "is being imported"),
    "deactivated": (errno.EACCES, "is deactivated"),
    "killed": (errno.EIO, "was killed by an upload error"),
    "deleted": (errno.ENOENT, "was deleted"),
    "pending_delete": (errno.ENOENT, "is being deleted"),
}
# Attributes of images that may still change are trusted this long at most.
UNSETTLED_TIMEOUT = 1.0
CLOSE_DEADLINE = 3.0       # seconds the mount's end gives the server, all requests
NO_QUOTA_FREE = 1 << 50    # "unlimited": what df shows as free without a quota


@dataclass
class Attr:
    inode: int
    mode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    nlink: int
    uid: int
    gid: int
    timeout: float


class GlanceFS:
    def __init__(self, service: ImageService, options: MountOptions) -> None:
        self.service = service
        self.options = options
        self.catalog = Catalog(service, options.ttl, deadline=options.metadata_timeout)
        disk = (DiskCache(options.cache_dir, options.cache_size, options.block_size)
                if options.cache_dir else None)
        self.stats = stats.MountStats()
        self.reader = Reader(service, ReadConfig(
            block_size=options.block_size, prefetch_start=options.prefetch_start,
            prefetch_max=options.prefetch_max, memory=options.memory, verify=options.verify,
            streams=options.streams,
            range_supported=service.version != "1", deadline=options.timeout), disk,
            self.stats)
        self.handles: dict[int, Handle] = {}
        self._xattrs: dict[str, tuple[ImageRecord, dict[bytes, bytes]]] = {}
        self.writes = WritePath(service, WriteConfig(
            spool_dir=options.spool_dir, spool_size=options.spool_size,
            write_buffer=options.write_buffer), replace_on_close=options.replace_on_close,
            stats=self.stats)
        self.write_handles: dict[int, WrittenFile] = {}
        # Writers wait for the server (a full queue, a flush): their own threads.
        self.write_limiter = trio.CapacityLimiter(64)
        self._next_fh = 1
        self._usage: tuple[float, tuple[int, int | None] | None] | None = None
        self._usage_refresh: trio.Event | None = None   # set when the refresh in flight ends
        self._usage_asked = 0.0
        self.started_wall = time.time()   # directory times: when mounted

    # -- attributes -------------------------------------------------------------

    def _dir_attr(self, inode: int) -> Attr:
        mode = 0o555 if self.options.ro else 0o755
        when = int(self.started_wall * modtime.NS)
        return Attr(inode, stat.S_IFDIR | (mode & ~self.options.umask), 0, when, when, 2,
                    self.options.uid, self.options.gid, self.options.ttl)

    def file_attr(self, record: ImageRecord) -> Attr:
        settled = record.status == "active"
        writable = (self.options.replace_on_close and settled and not record.protected
                    and not self.options.ro)
        return Attr(
            inode=self.catalog.inode(record.id),
            mode=stat.S_IFREG | ((0o644 if writable else 0o444) & ~self.options.umask),
            size=record.size or 0, mtime_ns=self._mtime_ns(record.properties, record.updated),
            ctime_ns=int(record.created * modtime.NS), nlink=1,
            uid=self.options.uid, gid=self.options.gid,
            timeout=self.options.ttl if settled else min(self.options.ttl, UNSETTLED_TIMEOUT))

    async def getattr(self, inode: int) -> Attr:
        if inode in (ROOT_INODE, BY_ID_INODE):
            return self._dir_attr(inode)
        file = self._written(inode)
        if file is not None:
            return self.written_attr(file)
        await self.catalog.refresh()
        record = self.catalog.record(inode)
        if record is None:
            raise FsError(errno.ENOENT, f"inode {inode} is not an image")
        return self.file_attr(record)

    async def lookup(self, parent: int, name: bytes) -> Attr:
        if parent == ROOT_INODE:
            if name == BY_ID_NAME:
                return self._dir_attr(BY_ID_INODE)
            await self.catalog.refresh()
            self._sync_written()
            file = self._written_by_name(name)
            if file is not None:
                return self.written_attr(file)
            # A name not in the listing is not asked for on its own: the refresh
            # the lookup started (0.3 s) decides. Waiting longer for it would hold
            # every ls of the directory too (the kernel serializes them with lookups).
            record = self.catalog.lookup(name)
        elif parent == BY_ID_INODE:
            await self.catalog.refresh()
            try:
                image_id = name.decode("ascii")
            except UnicodeDecodeError:
                image_id = ""
            record = await self.catalog.lookup_id(image_id) if image_id else None
        else:
            raise FsError(errno.ENOTDIR, f"inode {parent} is not a directory")
        if record is None:
            raise FsError(errno.ENOENT, f"no image named {name!r}")
        return self.file_attr(record)

    async def listdir(self, inode: int) -> list[tuple[bytes, Attr]]:
        if inode not in (ROOT_INODE, BY_ID_INODE):
            raise FsError(errno.ENOTDIR, f"inode {inode} is not a directory")
        await self.catalog.refresh()
        if inode == BY_ID_INODE:
            records = sorted((self.catalog.records[i] for i in self.catalog.listed),
                             key=lambda r: r.id)
            return [(r.id.encode(), self.file_attr(r)) for r in records]
        self._sync_written()
        written = {f.shown: f for f in self._visible_written()}
        ours = {f.inode for f in written.values()}
        out = [(BY_ID_NAME, self._dir_attr(BY_ID_INODE))]
        out.extend((shown, self.file_attr(record)) for shown, record in self.catalog.entries()
                   if shown not in written and self.catalog.inode(record.id) not in ours)
        out.extend((shown, self.written_attr(f)) for shown, f in sorted(written.items()))
        return out

    # -- data ---------------------------------------------------------------------

    async def open(self, inode: int, flags: int) -> tuple[int, bool]:
        """(file handle, keep the kernel's page cache)."""
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            return await self.open_write(inode, flags), False
        file = self._written(inode)
        if file is not None and (file.writing or file.image is None):
            # Data that is not (all) on the server yet: served from the spool.
            fh = self._new_fh()
            self.write_handles[fh] = file
            return fh, False
        record = self.catalog.record(inode)
        if record is None:
            raise FsError(errno.ENOENT, f"inode {inode} is not an image")
        if record.status != "active":
            # The listing may be old: ask the server about this one image.
            try:
                record = await self.catalog.ask(self.service.get, record.id)
            except exc.HTTPNotFound:
                raise FsError(errno.ENOENT, "the image no longer exists") from None
            self.catalog.update(record)
        if record.status != "active":
            number, why = STATUS_ERRNO.get(record.status, (errno.EIO, "is not active"))
            raise FsError(number, f"image status is {record.status!r}: it {why}")
        handle = self.reader.open(record)
        fh = self._new_fh()
        self.handles[fh] = handle
        # A file written through this mount may change again: no page cache kept.
        return fh, file is None

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        file = self.write_handles.get(fh)
        if file is not None and fh not in self.handles:
            try:
                return await self._thread(self.writes.read, file, off, size)
            except FsError as error:
                if error.errno != errno.EAGAIN or file.image is None:
                    raise
                # Its upload finished and no spool is kept: read the image.
                self.handles[fh] = self.reader.open(file.image)
        handle = self.handles.get(fh)
        if handle is None:
            raise FsError(errno.EBADF, f"file handle {fh} is not open")
        return await self.reader.read(handle, off, size)

    def record_of_handle(self, fh: int) -> ImageRecord | None:
        handle = self.handles.get(fh)
        if handle is not None:
            return handle.image.record
        file = self.write_handles.get(fh)
        if file is not None:
            return file.image or self.writes.pending_record(file)
        return None

    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh, None)
        if handle is not None:
            self.reader.release(handle)
        file = self.write_handles.pop(fh, None)
        if file is not None:
            previous = file.image.id if file.image is not None else None
            record = await self._thread(self.writes.release, file, fh)
            if record is not None:
                self._uploaded(file, record, previous)

    # -- extended attributes ----------------------------------------------------------

    async def _record(self, inode: int) -> ImageRecord:
        await self.catalog.refresh()
        record = self.catalog.record(inode)
        if record is None:
            raise FsError(errno.ENOENT if inode not in (ROOT_INODE, BY_ID_INODE)
                          else errno.ENODATA, "no such image")
        return record

    def _attributes(self, record: ImageRecord) -> dict[bytes, bytes]:
        """The xattrs of a record, built once per record (records are immutable)."""
        cached = self._xattrs.get(record.id)
        if cached is None or cached[0] is not record:
            cached = (record, xattrs.attributes(record))
            self._xattrs[record.id] = cached
        return cached[1]

    async def _file_attributes(self, inode: int) -> dict[bytes, bytes]:
        file = self._written(inode)
        if file is not None and (file.image is None or file.writing):
            values = xattrs.attributes(self.writes.pending_record(file))
            if not file.image_id:
                values.pop(b"user.glance.id", None)
            return values
        return self._attributes(await self._record(inode))

    async def getxattr(self, inode: int, name: bytes) -> bytes:
        if inode == ROOT_INODE and name == stats.XATTR_NAME:
            return self.stats.to_json(retries=self.service.retries)
        if inode in (ROOT_INODE, BY_ID_INODE):
            raise FsError(errno.ENODATA, "directories have no attributes")
        values = await self._file_attributes(inode)
        value = values.get(name)
        if value is None:
            raise FsError(errno.ENODATA, f"no attribute {name!r}")
        return value

    async def listxattr(self, inode: int) -> list[bytes]:
        if inode == ROOT_INODE:
            return [stats.XATTR_NAME]
        if inode == BY_ID_INODE:
            return []
        return list(await self._file_attributes(inode))

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

    # -- the write path (glancefs.fs.drafts and glancefs.fs.writer) ---------------------

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking write-path work (HTTP, the spool, a full upload queue).
        Abandoned when cancelled (the mount ends): the thread finishes alone."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self.write_limiter,
                                             abandon_on_cancel=True)

    async def _ask(self, fn: Callable[..., T], *args: Any) -> T:
        """A request a metadata change waits on (rm, mv, setfattr): answered
        within ``metadata_timeout``."""
        return await self.catalog.ask(fn, *args, limiter=self.write_limiter)

    def _written(self, inode: int) -> WrittenFile | None:
        file = self.writes.get(inode)
        if file is None or file.unlinked or file.failed is not None:
            return None
        return file

    def _visible_written(self) -> list[WrittenFile]:
        return [f for f in list(self.writes.files.values())
                if f.shown and not f.unlinked and f.failed is None]

    def _written_by_name(self, shown: bytes) -> WrittenFile | None:
        for file in self._visible_written():
            if file.shown == shown:
                return file
        return None

    def _sync_written(self) -> None:
        """Images created by uploads in progress belong to their files' inodes
        (so a listing never shows them twice); closed files past their reopen
        window become plain images."""
        for file in list(self.writes.files.values()):
            image_id = file.image_id
            if image_id and self.catalog.image_id(file.inode) != image_id:
                self.catalog.bind(file.inode, image_id)
        self.writes.expire()

    def written_attr(self, file: WrittenFile) -> Attr:
        created = file.image.created if file.image is not None else file.mtime
        # While written, the time set is in the pending metadata; once the image
        # holds the last version, the image says.
        kept = file.image.properties if file.image is not None and not file.writing \
            else file.meta.properties
        return Attr(inode=file.inode, mode=stat.S_IFREG | (0o644 & ~self.options.umask),
                    size=file.current_size, mtime_ns=self._mtime_ns(kept, file.mtime),
                    ctime_ns=int(created * modtime.NS), nlink=1,
                    uid=self.options.uid, gid=self.options.gid,
                    timeout=min(self.options.ttl, UNSETTLED_TIMEOUT))

    def _mtime_ns(self, properties: Mapping[str, str], otherwise: float) -> int:
        """What stat shows as mtime (glancefs.fs.modtime): the time a tool set,
        else ``otherwise`` (updated_at; the last change of a file being written)."""
        if not self.options.modtime:
            return int(otherwise * modtime.NS)
        return modtime.shown_ns(properties, otherwise)

    async def set_mtime(self, inode: int, ns: int) -> None:
        """utimes/utimensat: the time is kept in the image's ``mtime`` property,
        with the upload when the file is being written (one create or update),
        else in one PATCH. Ignored on read-only mounts and with no_modtime."""
        if self.options.ro or not self.options.modtime or inode in (ROOT_INODE, BY_ID_INODE):
            return   # directories show when the mount began, whatever is set
        value = modtime.format_ns(ns)
        file = self._written(inode)
        if file is not None:
            if await self._thread(self.writes.set_meta, file, "property", modtime.PROPERTY,
                                  value.encode()):
                return
        record = self.catalog.record(inode)
        if record is None:
            raise FsError(errno.ENOENT, f"inode {inode} is not an image")
        if record.properties.get(modtime.PROPERTY) == value:
            return   # already so: no request (rsync sets every time again)
        record = await self._ask(self.service.get, record.id)
        if record.properties.get(modtime.PROPERTY) != value:
            record = await self._ask(self.service.set_property, record, modtime.PROPERTY,
                                     value)
        self.catalog.update(record)
        if file is not None and file.image is not None and file.image.id == record.id:
            file.image = record

    def subject(self, inode: int) -> ImageRecord | None:
        """What a log line about ``inode`` names."""
        file = self._written(inode)
        if file is not None:
            return file.image or self.writes.pending_record(file)
        return self.catalog.record(inode)

    def _check_writable(self, what: str) -> None:
        if self.options.ro:
            raise FsError(errno.EROFS, f"{what}: the mount is read-only")

    def _image_name(self, parent: int, shown: bytes, what: str) -> str | None:
        self._check_writable(what)
        if parent != ROOT_INODE:
            raise FsError(errno.EPERM, f"{what}: images live at the top of the mount, "
                          ".by-id only shows them")
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

    async def _entry(self, shown: bytes) -> WrittenFile | ImageRecord | None:
        await self.catalog.refresh()
        self._sync_written()
        file = self._written_by_name(shown)
        return file if file is not None else self.catalog.lookup(shown)

    async def create(self, parent: int, shown: bytes, flags: int) -> tuple[int, Attr]:
        """A new file: shown at once, its image made when data arrives."""
        name = self._image_name(parent, shown, "create")
        if await self._entry(shown) is not None:
            raise FsError(errno.EEXIST, f"{shown!r} exists")
        fh = self._new_fh()
        file = self.writes.create(self.catalog.new_inode(), name, fh, flags)
        file.shown = shown
        self.write_handles[fh] = file
        LOG.info("create %r (image name %r)", shown.decode("utf-8", "replace"), name)
        return fh, self.written_attr(file)

    async def open_write(self, inode: int, flags: int) -> int:
        self._check_writable("open for writing")
        record = None
        if self._written(inode) is None:
            record = self.catalog.record(inode)
            if record is None:
                raise FsError(errno.ENOENT, f"inode {inode} is not an image")
            if record.status != "active":
                number, why = STATUS_ERRNO.get(record.status, (errno.EIO, "is not active"))
                raise FsError(number, f"image status is {record.status!r}: it {why}")
        fh = self._new_fh()
        file = await self._thread(self.writes.open, inode, record, fh, flags)
        if not file.shown and record is not None:
            file.shown = self.catalog.name_of.get(record.id) or names.escape(record.name)
        self.write_handles[fh] = file
        return fh

    def _write_file(self, fh: int) -> WrittenFile:
        file = self.write_handles.get(fh)
        if file is None or fh in self.handles:
            raise FsError(errno.EBADF, f"file handle {fh} is not open for writing")
        return file

    async def write(self, fh: int, off: int, data: bytes) -> int:
        file = self._write_file(fh)
        try:
            return await self._thread(self.writes.write, file, fh, off, data)
        except BaseException:
            self._if_gone(file)
            raise

    def _if_gone(self, file: WrittenFile) -> None:
        """A new file whose upload failed is gone, with its half-made image."""
        if file.failed is not None:
            image_id = self.catalog.image_id(file.inode)
            if image_id is not None and (file.image is None or file.image.id != image_id):
                self.catalog.forget(image_id)

    async def flush(self, fh: int) -> None:
        """Where cp learns whether its copy made it: the upload finishes here."""
        file = self.write_handles.get(fh)
        if file is None:
            return
        previous = file.image.id if file.image is not None else None
        try:
            record = await self._thread(self.writes.flush, file, fh)
        except BaseException:
            self._if_gone(file)
            raise
        if record is not None:
            self._uploaded(file, record, previous)

    def _uploaded(self, file: WrittenFile, record: ImageRecord, previous: str | None) -> None:
        self.catalog.bind(file.inode, record.id)
        self.catalog.add(record, file.shown or names.escape(record.name))
        if previous is not None and previous != record.id:
            self.catalog.forget(previous)       # replaced, and deleted by the upload
            self.reader.forget_data(previous)

    async def set_size(self, inode: int, size: int, fh: int | None) -> None:
        """truncate/ftruncate: drafts and files being written change; an active
        image only with replace_on_close (a new version replaces it)."""
        file = self._written(inode)
        if file is None:
            record = self.catalog.record(inode)
            if record is None:
                raise FsError(errno.ENOENT, f"inode {inode} is not an image")
            if (record.size or 0) == size:
                return
            self._check_writable("truncate")
            file = self.writes.adopt(inode, record)
            file.shown = self.catalog.name_of.get(record.id) or names.escape(record.name)
        previous = file.image.id if file.image is not None else None
        handle = fh if fh in self.write_handles and fh not in self.handles else None
        record = await self._thread(self.writes.truncate, file, size, handle)
        if record is not None:
            self._uploaded(file, record, previous)

    async def unlink(self, parent: int, shown: bytes) -> None:
        self._image_name(parent, shown, "unlink")
        target = await self._entry(shown)
        if target is None:
            raise FsError(errno.ENOENT, f"no image named {shown!r}")
        await self._remove(target)

    async def _remove(self, target: WrittenFile | ImageRecord) -> None:
        if isinstance(target, WrittenFile):
            ids = {i for i in (target.image_id,
                               target.image.id if target.image is not None else None) if i}
            await self._thread(self.writes.unlink, target)
        else:
            ids = {target.id}
            await self._ask(self.service.delete, target.id)
        for image_id in ids:
            self.catalog.forget(image_id)
            self.reader.forget_data(image_id)
        LOG.info("deleted %s", ", ".join(sorted(ids)) or "a file that had no image yet")

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
            protected = target.protected if isinstance(target, ImageRecord) else (
                target.image is not None and target.image.protected)
            if protected:
                raise FsError(errno.EPERM, f"{new!r} is a protected image: it cannot be "
                              "replaced")
        if isinstance(source, WrittenFile):
            record = await self._thread(self.writes.rename, source, new_name)
            source.shown = new
        else:
            record = await self._ask(self.service.rename, source, new_name)
        if record is not None:
            self.catalog.add(record, new)
        if target is not None:
            await self._remove(target)

    async def setxattr(self, inode: int, name: bytes, value: bytes) -> None:
        await self._change_xattr(inode, name, value)

    async def removexattr(self, inode: int, name: bytes) -> None:
        await self._change_xattr(inode, name, None)

    async def _change_xattr(self, inode: int, name: bytes, value: bytes | None) -> None:
        """user.KEY adds, replaces or removes a property, user.glance.FIELD sets a
        field: one PATCH (v2) or PUT (v1) each, from a fresh record."""
        if inode in (ROOT_INODE, BY_ID_INODE):
            raise FsError(errno.EPERM, "directories have no attributes")
        parsed = xattrs.parse_name(name)
        if parsed is None:
            raise FsError(errno.EOPNOTSUPP, f"only user.* attributes exist here, not {name!r}")
        self._check_writable("change attributes")
        kind, key = parsed
        if kind == "core" and key == "name":
            raise FsError(errno.EPERM, "user.glance.name: rename the file (mv) instead")
        if kind == "core" and key in xattrs.READ_ONLY_FIELDS:
            raise FsError(errno.EPERM, f"user.glance.{key} is managed by the server")
        if kind == "property" and key in API_CORE_FIELDS:
            raise FsError(errno.EPERM, f"{key!r} is not a property: use user.glance.{key}")
        file = self._written(inode)
        if file is not None and await self._thread(self.writes.set_meta, file, kind, key, value):
            return
        record = self.catalog.record(inode)
        if record is None:
            raise FsError(errno.ENOENT, f"inode {inode} is not an image")
        record = await self._ask(self.service.get, record.id)   # changes from a fresh view
        if kind == "core":
            if value is None:
                raise FsError(errno.EPERM, f"user.glance.{key} cannot be removed")
            record = await self._ask(self.service.set_field, record, key,
                                     parse_field(key, value))
        elif value is None:
            if key not in record.properties:
                raise FsError(errno.ENODATA, f"no property {key!r}")
            record = await self._ask(self.service.remove_property, record, key)
        else:
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise FsError(errno.EINVAL, "property values must be UTF-8") from None
            record = await self._ask(self.service.set_property, record, key, text)
        self.catalog.update(record)
        if file is not None and file.image is not None and file.image.id == record.id:
            file.image = record

    def refuse_write(self, what: str) -> FsError:
        return FsError(errno.EPERM, f"{what}: images are plain files in one directory")

    def start_journal(self) -> None:
        """The write journal (glancefs.fs.journal), once the listing proved the
        server answers: what dead mounts of this endpoint left half-made is
        deleted, and what this mount creates is recorded. A read-only mount
        creates nothing and deletes nothing."""
        if self.options.ro or not self.options.journal_dir:
            return
        http = getattr(self.service.client, "http", None)
        endpoint = getattr(http, "endpoint", None)
        if not endpoint:
            LOG.warning("no write journal: the image endpoint is not known")
            return
        if self.writes.start_journal(self.options.journal_dir, endpoint):
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

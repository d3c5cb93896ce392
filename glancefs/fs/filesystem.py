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

from glancefs.api import exceptions as exc
from glancefs.api.service import ImageRecord, ImageService
from glancefs.fs import names, xattrs
from glancefs.fs.cache import DiskCache
from glancefs.fs.catalog import BY_ID_INODE, BY_ID_NAME, ROOT_INODE, Catalog
from glancefs.fs.errors import FsError, refuse
from glancefs.fs.options import MountOptions
from glancefs.fs.reader import Handle, ReadConfig, Reader

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
NO_QUOTA_FREE = 1 << 50    # "unlimited": what df shows as free without a quota


@dataclass
class Attr:
    inode: int
    mode: int
    size: int
    mtime: float
    ctime: float
    nlink: int
    uid: int
    gid: int
    timeout: float


class GlanceFS:
    def __init__(self, service: ImageService, options: MountOptions) -> None:
        self.service = service
        self.options = options
        self.catalog = Catalog(service, options.ttl)
        disk = (DiskCache(options.cache_dir, options.cache_size, options.block_size)
                if options.cache_dir else None)
        self.reader = Reader(service, ReadConfig(
            block_size=options.block_size, prefetch_start=options.prefetch_start,
            prefetch_max=options.prefetch_max, memory=options.memory, verify=options.verify,
            range_supported=service.version != "1"), disk)
        self.handles: dict[int, Handle] = {}
        self._xattrs: dict[str, tuple[ImageRecord, dict[bytes, bytes]]] = {}
        self._next_fh = 1
        self._usage: tuple[float, tuple[int, int | None] | None] | None = None
        self.started_wall = time.time()   # directory times: when mounted

    # -- attributes -------------------------------------------------------------

    def _dir_attr(self, inode: int) -> Attr:
        mode = 0o555 if self.options.ro else 0o755
        when = self.started_wall
        return Attr(inode, stat.S_IFDIR | (mode & ~self.options.umask), 0, when, when, 2,
                    self.options.uid, self.options.gid, self.options.ttl)

    def file_attr(self, record: ImageRecord) -> Attr:
        settled = record.status == "active"
        return Attr(
            inode=self.catalog.inode(record.id),
            mode=stat.S_IFREG | (0o444 & ~self.options.umask),
            size=record.size or 0, mtime=record.updated, ctime=record.created, nlink=1,
            uid=self.options.uid, gid=self.options.gid,
            timeout=self.options.ttl if settled else min(self.options.ttl, UNSETTLED_TIMEOUT))

    async def getattr(self, inode: int) -> Attr:
        if inode in (ROOT_INODE, BY_ID_INODE):
            return self._dir_attr(inode)
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
        out = [(BY_ID_NAME, self._dir_attr(BY_ID_INODE))]
        out.extend((shown, self.file_attr(record)) for shown, record in self.catalog.entries())
        return out

    # -- data ---------------------------------------------------------------------

    async def open(self, inode: int, flags: int) -> tuple[int, bool]:
        """(file handle, keep the kernel's page cache)."""
        record = self.catalog.record(inode)
        if record is None:
            raise FsError(errno.ENOENT, f"inode {inode} is not an image")
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            if record.status == "active":
                raise FsError(errno.EPERM, "active images cannot be overwritten")
            raise FsError(errno.EROFS, "writing through the mount is not supported yet")
        if record.status != "active":
            # The listing may be old: ask the server about this one image.
            try:
                record = await trio.to_thread.run_sync(self.service.get, record.id,
                                                       limiter=self.catalog.limiter)
            except exc.HTTPNotFound:
                raise FsError(errno.ENOENT, "the image no longer exists") from None
            self.catalog.update(record)
        if record.status != "active":
            number, why = STATUS_ERRNO.get(record.status, (errno.EIO, "is not active"))
            raise FsError(number, f"image status is {record.status!r}: it {why}")
        handle = self.reader.open(record)
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = handle
        return fh, True

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        handle = self.handles.get(fh)
        if handle is None:
            raise FsError(errno.EBADF, f"file handle {fh} is not open")
        return await self.reader.read(handle, off, size)

    def record_of_handle(self, fh: int) -> ImageRecord | None:
        handle = self.handles.get(fh)
        return None if handle is None else handle.image.record

    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh, None)
        if handle is not None:
            self.reader.release(handle)

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

    async def getxattr(self, inode: int, name: bytes) -> bytes:
        if inode in (ROOT_INODE, BY_ID_INODE):
            raise FsError(errno.ENODATA, "directories have no attributes")
        values = self._attributes(await self._record(inode))
        value = values.get(name)
        if value is None:
            raise FsError(errno.ENODATA, f"no attribute {name!r}")
        return value

    async def listxattr(self, inode: int) -> list[bytes]:
        if inode in (ROOT_INODE, BY_ID_INODE):
            return []
        return list(self._attributes(await self._record(inode)))

    # -- the filesystem --------------------------------------------------------------

    async def statfs(self) -> dict[str, int]:
        now = trio.current_time()
        if self._usage is None or now - self._usage[0] >= self.options.ttl:
            try:
                usage = await trio.to_thread.run_sync(self.service.usage,
                                                      limiter=self.catalog.limiter)
            except exc.ClientException as error:
                refuse("statfs", error)
                usage = None
            self._usage = (now, usage)
        usage = self._usage[1]
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

    # -- not yet: the write path (its own issue) ----------------------------------------

    def refuse_write(self, what: str) -> FsError:
        if self.options.ro:
            return FsError(errno.EROFS, f"{what}: the mount is read-only")
        return FsError(errno.EROFS, f"{what} through the mount is not supported yet")


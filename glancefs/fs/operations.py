"""The pyfuse3 adapter: thin methods over :class:`GlanceFS`.

This is the only module that knows pyfuse3 and the only place that raises
``pyfuse3.FUSEError``: every other error is turned into an errno by
glancefs.fs.errors (one table) with one log line saying why.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pyfuse3
import trio

from glancefs.fs.errors import refuse
from glancefs.fs.filesystem import Attr, Face

LOG = logging.getLogger("glancefs.fs.operations")



@contextlib.contextmanager
def fuse_errors(operation: str, subject: Any = None) -> Iterator[None]:
    """Turn any error inside into FUSEError(errno) plus a log line.

    ``subject`` names what the line is about; a callable is asked only when
    something failed (reads, writes and xattr probes come by the thousand, and a
    file being written has no record to name it until one is built)."""
    try:
        yield
    except pyfuse3.FUSEError:
        raise
    except Exception as error:  # noqa: BLE001 - every error becomes an errno here
        about = subject() if callable(subject) else subject
        raise pyfuse3.FUSEError(refuse(operation, error, about)) from None


def entry(attr: Attr) -> pyfuse3.EntryAttributes:
    out = pyfuse3.EntryAttributes()
    out.st_ino = attr.inode
    out.generation = 0
    out.entry_timeout = attr.timeout
    out.attr_timeout = attr.timeout
    out.st_mode = attr.mode
    out.st_nlink = attr.nlink
    out.st_uid = attr.uid
    out.st_gid = attr.gid
    out.st_rdev = 0
    out.st_size = attr.size
    out.st_blksize = 1 << 20
    out.st_blocks = (attr.size + 511) // 512
    out.st_atime_ns = attr.mtime_ns
    out.st_mtime_ns = attr.mtime_ns
    out.st_ctime_ns = attr.ctime_ns
    return out


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, fs: Face,
                 after_init: Callable[[], Awaitable[None]] | None = None) -> None:
        """``after_init``: run once the kernel has the reply to FUSE INIT."""
        super().__init__()
        self.fs = fs
        self._after_init = after_init
        self._dirs: dict[int, list[tuple[bytes, Attr]]] = {}
        self._next_dir = 1
        self.nursery: trio.Nursery | None = None

    def start(self, nursery: trio.Nursery) -> None:
        """Serving starts: tasks of the adapter (invalidations) run here."""
        self.nursery = nursery

    def init(self) -> None:
        # pyfuse3 sends the INIT reply as soon as this returns; a task started
        # here runs after it, before the kernel can have sent anything else.
        if self._after_init is not None and self.nursery is not None:
            self.nursery.start_soon(self._after_init)

    def invalidate(self, inodes: list[int]) -> None:
        """Size or status changed in a new listing, or cached pages failed their
        hash: the kernel must ask again."""
        for inode in inodes:
            if self.nursery is not None:
                self.nursery.start_soon(self._invalidate, inode)

    @staticmethod
    async def _invalidate(inode: int) -> None:
        # Not from inside the handler: the kernel may hold the inode's lock.
        with contextlib.suppress(OSError):
            await trio.to_thread.run_sync(pyfuse3.invalidate_inode, inode)

    # -- metadata --------------------------------------------------------------

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None
                     ) -> pyfuse3.EntryAttributes:
        with fuse_errors("lookup", name):
            return entry(await self.fs.lookup(parent_inode, name))

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        with fuse_errors("getattr", lambda: self.fs.subject(inode)):
            return entry(await self.fs.getattr(inode))

    async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any
                      ) -> pyfuse3.EntryAttributes:
        with fuse_errors("setattr", self.fs.subject(inode)):
            if fields.update_size:
                await self.fs.set_size(inode, attr.st_size, fh)
            if fields.update_mtime:
                await self.fs.set_mtime(inode, attr.st_mtime_ns)
            # chmod/chown (and atime) succeed without effect (docs/design.rst): cp -p works.
            return entry(await self.fs.getattr(inode))

    async def opendir(self, inode: int, ctx: Any) -> int:
        with fuse_errors("opendir"):
            listing = await self.fs.listdir(inode)
            fh = self._next_dir
            self._next_dir += 1
            self._dirs[fh] = listing
            return fh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self._dirs.get(fh, [])
        for index in range(start_id, len(listing)):
            name, attr = listing[index]
            if not pyfuse3.readdir_reply(token, name, entry(attr), index + 1):
                break

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        with fuse_errors("statfs"):
            values = await self.fs.statfs()
            out = pyfuse3.StatvfsData()
            for key, value in values.items():
                setattr(out, key, value)
            return out

    # -- data --------------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        with fuse_errors("open", self.fs.subject(inode)):
            fh, keep = await self.fs.open(inode, flags, getattr(ctx, "pid", 0))
            # Active data never changes: keep the page cache across opens.
            return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        with fuse_errors("read", lambda: self.fs.record_of_handle(fh)):
            # pyfuse3 sends any buffer (a memoryview saves a copy of each block)
            return await self.fs.read(fh, off, size)  # type: ignore[return-value]

    async def release(self, fh: int) -> None:
        with fuse_errors("release", self.fs.record_of_handle(fh)):
            await self.fs.release(fh)

    # -- extended attributes --------------------------------------------------------

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        with fuse_errors("getxattr", lambda: self.fs.subject(inode)):
            return await self.fs.getxattr(inode, name)

    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        with fuse_errors("listxattr", lambda: self.fs.subject(inode)):
            return await self.fs.listxattr(inode)

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        with fuse_errors("setxattr", self.fs.subject(inode)):
            await self.fs.setxattr(inode, name, value)

    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        with fuse_errors("removexattr", self.fs.subject(inode)):
            await self.fs.removexattr(inode, name)

    # -- writing ----------------------------------------------------------------------

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        with fuse_errors("create", name):
            fh, attr = await self.fs.create(parent_inode, name, flags, getattr(ctx, "pid", 0))
            return pyfuse3.FileInfo(fh=fh, keep_cache=False), entry(attr)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        with fuse_errors("write", lambda: self.fs.record_of_handle(fh)):
            return await self.fs.write(fh, off, buf)

    async def flush(self, fh: int) -> None:
        # close(): the upload finishes here, so cp sees its errors.
        with fuse_errors("flush", self.fs.record_of_handle(fh)):
            await self.fs.flush(fh)

    async def fsync(self, fh: int, datasync: bool) -> None:
        return None   # the data is in the spool or on its way; close() is the commit

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        with fuse_errors("unlink", name):
            await self.fs.unlink(parent_inode, name)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any) -> None:
        with fuse_errors("rename", name_old):
            await self.fs.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any
                    ) -> pyfuse3.EntryAttributes:
        with fuse_errors("mkdir", name):
            raise self.fs.refuse_write("mkdir")

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any
                      ) -> pyfuse3.EntryAttributes:
        with fuse_errors("symlink", name):
            raise self.fs.refuse_write("symlink")

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any
                   ) -> pyfuse3.EntryAttributes:
        with fuse_errors("link", new_name):
            raise self.fs.refuse_write("hard link")

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any
                    ) -> pyfuse3.EntryAttributes:
        with fuse_errors("mknod", name):
            raise self.fs.refuse_write("mknod")

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        with fuse_errors("rmdir", name):
            raise self.fs.refuse_write("rmdir")

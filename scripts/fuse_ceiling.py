"""A FUSE file system with one file served from memory: what FUSE costs on this machine.

``scripts/bench`` reads ``MOUNTPOINT/data`` with ``cat`` as it reads an image through
glancefs, so the difference between the two is the work glancefs does (HTTP, Glance, the
hash) and not the kernel's FUSE round trips and page cache, which any FUSE file system pays.
Every read is answered from one 1 MiB block, as glancefs answers a read from its block cache
(a slice, or the pieces joined when the read spans blocks, as the kernel's 1 MiB read-ahead
requests after the first 512 KiB do), through the same pyfuse3 and trio and with the same
kernel read-ahead.

Usage: ``python scripts/fuse_ceiling.py MOUNTPOINT SIZE_BYTES [READAHEAD_BYTES]``; it serves
in the foreground until unmounted (``fusermount3 -u MOUNTPOINT``).
"""
from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path

import pyfuse3
import trio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from glancefs.fs.options import MountOptions  # noqa: E402
from glancefs.fs.session import set_readahead  # noqa: E402

BLOCK = 1024 * 1024
FILE_INODE = pyfuse3.ROOT_INODE + 1


class MemoryFile(pyfuse3.Operations):
    def __init__(self, mountpoint: str, size: int, readahead: int) -> None:
        super().__init__()
        self.mountpoint = mountpoint
        self.size = size
        self.readahead = readahead
        self.block = os.urandom(BLOCK)
        self.nursery: trio.Nursery | None = None

    def init(self) -> None:
        # As glancefs does: the kernel sets read-ahead from the INIT reply, sent after this.
        async def apply() -> None:
            set_readahead(self.mountpoint, self.readahead)
        assert self.nursery is not None
        self.nursery.start_soon(apply)

    async def getattr(self, inode: int, ctx: object = None) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        if inode == pyfuse3.ROOT_INODE:
            entry.st_mode, entry.st_size = stat.S_IFDIR | 0o755, 0
        elif inode == FILE_INODE:
            entry.st_mode, entry.st_size = stat.S_IFREG | 0o444, self.size
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        entry.st_ino = inode
        entry.attr_timeout = entry.entry_timeout = 300
        return entry

    async def lookup(self, parent_inode: int, name: bytes, ctx: object = None
                     ) -> pyfuse3.EntryAttributes:
        if parent_inode == pyfuse3.ROOT_INODE and name == b"data":
            return await self.getattr(FILE_INODE)
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def open(self, inode: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
        info = pyfuse3.FileInfo(fh=inode)
        info.keep_cache = True
        return info

    # pyfuse3 sends any buffer; its stubs say bytes, and a memoryview saves a copy.
    async def read(self, fh: int, off: int, size: int  # type: ignore[override]
                   ) -> memoryview | bytes:
        if off >= self.size:
            return b""
        size = min(size, self.size - off)
        start = off % BLOCK
        if start + size <= BLOCK:
            return memoryview(self.block)[start:start + size]
        # Across blocks: joined, as glancefs joins the blocks of such a read.
        parts = [memoryview(self.block)[start:]]
        left = size - (BLOCK - start)
        while left > 0:
            parts.append(memoryview(self.block)[:min(left, BLOCK)])
            left -= BLOCK
        return b"".join(parts)


async def serve(ops: MemoryFile) -> None:
    async with trio.open_nursery() as nursery:
        ops.nursery = nursery
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main() -> int:
    mountpoint, size = sys.argv[1], int(sys.argv[2])
    readahead = int(sys.argv[3]) if len(sys.argv) > 3 else MountOptions().readahead
    ops = MemoryFile(mountpoint, size, readahead)
    pyfuse3.init(ops, mountpoint, {"fsname=fuse-ceiling", "ro", "noatime"})
    try:
        trio.run(serve, ops)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

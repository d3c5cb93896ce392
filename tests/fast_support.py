"""Helpers of the fast tier: GlanceFS driven in-process against
:class:`~glancefs.testing.memory_service.MemoryImageService`, under trio,
with fake clocks. No root, no server, no sleeps.

:func:`run_mount` builds the filesystem as ``session.prepare`` does (first
listing, journal) and serves it as ``session._main`` does (the reader's and
the catalog's nursery), runs one test body inside, then cancels. Two
clocks are faked: the catalog's and the write path's ``clock`` (the TTL,
refresh back-off, the reopen window) is a :class:`FakeClock`, and trio's
time (the 0.3 s a caller waits for a refresh, statfs's usage TTL, every
deadline) is a ``trio.testing.MockClock`` that only moves when a test says
so (:meth:`Mount.advance`), or when everything has been stuck for
``HANG_BREAK`` real seconds (then deadlines fire and the test fails
instead of hanging).
"""
from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import trio
import trio.testing

from glancefs.api.service import ImageService
from glancefs.fs import stats
from glancefs.fs.catalog import BY_ID_INODE, ROOT_INODE
from glancefs.fs.errors import errno_for
from glancefs.fs.filesystem import Attr, GlanceFS
from glancefs.fs.options import MountOptions
from glancefs.testing.memory_service import MemoryImageService

KiB = 1024
BLOCK = 64 * KiB          # the smallest block_size: a few blocks make a small image
TEST_DEADLINE = 600.0     # trio seconds a body may take (only reached by a hang)
HANG_BREAK = 1.0          # real seconds of no progress before the mock clock jumps
CP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC   # what cp's open asks
TOUCH_FLAGS = os.O_WRONLY | os.O_CREAT              # what touch's open asks


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def mount_options(tmp_path: Path, **overrides: Any) -> MountOptions:
    """Small blocks and memory, a spool in ``tmp_path``, no journal."""
    values: dict[str, Any] = {
        "spool_dir": str(tmp_path / "spool"), "journal_dir": None, "block_size": BLOCK,
        "prefetch_start": BLOCK, "prefetch_max": 4 * BLOCK, "memory": 64 * BLOCK,
        "uid": 1234, "gid": 5678, "ttl": 30.0,
    }
    values.update(overrides)
    options = MountOptions(**values)
    options.check()
    return options


@dataclass
class Mount:
    """A served GlanceFS and what a test drives it with."""
    fs: GlanceFS
    service: MemoryImageService
    clock: FakeClock
    trio_clock: trio.testing.MockClock

    def advance(self, seconds: float) -> None:
        """Time passes, for the catalog and for trio alike."""
        self.clock.advance(seconds)
        self.trio_clock.jump(seconds)

    async def listing(self) -> dict[bytes, Attr]:
        """The root directory as ``ls -la`` sees it, without its directories
        (``.by-id`` and the views)."""
        return {name: attr for name, attr in await self.fs.listdir(ROOT_INODE)
                if not stat.S_ISDIR(attr.mode)}

    async def names(self) -> list[bytes]:
        return sorted(await self.listing())

    async def lookup(self, name: bytes) -> Attr:
        return await self.fs.lookup(ROOT_INODE, name)

    async def by_id(self, image_id: str) -> Attr:
        return await self.fs.lookup(BY_ID_INODE, image_id.encode())

    async def inode(self, name: bytes) -> int:
        return (await self.lookup(name)).inode

    async def read_at(self, name: bytes, offset: int, size: int) -> bytes:
        fh, _keep = await self.fs.open(await self.inode(name), os.O_RDONLY)
        try:
            return bytes(await self.fs.read(fh, offset, size))
        finally:
            await self.fs.release(fh)

    async def read_all(self, name: bytes, step: int = 32 * KiB) -> bytes:
        """The whole file in order, ``step`` bytes a read (as cat does)."""
        fh, _keep = await self.fs.open(await self.inode(name), os.O_RDONLY)
        out = bytearray()
        try:
            while chunk := await self.fs.read(fh, len(out), step):
                out += chunk
        finally:
            await self.fs.release(fh)
        return bytes(out)

    async def read_in_order(self, name: bytes, offsets: list[int],
                            step: int) -> dict[int, bytes]:
        """Reads of ``step`` bytes at ``offsets``, in that order, through one open file
        (the kernel reading late what it skipped, or never asking for some)."""
        fh, _keep = await self.fs.open(await self.inode(name), os.O_RDONLY)
        try:
            return {off: bytes(await self.fs.read(fh, off, step)) for off in offsets}
        finally:
            await self.fs.release(fh)

    async def cp(self, name: bytes, data: bytes, step: int = 32 * KiB) -> int:
        """``cp`` into the mount: create, writes in order, flush, release;
        returns the new file's inode. Errors of write and flush propagate
        (the handle is still released, as the kernel does)."""
        fh, attr = await self.fs.create(ROOT_INODE, name, CP_FLAGS)
        try:
            for offset in range(0, len(data), step):
                await self.fs.write(fh, offset, data[offset:offset + step])
            await self.fs.flush(fh)
        finally:
            await self.fs.release(fh)
        return attr.inode

    async def image_id(self, name: bytes) -> str:
        """The id of the image a file name shows (its user.glance.id)."""
        return (await self.fs.getxattr(await self.inode(name), b"user.glance.id")).decode()

    async def counters(self, image_id: str) -> dict[str, Any]:
        """The mount's counters of one image (user.glancefs.stats of the root)."""
        text = await self.fs.getxattr(ROOT_INODE, stats.XATTR_NAME)
        images: dict[str, dict[str, Any]] = json.loads(text)["images"]
        return images.get(image_id, {})


def run_mount(service: MemoryImageService, tmp_path: Path,
              body: Callable[[Mount], Awaitable[None]], **overrides: Any) -> None:
    """Serve a GlanceFS over ``service`` and run ``body`` against it."""
    options = mount_options(tmp_path, **overrides)
    clock = FakeClock()
    trio_clock = trio.testing.MockClock(autojump_threshold=HANG_BREAK)

    async def main() -> None:
        # Duck-typed: the fake has the face of ImageService the fs uses, not its class.
        fs = GlanceFS(cast(ImageService, service), options)
        fs.catalog.clock = clock
        fs.writes.clock = clock
        fs.writes.janitor.interval = 0.01   # background deletions retried at once
        # As session.prepare: the first listing, then the journal.
        with service.within(options.metadata_timeout, retries=0):
            fs.catalog.load(service.list_images())
        fs.start_journal()
        try:
            # As session._main: the nursery the reader and the catalog use.
            async with trio.open_nursery() as nursery:
                start = getattr(fs, "start", None)
                if start is not None:
                    start(nursery)      # GlanceFS.start (issue 13's restructuring)
                else:
                    fs.reader.nursery = nursery
                    fs.catalog.start(nursery)
                with trio.fail_after(TEST_DEADLINE):
                    await body(Mount(fs, service, clock, trio_clock))
                nursery.cancel_scope.cancel()
        finally:
            fs.close()

    trio.run(main, clock=trio_clock)


async def refusal(operation: str, call: Awaitable[Any]) -> int:
    """The errno the mount gives for ``call`` (``operation`` as the adapter
    names it, for errors.errno_for); fails when the call succeeds."""
    try:
        await call
    except Exception as error:  # noqa: BLE001 - every error has an errno
        return errno_for(error, operation)
    raise AssertionError(f"{operation} succeeded; an errno was expected")


def name_of(number: int) -> str:
    return errno.errorcode.get(number, str(number))

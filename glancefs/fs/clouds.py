"""Several clouds in one mount: one folder per cloud, and per region where a
cloud lists several (``<cloud>/<region>/``), each holding a whole
single-cloud tree (a :class:`GlanceFS`).

Why it is shaped this way: a cloud's tree has its own listing, read path,
write path, journal and numbering of inodes and file handles, exactly as
when it is the whole mount; nothing in it knows of the others. This layer
only

* gives each tree a slice of the inode and file-handle numbers: the high bits
  (above ``SHIFT``) say which tree, the low bits are the tree's own number, so
  a tree's answers are translated by one addition and requests routed by one
  shift;
* adds the directories above the trees (the root, a cloud's folder of
  regions) and, for a cloud that could not be reached or refused the
  credentials, an empty folder whose ``user.glancefs.error`` says why. Such a
  cloud is tried again in the background when someone looks at its folder, at
  most once per ``RETRY_AFTER``; it never holds up the others;
* refuses what crosses trees: a rename between clouds is EXDEV, so ``mv``
  copies and deletes, as between two file systems.

It offers the same face as GlanceFS (the methods glancefs.fs.operations
calls), so the adapter does not know whether it serves one cloud or several.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import trio

from glancefs.api.exceptions import describe
from glancefs.api.service import ImageRecord
from glancefs.fs import xattrs
from glancefs.fs.catalog import ROOT_INODE
from glancefs.fs.errors import FsError
from glancefs.fs.filesystem import RENAME_EXCHANGE, Attr, GlanceFS
from glancefs.fs.nodes import directory_attr
from glancefs.fs.options import MountOptions

LOG = logging.getLogger("glancefs.fs")

SHIFT = 40                       # a tree's inodes and handles stay below 2**40
LOCAL = (1 << SHIFT) - 1
RETRY_AFTER = 30.0               # seconds between tries of a cloud that failed
ERROR_XATTR = b"user.glancefs.error"

Connect = Callable[[], GlanceFS]


@dataclass
class Cloud:
    """One folder holding a tree: a cloud, or one region of a cloud."""

    path: tuple[str, ...]               # ("a",) or ("a", "region")
    connect: Connect                    # authenticates and lists (blocking)
    fs: GlanceFS | None = None
    error: str | None = None            # why it has no tree (yet)
    tried_at: float = 0.0
    trying: bool = False

    @property
    def label(self) -> str:
        return "/".join(self.path)


@dataclass
class Folder:
    """A directory of this layer: the root, or a cloud's folder of regions."""

    inode: int
    children: dict[bytes, int] = field(default_factory=dict)   # name -> inode


def connect_all(clouds: Sequence[Cloud]) -> None:
    """Connect every cloud at once (before the mount is ready): a cloud that
    fails keeps its reason, and the others are not held up by it."""
    def one(cloud: Cloud) -> None:
        cloud.tried_at = time.monotonic()
        try:
            cloud.fs = cloud.connect()
            cloud.error = None
        except Exception as error:  # noqa: BLE001 - any failure is this cloud's reason
            cloud.error = describe(error)
            LOG.warning("cloud %s: %s (its folder stays empty; tried again when listed, "
                        "after %.0f s)", cloud.label, cloud.error, RETRY_AFTER)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(clouds)))) as pool:
        list(pool.map(one, clouds))


class CloudsFS:
    """The trees of several clouds behind GlanceFS's face (module docstring)."""

    def __init__(self, clouds: Sequence[Cloud], options: MountOptions) -> None:
        if not clouds:
            raise ValueError("a mount of several clouds needs at least one")
        self.options = options
        self.clouds = list(clouds)
        self.started_wall = time.time()
        self.nursery: trio.Nursery | None = None
        self.on_change: Callable[[list[int]], None] | None = None
        self.folders: dict[int, Folder] = {ROOT_INODE: Folder(ROOT_INODE)}
        self.cloud_at: dict[int, Cloud] = {}   # the inode of a cloud's folder
        for index, cloud in enumerate(self.clouds, start=1):
            parent = self.folders[ROOT_INODE]
            for part in cloud.path[:-1]:
                name = part.encode("utf-8", "surrogateescape")
                inode = parent.children.get(name)
                if inode is None:
                    inode = len(self.folders) + ROOT_INODE
                    self.folders[inode] = Folder(inode)
                    parent.children[name] = inode
                parent = self.folders[inode]
            top = (index << SHIFT) | ROOT_INODE
            parent.children[cloud.path[-1].encode("utf-8", "surrogateescape")] = top
            self.cloud_at[top] = cloud

    # -- routing ----------------------------------------------------------------------

    def _tree(self, number: int) -> tuple[int, GlanceFS | None]:
        """(index, its tree) of an inode or handle; index 0 is this layer's."""
        index = number >> SHIFT
        if index == 0:
            return 0, None
        if index > len(self.clouds):
            raise FsError(errno.ENOENT, f"inode {number} is not known")
        return index, self.clouds[index - 1].fs

    def _live(self, number: int) -> tuple[int, GlanceFS]:
        index, fs = self._tree(number)
        if fs is None:
            raise FsError(errno.ENOENT, f"inode {number} is not in a cloud's tree")
        return index, fs

    @staticmethod
    def _out(index: int, attr: Attr) -> Attr:
        return dataclasses.replace(attr, inode=(index << SHIFT) | attr.inode)

    def _failed(self, inode: int) -> Cloud | None:
        cloud = self.cloud_at.get(inode)
        return cloud if cloud is not None and cloud.fs is None else None

    def _retry(self, cloud: Cloud) -> None:
        """Someone looks at a cloud without a tree: try it again in the
        background (at most once per RETRY_AFTER)."""
        if cloud.trying or self.nursery is None \
                or time.monotonic() - cloud.tried_at < RETRY_AFTER:
            return
        cloud.trying = True
        self.nursery.start_soon(self._connect_again, cloud)

    async def _connect_again(self, cloud: Cloud) -> None:
        cloud.tried_at = time.monotonic()
        try:
            fs = await trio.to_thread.run_sync(cloud.connect, abandon_on_cancel=True)
        except Exception as error:  # noqa: BLE001 - the reason stays on the folder
            cloud.error = describe(error)
            LOG.info("cloud %s: still failing: %s", cloud.label, cloud.error)
            return
        finally:
            cloud.trying = False
        index = self.clouds.index(cloud) + 1
        if self.nursery is not None:
            self._start_tree(index, fs, self.nursery)
        cloud.fs, cloud.error = fs, None
        LOG.info("cloud %s: connected (%d images)", cloud.label, fs.image_count)

    def _start_tree(self, index: int, fs: GlanceFS, nursery: trio.Nursery) -> None:
        on_change = self.on_change

        def changed(inodes: list[int]) -> None:
            if on_change is not None:
                on_change([(index << SHIFT) | i for i in inodes])
        fs.start(nursery, on_change=changed)

    # -- the face of GlanceFS ------------------------------------------------------------

    def start(self, nursery: trio.Nursery,
              on_change: Callable[[list[int]], None] | None = None) -> None:
        self.nursery, self.on_change = nursery, on_change
        for index, cloud in enumerate(self.clouds, start=1):
            if cloud.fs is not None:
                self._start_tree(index, cloud.fs, nursery)

    @property
    def image_count(self) -> int:
        return sum(c.fs.image_count for c in self.clouds if c.fs is not None)

    def close(self) -> None:
        for cloud in self.clouds:
            if cloud.fs is not None:
                cloud.fs.close()

    def subject(self, inode: int) -> ImageRecord | None:
        index, fs = self._tree(inode)
        return None if fs is None else fs.subject(inode & LOCAL)

    def record_of_handle(self, fh: int) -> ImageRecord | None:
        index, fs = self._tree(fh)
        return None if fs is None else fs.record_of_handle(fh & LOCAL)

    async def getattr(self, inode: int) -> Attr:
        if inode in self.folders or self._failed(inode) is not None:
            return directory_attr(inode, self.options, self.started_wall)
        index, fs = self._live(inode)
        return self._out(index, await fs.getattr(inode & LOCAL))

    async def lookup(self, parent: int, name: bytes) -> Attr:
        folder = self.folders.get(parent)
        if folder is not None:
            child = folder.children.get(name)
            if child is None:
                raise FsError(errno.ENOENT, f"no cloud named {name!r}")
            return await self.getattr(child)
        failed = self._failed(parent)
        if failed is not None:
            self._retry(failed)
            raise FsError(errno.ENOENT, f"cloud {failed.label} is not connected: "
                          f"{failed.error}")
        index, fs = self._live(parent)
        return self._out(index, await fs.lookup(parent & LOCAL, name))

    async def listdir(self, inode: int) -> list[tuple[bytes, Attr]]:
        folder = self.folders.get(inode)
        if folder is not None:
            return [(name, await self.getattr(child))
                    for name, child in sorted(folder.children.items())]
        failed = self._failed(inode)
        if failed is not None:
            self._retry(failed)
            return []
        index, fs = self._live(inode)
        return [(name, self._out(index, attr))
                for name, attr in await fs.listdir(inode & LOCAL)]

    async def set_mtime(self, inode: int, ns: int) -> None:
        index, fs = self._tree(inode)
        if fs is not None:
            await fs.set_mtime(inode & LOCAL, ns)

    async def set_size(self, inode: int, size: int, fh: int | None) -> None:
        index, fs = self._live(inode)
        await fs.set_size(inode & LOCAL, size, None if fh is None else fh & LOCAL)

    async def open(self, inode: int, flags: int, pid: int = 0) -> tuple[int, bool]:
        index, fs = self._live(inode)
        fh, keep = await fs.open(inode & LOCAL, flags, pid)
        return (index << SHIFT) | fh, keep

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        fs = self._live(fh)[1]
        try:
            return await fs.read(fh & LOCAL, off, size)
        except Exception as error:
            # A cp from this cloud to another: its target must not become an image.
            pid = fs.pid_of(fh & LOCAL)
            for cloud in self.clouds:
                if cloud.fs is not None and cloud.fs is not fs:
                    cloud.fs.reads_failed(pid, error)
            raise

    async def write(self, fh: int, off: int, data: bytes) -> int:
        return await self._live(fh)[1].write(fh & LOCAL, off, data)

    async def flush(self, fh: int) -> None:
        await self._live(fh)[1].flush(fh & LOCAL)

    async def release(self, fh: int) -> None:
        index, fs = self._tree(fh)
        if fs is not None:
            await fs.release(fh & LOCAL)

    async def getxattr(self, inode: int, name: bytes) -> bytes:
        index, fs = self._tree(inode)
        if fs is not None:
            return await fs.getxattr(inode & LOCAL, name)
        if not name.startswith(xattrs.PROPERTY_PREFIX.encode()):
            raise FsError(errno.EOPNOTSUPP, f"only user.* attributes exist here, not {name!r}")
        value = self._own_xattrs(inode).get(name)
        if value is None:
            raise FsError(errno.ENODATA, f"no attribute {name!r}")
        return value

    def _own_xattrs(self, inode: int) -> dict[bytes, bytes]:
        """The attributes of this layer's folders: a cloud without a tree says why."""
        failed = self._failed(inode)
        if failed is not None:
            return {ERROR_XATTR: (failed.error or "not connected yet").encode()}
        return {}

    async def listxattr(self, inode: int) -> list[bytes]:
        index, fs = self._tree(inode)
        if fs is None:
            return list(self._own_xattrs(inode))
        return await fs.listxattr(inode & LOCAL)

    async def setxattr(self, inode: int, name: bytes, value: bytes) -> None:
        index, fs = self._tree(inode)
        if fs is None:
            raise FsError(errno.EPERM, "directories have no attributes")
        await fs.setxattr(inode & LOCAL, name, value)

    async def removexattr(self, inode: int, name: bytes) -> None:
        index, fs = self._tree(inode)
        if fs is None:
            raise FsError(errno.EPERM, "directories have no attributes")
        await fs.removexattr(inode & LOCAL, name)

    async def statfs(self) -> dict[str, int]:
        """df of the whole mount: the clouds' usage added up."""
        total: dict[str, int] = {}
        for cloud in self.clouds:
            if cloud.fs is None:
                continue
            values = await cloud.fs.statfs()
            if not total:
                total = dict(values)
                continue
            for key in ("f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail"):
                total[key] += values[key]
        if not total:
            total = {"f_bsize": self.options.block_size, "f_frsize": 4096, "f_blocks": 0,
                     "f_bfree": 0, "f_bavail": 0, "f_files": 0, "f_ffree": 0,
                     "f_favail": 0, "f_namemax": 255}
        return total

    def _refuse_here(self, parent: int, what: str) -> GlanceFS:
        index, fs = self._tree(parent)
        if fs is None:
            raise FsError(errno.EPERM, f"{what}: images live in a cloud's folder "
                          "(this mount shows several clouds)")
        return fs

    async def create(self, parent: int, name: bytes, flags: int, pid: int = 0
                     ) -> tuple[int, Attr]:
        fs = self._refuse_here(parent, "create")
        index = parent >> SHIFT
        fh, attr = await fs.create(parent & LOCAL, name, flags, pid)
        return (index << SHIFT) | fh, self._out(index, attr)

    async def unlink(self, parent: int, name: bytes) -> None:
        await self._refuse_here(parent, "unlink").unlink(parent & LOCAL, name)

    async def rename(self, parent_old: int, old: bytes, parent_new: int, new: bytes,
                     flags: int) -> None:
        fs = self._refuse_here(parent_old, "rename")
        self._refuse_here(parent_new, "rename")
        if parent_old >> SHIFT != parent_new >> SHIFT:
            if flags & RENAME_EXCHANGE:
                raise FsError(errno.EXDEV, "rename: the images are in different clouds")
            # mv copies and deletes, as between two file systems (cp then rm).
            raise FsError(errno.EXDEV, "rename: another cloud: copied by mv instead")
        await fs.rename(parent_old & LOCAL, old, parent_new & LOCAL, new, flags)

    def refuse_write(self, what: str) -> FsError:
        return FsError(errno.EPERM, f"{what}: images are plain files in a cloud's folder")

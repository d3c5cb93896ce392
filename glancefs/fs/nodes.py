"""The tree of the mount: one node per thing a path can name.

Why it is shaped this way: the filesystem used to ask, in every operation,
"is this a directory, a file being written, or an image of the listing?".
Each kind is now a :class:`Node` that answers for itself (its attributes,
its xattrs, how it opens, what a change of it means), and
:class:`glancefs.fs.filesystem.GlanceFS` only resolves an inode to a node and
delegates. A new directory (a view, a cloud) is one more node class; nothing
else changes.

The kinds:

* :class:`RootDir`, the images by name, where files are created, removed and
  renamed; its one xattr is the mount's counters (``user.glancefs.stats``).
* :class:`ByIdDir`, ``.by-id``: every image under its id, read-only.
* :class:`ImageNode`, an image of the listing (an immutable ``ImageRecord``).
* :class:`WrittenNode`, a file written through the mount: shown from its
  pending state until its image holds the last version.

Open files are :class:`OpenFile` values in one table of the filesystem: a
:class:`ReadHandle` (the read path's ``Handle``) or a :class:`WriteHandle`
(a written file; it reads from the spool, and from the image once the
upload is done and no spool is kept).
"""
from __future__ import annotations

import errno
import logging
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from glancefs.api import exceptions as exc
from glancefs.api import fields
from glancefs.api.service import ImageRecord
from glancefs.api.values import comma_list
from glancefs.fs import modtime, names, stats, xattrs
from glancefs.fs.catalog import BY_ID_INODE, BY_ID_NAME, ROOT_INODE
from glancefs.fs.errors import STATUS_ERRNO, FsError
from glancefs.fs.reader import Handle
from glancefs.fs.write import WrittenFile, parse_field

if TYPE_CHECKING:
    from glancefs.fs.filesystem import GlanceFS
    from glancefs.fs.options import MountOptions

LOG = logging.getLogger("glancefs.fs")

# Attributes of images that may still change are trusted this long at most.
UNSETTLED_TIMEOUT = 1.0
# user.glance.stores: setfattr copies the image to more stores and removes it from others.
STORES = "stores"


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


def not_active(record: ImageRecord) -> FsError:
    """Why an image that is not active cannot be opened (docs/design.rst, Attributes)."""
    number, why = STATUS_ERRNO.get(record.status, (errno.EIO, "is not active"))
    return FsError(number, f"image status is {record.status!r}: it {why}")


class Node:
    """What every node answers; the defaults are those of a plain file."""

    def __init__(self, fs: GlanceFS, inode: int) -> None:
        self.fs = fs
        self.inode = inode

    def attr(self) -> Attr:
        raise NotImplementedError

    def subject(self) -> ImageRecord | None:
        """What a log line about this node names."""
        return None

    @property
    def protected(self) -> bool:
        return False

    async def xattrs(self) -> dict[bytes, bytes]:
        return {}

    async def lookup(self, name: bytes) -> Node:
        raise FsError(errno.ENOTDIR, f"inode {self.inode} is not a directory")

    async def entries(self) -> list[tuple[bytes, Attr]]:
        raise FsError(errno.ENOTDIR, f"inode {self.inode} is not a directory")

    async def open_read(self, fh: int) -> tuple[OpenFile, bool]:
        """(the open file ``fh``, keep the kernel's page cache)."""
        raise FsError(errno.EISDIR, "a directory is not opened as a file")

    async def open_write(self, fh: int, flags: int) -> OpenFile:
        raise FsError(errno.EISDIR, "a directory is not opened as a file")

    async def set_size(self, size: int, fh: int | None) -> None:
        raise FsError(errno.EISDIR, "a directory has no size to set")

    async def set_mtime(self, ns: int) -> None:
        return None   # directories show when the mount began, whatever is set

    async def change_xattr(self, kind: str, key: str, value: bytes | None) -> None:
        raise FsError(errno.EPERM, "directories have no attributes")

    async def remove(self) -> None:
        raise FsError(errno.EISDIR, "a directory cannot be removed")

    async def rename(self, new_name: str | None, shown: bytes) -> ImageRecord | None:
        raise FsError(errno.EPERM, "a directory cannot be renamed")


# -- directories --------------------------------------------------------------------------


def directory_attr(inode: int, options: MountOptions, started_wall: float) -> Attr:
    """Every directory of the mount: owned as the options say, dated when mounted."""
    mode = 0o555 if options.ro else 0o755
    when = int(started_wall * modtime.NS)
    return Attr(inode, stat.S_IFDIR | (mode & ~options.umask), 0, when, when, 2,
                options.uid, options.gid, options.ttl)


class Directory(Node):
    def attr(self) -> Attr:
        return directory_attr(self.inode, self.fs.options, self.fs.started_wall)


class RootDir(Directory):
    async def xattrs(self) -> dict[bytes, bytes]:
        return {stats.XATTR_NAME: self.fs.stats.to_json(retries=self.fs.service.retries,
                                                        memory=self.fs.reader.memory())}

    async def lookup(self, name: bytes) -> Node:
        if name == BY_ID_NAME:
            return self.fs.by_id
        view = self.fs.views.get(name)
        if view is not None:
            return view
        # A name not in the listing is not asked for on its own: the refresh
        # the lookup started (0.3 s) decides. Waiting longer for it would hold
        # every ls of the directory too (the kernel serializes them with lookups).
        node = await self.entry(name)
        if node is None:
            raise FsError(errno.ENOENT, f"no image named {name!r}")
        return node

    async def entry(self, shown: bytes) -> Node | None:
        """The node named ``shown`` here, or None: files being written first,
        then the listing."""
        fs = self.fs
        await fs.catalog.refresh()
        fs.sync_written()
        file = fs.written_by_name(shown)
        if file is not None:
            return WrittenNode(fs, file)
        record = fs.catalog.lookup(shown)
        return None if record is None else ImageNode(fs, record)

    async def entries(self) -> list[tuple[bytes, Attr]]:
        fs = self.fs
        await fs.catalog.refresh()
        fs.sync_written()
        written = {f.shown: WrittenNode(fs, f) for f in fs.visible_written()}
        ours = {node.inode for node in written.values()}
        out = [(BY_ID_NAME, fs.by_id.attr())]
        out.extend((shown, view.attr()) for shown, view in fs.views.items())
        out.extend((shown, ImageNode(fs, record).attr())
                   for shown, record in fs.catalog.entries()
                   if shown not in written and fs.catalog.inode(record.id) not in ours)
        out.extend((shown, node.attr()) for shown, node in sorted(written.items()))
        return out


class ByIdDir(Directory):
    async def lookup(self, name: bytes) -> Node:
        fs = self.fs
        await fs.catalog.refresh()
        # An image being uploaded through the mount is its file's inode here too.
        fs.sync_written()
        try:
            image_id = name.decode("ascii")
        except UnicodeDecodeError:
            image_id = ""
        record = await fs.catalog.lookup_id(image_id) if image_id else None
        if record is None:
            raise FsError(errno.ENOENT, f"no image named {name!r}")
        return ImageNode(fs, record)

    async def entries(self) -> list[tuple[bytes, Attr]]:
        fs = self.fs
        await fs.catalog.refresh()
        fs.sync_written()
        records = sorted((fs.catalog.records[i] for i in fs.catalog.listed), key=lambda r: r.id)
        return [(r.id.encode(), ImageNode(fs, r).attr()) for r in records]


# -- files ----------------------------------------------------------------------------------


class FileNode(Node):
    """What images of the listing and written files share: their changes."""

    def _check_change(self, kind: str, key: str) -> None:
        if kind == "member":
            raise FsError(errno.EPERM, "user.glance.member_status: only an image shared "
                          "with this project has one")
        if kind == "core" and key == "name":
            raise FsError(errno.EPERM, "user.glance.name: rename the file (mv) instead")
        if kind == "core" and key in xattrs.READ_ONLY_FIELDS:
            raise FsError(errno.EPERM, f"user.glance.{key} is managed by the server")
        if kind == "property" and key in fields.CORE:
            raise FsError(errno.EPERM, f"{key!r} is not a property: use user.glance.{key}")
        if kind == "property" and fields.reserved(key):
            raise FsError(errno.EPERM, f"user.{key} is managed by the server "
                          f"(Glance reserves {fields.RESERVED_PREFIX}*)")

    async def _change_image(self, record: ImageRecord, kind: str, key: str,
                            value: bytes | None) -> ImageRecord:
        """One PATCH (v2) or PUT (v1) from a fresh view of the image."""
        fs = self.fs
        record = await fs.ask(fs.service.get, record.id)
        if kind == "core":
            if value is None:
                raise FsError(errno.EPERM, f"user.glance.{key} cannot be removed")
            record = await fs.ask(fs.service.set_field, record, key, parse_field(key, value))
        elif value is None:
            if key not in record.properties:
                raise FsError(errno.ENODATA, f"no property {key!r}")
            record = await fs.ask(fs.service.remove_property, record, key)
        else:
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise FsError(errno.EINVAL, "property values must be UTF-8") from None
            record = await fs.ask(fs.service.set_property, record, key, text)
        fs.catalog.update(record)
        return record

    async def _change_stores(self, record: ImageRecord, value: bytes | None) -> ImageRecord:
        """setfattr -n user.glance.stores -v a,b: the image is copied to the stores it
        is not in yet (copy-image, waited for) and removed from those left out."""
        fs = self.fs
        if value is None:
            raise FsError(errno.EPERM, "user.glance.stores cannot be removed: set it to "
                          "the stores to keep")
        wanted = comma_list(value.decode("utf-8", "replace"))
        if not wanted:
            raise FsError(errno.EINVAL, "user.glance.stores: name one store at least")
        record = await fs.thread(fs.service.set_stores, record.id, wanted,
                                 fs.options.upload_timeout)
        fs.catalog.update(record)
        LOG.info("image %s is now in store(s) %s", record.id, record.stores)
        return record

    async def _set_mtime_of_image(self, record: ImageRecord, value: str) -> ImageRecord:
        fs = self.fs
        if record.properties.get(modtime.PROPERTY) == value:
            return record   # already so: no request (rsync sets every time again)
        record = await fs.ask(fs.service.get, record.id)
        if record.properties.get(modtime.PROPERTY) != value:
            record = await fs.ask(fs.service.set_property, record, modtime.PROPERTY, value)
        fs.catalog.update(record)
        return record


class ImageNode(FileNode):
    """An image of the listing."""

    def __init__(self, fs: GlanceFS, record: ImageRecord) -> None:
        super().__init__(fs, fs.catalog.inode(record.id))
        self.record = record

    def subject(self) -> ImageRecord:
        return self.record

    @property
    def protected(self) -> bool:
        return self.record.protected

    def attr(self) -> Attr:
        record, options = self.record, self.fs.options
        settled = record.status == "active"
        writable = (options.replace_on_close and settled and not record.protected
                    and not options.ro)
        return Attr(
            inode=self.inode,
            mode=stat.S_IFREG | ((0o644 if writable else 0o444) & ~options.umask),
            size=record.size or 0,
            mtime_ns=self.fs.mtime_ns(record.properties, record.updated),
            ctime_ns=int(record.created * modtime.NS),
            nlink=self.fs.catalog.links(record.id),
            uid=options.uid, gid=options.gid,
            timeout=options.ttl if settled else min(options.ttl, UNSETTLED_TIMEOUT))

    async def xattrs(self) -> dict[bytes, bytes]:
        return self.fs.attributes(self.record)

    async def open_read(self, fh: int) -> tuple[OpenFile, bool]:
        fs, record = self.fs, self.record
        if record.status != "active":
            # The listing may be old: ask the server about this one image.
            try:
                record = await fs.catalog.ask(fs.service.get, record.id)
            except exc.HTTPNotFound:
                raise FsError(errno.ENOENT, "the image no longer exists") from None
            fs.catalog.update(record)
        if record.status != "active":
            raise not_active(record)
        # Active data never changes: the kernel keeps its page cache across opens.
        return ReadHandle(fs, fs.reader.open(record)), True

    async def open_write(self, fh: int, flags: int) -> OpenFile:
        fs, record = self.fs, self.record
        if record.status != "active":
            raise not_active(record)
        file = await fs.thread(fs.writes.open, self.inode, record, fh, flags)
        if not file.shown:
            file.shown = fs.catalog.name_of.get(record.id) or names.escape(record.name)
        return WriteHandle(fs, file, fh)

    async def set_size(self, size: int, fh: int | None) -> None:
        """truncate of an active image: only with replace_on_close (a new
        version replaces it); the same size changes nothing."""
        fs, record = self.fs, self.record
        if (record.size or 0) == size:
            return
        fs.check_writable("truncate")
        file = fs.writes.adopt(self.inode, record)
        file.shown = fs.catalog.name_of.get(record.id) or names.escape(record.name)
        await WrittenNode(fs, file).set_size(size, fh)

    async def set_mtime(self, ns: int) -> None:
        await self._set_mtime_of_image(self.record, modtime.format_ns(ns))

    async def change_xattr(self, kind: str, key: str, value: bytes | None) -> None:
        if kind == "member" and self.record.member_status is not None:
            await self._answer_share(value)
            return
        if kind == "core" and key == STORES:
            await self._change_stores(self.record, value)
            return
        self._check_change(kind, key)
        await self._change_image(self.record, kind, key, value)

    async def _answer_share(self, value: bytes | None) -> None:
        """setfattr -n user.glance.member_status -v accepted|rejected|pending:
        this project's answer to the share, one request."""
        fs = self.fs
        if value is None:
            raise FsError(errno.EPERM, "user.glance.member_status cannot be removed: "
                          "set it to accepted, rejected or pending")
        status = value.decode("utf-8", "replace").strip()
        record = await fs.ask(fs.service.set_member_status, self.record.id, status)
        fs.catalog.update(record)
        LOG.info("member status of %s is now %s", record.id, status)

    async def remove(self) -> None:
        fs = self.fs
        await fs.ask(fs.service.delete, self.record.id)
        fs.forget(self.record.id)
        LOG.info("deleted %s", self.record.id)

    async def rename(self, new_name: str | None, shown: bytes) -> ImageRecord | None:
        return await self.fs.ask(self.fs.service.rename, self.record, new_name)


class WrittenNode(FileNode):
    """A file written through the mount (glancefs.fs.write)."""

    def __init__(self, fs: GlanceFS, file: WrittenFile) -> None:
        super().__init__(fs, file.inode)
        self.file = file

    def _record(self) -> ImageRecord:
        """The listing's record of the image that holds this file's last version."""
        record = self.fs.catalog.record(self.inode)
        if record is None:
            raise FsError(errno.ENOENT, f"inode {self.inode} is not an image")
        return record

    def _follow(self, record: ImageRecord) -> None:
        """The image was changed: the file's own view of it follows."""
        if self.file.image is not None and self.file.image.id == record.id:
            self.file.image = record

    @property
    def pending(self) -> bool:
        """Its data is not (all) in an active image yet."""
        return self.file.writing or self.file.image is None

    def subject(self) -> ImageRecord:
        return self.file.image or self.fs.writes.pending_record(self.file)

    @property
    def protected(self) -> bool:
        return self.file.image is not None and self.file.image.protected

    def attr(self) -> Attr:
        file, options = self.file, self.fs.options
        created = file.image.created if file.image is not None else file.mtime
        # While written, the time set is in the pending metadata; once the image
        # holds the last version, the image says.
        kept = file.image.properties if file.image is not None and not file.writing \
            else file.meta.properties
        return Attr(inode=file.inode, mode=stat.S_IFREG | (0o644 & ~options.umask),
                    size=file.current_size, mtime_ns=self.fs.mtime_ns(kept, file.mtime),
                    ctime_ns=int(created * modtime.NS), nlink=1,
                    uid=options.uid, gid=options.gid,
                    timeout=min(options.ttl, UNSETTLED_TIMEOUT))

    async def xattrs(self) -> dict[bytes, bytes]:
        fs, file = self.fs, self.file
        if self.pending:
            values = xattrs.attributes(fs.writes.pending_record(file))
            if not file.image_id:
                values.pop(b"user.glance.id", None)
            return values
        await fs.catalog.refresh()
        return fs.attributes(self._record())

    async def open_read(self, fh: int) -> tuple[OpenFile, bool]:
        fs, file = self.fs, self.file
        if self.pending:
            # Data that is not (all) on the server yet: served from the spool.
            return WriteHandle(fs, file, fh), False
        opened, _keep = await ImageNode(fs, self._record()).open_read(fh)
        # A file written through this mount may change again: no page cache kept.
        return opened, False

    async def open_write(self, fh: int, flags: int) -> OpenFile:
        fs = self.fs
        file = await fs.thread(fs.writes.open, self.inode, None, fh, flags)
        return WriteHandle(fs, file, fh)

    async def set_size(self, size: int, fh: int | None) -> None:
        fs = self.fs
        handle = fs.open_files.get(fh) if fh is not None else None
        by_handle = fh if isinstance(handle, WriteHandle) and handle.writing else None
        await fs.may_finish(self.file, fs.writes.truncate, size, by_handle)

    async def set_mtime(self, ns: int) -> None:
        fs, file = self.fs, self.file
        value = modtime.format_ns(ns)
        if await fs.thread(fs.writes.set_meta, file, "property", modtime.PROPERTY,
                           value.encode()):
            return   # goes up with the upload
        self._follow(await self._set_mtime_of_image(self._record(), value))

    async def change_xattr(self, kind: str, key: str, value: bytes | None) -> None:
        fs, file = self.fs, self.file
        if value is not None and file.writing and xattrs.skipped_when_copied(kind, key):
            # cp -a / rsync -X copy the source's every attribute onto the new file:
            # what Glance sets is skipped (its hashes are checked at the end).
            LOG.debug("%r: %s %s from a copy's source: skipped", file.name, kind, key)
            await fs.thread(fs.writes.note_copied, file, key, value)
            return
        if kind == "core" and key == STORES:
            if self.pending:
                raise FsError(errno.EBUSY, "user.glance.stores: the file is not uploaded "
                              "yet (mount option stores= says where uploads go)")
            self._follow(await self._change_stores(self._record(), value))
            return
        self._check_change(kind, key)
        if await fs.thread(fs.writes.set_meta, file, kind, key, value):
            return
        self._follow(await self._change_image(self._record(), kind, key, value))

    async def remove(self) -> None:
        fs, file = self.fs, self.file
        ids = {i for i in (file.image_id, file.image.id if file.image is not None else None)
               if i}
        await fs.thread(fs.writes.unlink, file)
        for image_id in ids:
            fs.forget(image_id)
        LOG.info("deleted %s", ", ".join(sorted(ids)) or "a file that had no image yet")

    async def rename(self, new_name: str | None, shown: bytes) -> ImageRecord | None:
        record = await self.fs.thread(self.fs.writes.rename, self.file, new_name)
        self.file.shown = shown
        return record


# -- open files -----------------------------------------------------------------------------


class OpenFile:
    """One entry of the filesystem's table of open files."""

    writing = False
    pid = 0          # the process that opened it (0: not known)

    def subject(self) -> ImageRecord | None:
        raise NotImplementedError

    async def read(self, off: int, size: int) -> bytes | memoryview:
        raise NotImplementedError

    async def release(self) -> None:
        raise NotImplementedError

    async def write(self, off: int, data: bytes) -> int:
        raise FsError(errno.EBADF, "this file is not open for writing")

    async def flush(self) -> None:
        return None


class ReadHandle(OpenFile):
    """An image opened for reading: the read path's handle."""

    def __init__(self, fs: GlanceFS, handle: Handle) -> None:
        self.fs = fs
        self.handle = handle

    def subject(self) -> ImageRecord:
        return self.handle.image.record

    async def read(self, off: int, size: int) -> bytes | memoryview:
        return await self.fs.reader.read(self.handle, off, size)

    async def release(self) -> None:
        self.fs.reader.release(self.handle)


class WriteHandle(OpenFile):
    """A written file's handle: written through glancefs.fs.write, read from
    its spool, and from the image once its upload is done and no spool is kept."""

    def __init__(self, fs: GlanceFS, file: WrittenFile, fh: int) -> None:
        self.fs = fs
        self.file = file
        self.fh = fh
        self.reading: Handle | None = None    # switched to the image's data

    @property
    def writing(self) -> bool:   # type: ignore[override]  # a property over a class default
        return self.reading is None

    def subject(self) -> ImageRecord:
        return self.file.image or self.fs.writes.pending_record(self.file)

    async def read(self, off: int, size: int) -> bytes | memoryview:
        fs, file = self.fs, self.file
        if self.reading is None:
            try:
                return await fs.thread(fs.writes.read, file, off, size)
            except FsError as error:
                if error.errno != errno.EAGAIN or file.image is None:
                    raise
                # Its upload finished and no spool is kept: read the image.
                self.reading = fs.reader.open(file.image)
        return await fs.reader.read(self.reading, off, size)

    async def write(self, off: int, data: bytes) -> int:
        fs, file = self.fs, self.file
        if self.reading is not None:
            raise FsError(errno.EBADF, f"file handle {self.fh} is not open for writing")
        try:
            return await fs.thread(fs.writes.write, file, self.fh, off, data)
        except BaseException:
            fs.if_gone(file)
            raise

    async def flush(self) -> None:
        """Where cp learns whether its copy made it: the upload finishes here."""
        fs, file = self.fs, self.file
        try:
            await fs.may_finish(file, fs.writes.flush, self.fh)
        except BaseException:
            fs.if_gone(file)
            raise

    async def release(self) -> None:
        fs, file = self.fs, self.file
        if self.reading is not None:
            fs.reader.release(self.reading)
        await fs.may_finish(file, fs.writes.release, self.fh)


__all__ = ["Attr", "ByIdDir", "ImageNode", "Node", "OpenFile", "ReadHandle", "RootDir",
           "WriteHandle", "WrittenNode", "BY_ID_INODE", "ROOT_INODE"]

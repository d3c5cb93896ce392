"""Files written through the mount, from ``create()`` to an active image.

A :class:`WrittenFile` is what the mount knows of a file it is writing: its
name, size and pending metadata, the :class:`~glancefs.fs.write.Upload` of
the version being written, and, after an upload, the image and the spool
that holds its data. The rules (docs/design.rst, Writing; README.rst documents them):

* A created file is shown at once, as a *draft*: no image exists until data
  arrives. A file nobody wrote data into (``touch``, ``truncate -s``) stays a
  draft, shown until it is removed or the mount ends; so ``truncate -s`` then
  ``dd conv=notrunc`` streams one upload.
* The upload of a version is finished in ``flush`` of a handle that changed
  the data (the close() cp waits for, and the only place cp sees errors).
  A handle opened with O_TRUNC that never wrote (``cp`` of an empty or
  all-hole file) uploads at its release.
* A failed upload leaves nothing: the half-made image is deleted and a new
  file disappears; a replacement that fails leaves the old image as it was.
* After its last close a written file keeps its spool for
  :data:`REOPEN_WINDOW` seconds: reopening it then without O_TRUNC
  (``qemu-img convert`` closes and reopens its target several times) goes on
  from the spool, and the next flush uploads a new image, then deletes the
  previous one. Otherwise an active image cannot be opened for writing
  (EPERM) unless the mount has ``replace_on_close``: then the new image is
  uploaded under the same name and the old one deleted only after success
  (its data is first copied into the spool when the file is not truncated).

Every method blocks (HTTP, the spool) and is called from worker threads;
one lock per file keeps its operations in order.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from glancefs.api import fields as schema
from glancefs.api.service import WRITABLE_FIELDS, ImageRecord, ImageService
from glancefs.api.values import comma_list, parse_bool
from glancefs.fs.errors import FsError, describe
from glancefs.fs.stats import MountStats
from glancefs.fs.write.janitor import Janitor
from glancefs.fs.write.journal import Journal, JournalError
from glancefs.fs.write.spool import Spool, SpoolBudget, spool_from_image
from glancefs.fs.write.upload import PendingMeta, Upload, UploadState, WriteConfig
from glancefs.fs.xattrs import SOURCE_HASHES

LOG = logging.getLogger("glancefs.fs.write")

CLOSE_WAIT = 2.0          # seconds the mount's end waits for each unfinished upload
REOPEN_WINDOW = 60.0      # seconds a closed written file may be reopened to go on
# user.glance.* fields a user may set (through setxattr) on an image or a draft.
SETTABLE_FIELDS = frozenset({"min_disk", "min_ram", "protected", "visibility", "tags"})
FORMAT_FIELDS = frozenset({"disk_format", "container_format"})


@dataclass
class Handle:
    trunc: bool = False     # opened with O_TRUNC (or created by cp, which truncates)
    wrote: bool = False     # changed the data since its last flush
    error: BaseException | None = None   # an upload failure its flush must report


@dataclass(eq=False)
class WrittenFile:
    inode: int
    name: str | None
    shown: bytes = b""                   # its directory entry (the filesystem's business)
    meta: PendingMeta = field(default_factory=PendingMeta)
    size: int = 0
    image: ImageRecord | None = None     # the active image holding the last version
    spool: Spool | None = None           # that version's data, while it is kept
    upload: Upload | None = None         # the version being written
    handles: dict[int, Handle] = field(default_factory=dict)
    unlinked: bool = False
    failed: BaseException | None = None  # a new file whose upload failed: gone
    tainted: str | None = None           # why its data must not become an image
    closed_at: float | None = None
    mtime: float = field(default_factory=time.time)
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def writing(self) -> bool:
        return self.upload is not None and self.upload.state in (UploadState.OPEN,
                                                                 UploadState.FINISHING)

    @property
    def draft(self) -> bool:
        """Shown by the mount itself: no active image stands for it (yet)."""
        return self.image is None and self.failed is None and not self.unlinked

    @property
    def current_size(self) -> int:
        return self.upload.size if self.writing and self.upload is not None else self.size

    @property
    def image_id(self) -> str | None:
        if self.upload is not None and self.upload.image_id:
            return self.upload.image_id
        return self.image.id if self.image is not None else None


def parse_field(name: str, raw: bytes) -> Any:
    """The API value of a ``user.glance.<name>`` xattr value (EINVAL if malformed)."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise FsError(errno.EINVAL, f"user.glance.{name} must be UTF-8") from None
    want = WRITABLE_FIELDS.get(name, str)
    if want is int:
        try:
            return int(text)
        except ValueError:
            raise FsError(errno.EINVAL, f"user.glance.{name} must be an integer, "
                          f"not {text!r}") from None
    if want is bool:
        try:
            return parse_bool(text)
        except ValueError:
            raise FsError(errno.EINVAL, f"user.glance.{name} must be true or false, "
                          f"not {text!r}") from None
    if want is list:
        if text.startswith("["):
            try:
                tags = json.loads(text)
            except ValueError:
                raise FsError(errno.EINVAL, "user.glance.tags: not a JSON list") from None
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise FsError(errno.EINVAL, "user.glance.tags: a JSON list of strings")
            return tags
        return comma_list(text)
    return text


def carried_meta(record: ImageRecord) -> PendingMeta:
    """What a replacement of ``record`` keeps: its properties and settable fields
    (not ``protected``: a protected image is never replaced). Tags only where
    the API has them (a v1 record has none)."""
    fields: dict[str, Any] = {"min_disk": record.min_disk, "min_ram": record.min_ram}
    if record.visibility:
        fields["visibility"] = record.visibility
    if record.tags:
        fields["tags"] = list(record.tags)
    # Not the properties Glance reserves (an import's os_glance_import_task): sent
    # back, they would fail the replacement's PATCH.
    properties = {k: v for k, v in record.properties.items() if not schema.reserved(k)}
    return PendingMeta(properties=properties, fields=fields)


class WritePath:
    """Every file the mount is writing, by inode."""

    def __init__(self, service: ImageService, config: WriteConfig,
                 replace_on_close: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 stats: MountStats | None = None) -> None:
        self.service = service
        self.config = config
        self.stats = stats if stats is not None else MountStats()
        self.replace_on_close = replace_on_close
        self.clock = clock
        self.files: dict[int, WrittenFile] = {}
        self.budget = SpoolBudget(config.spool_size, reclaim=self._reclaim)
        self.janitor = Janitor(service)
        self._lock = threading.Lock()
        if config.spool_dir:
            os.makedirs(config.spool_dir, exist_ok=True)

    def start_journal(self, directory: str, endpoint: str, tag: str = "") -> list[str]:
        """Keep this mount's unfinished images on disk, and delete those that
        dead mounts of ``endpoint`` left behind (not active ones). Called before
        the mount is ready; the deletions that the server does not take at once
        are retried by the Janitor in the background. Returns the ids of the
        dead mounts' images."""
        journal = Journal(directory, endpoint, tag=tag)
        try:
            journal.open()
        except (OSError, JournalError) as error:
            LOG.warning("no write journal in %s (%s): if this mount dies, images it is "
                        "writing stay behind half-made", directory, error)
            return []
        self.janitor.journal = journal
        leftovers = journal.take_over()
        if leftovers:
            LOG.info("%d image(s) left by mounts of %s that died: deleting those not "
                     "active", len(leftovers), journal.endpoint)
        for left in leftovers:
            self.janitor.discard(left.image_id,
                                 f"{left.name!r}, left by glancefs pid {left.owner.pid}, "
                                 "which died while writing it", unless_active=True)
        return [left.image_id for left in leftovers]

    # -- the table ------------------------------------------------------------------------

    def get(self, inode: int) -> WrittenFile | None:
        return self.files.get(inode)

    def _forget(self, file: WrittenFile) -> None:
        with self._lock:
            if self.files.get(file.inode) is file:
                del self.files[file.inode]
        if file.upload is not None and file.writing:
            file.upload.discard("the file is gone")
        if file.spool is not None:
            file.spool.close()
            file.spool = None

    # -- opening --------------------------------------------------------------------------

    def create(self, inode: int, name: str | None, fh: int, flags: int) -> WrittenFile:
        file = WrittenFile(inode, name)
        # O_TRUNC, as cp asks: an empty file then becomes an empty image at
        # release. touch and truncate(1) do not ask it: their file stays a draft.
        file.handles[fh] = Handle(trunc=bool(flags & os.O_TRUNC))
        with self._lock:
            self.files[inode] = file
        return file

    def adopt(self, inode: int, record: ImageRecord | None) -> WrittenFile:
        """The file of ``inode``: ours, or a new one for the active image ``record``
        (not registered until a change of it is allowed)."""
        file = self.files.get(inode)
        if file is None:
            if record is None:
                raise FsError(errno.ENOENT, "no such image")
            file = WrittenFile(inode, record.name, meta=carried_meta(record),
                               size=record.size or 0, image=record)
        return file

    def open(self, inode: int, record: ImageRecord | None, fh: int, flags: int) -> WrittenFile:
        """Open for writing: a file of ours, or an active image (replace_on_close)."""
        trunc = bool(flags & os.O_TRUNC)
        file = self.adopt(inode, record)
        with file.lock:
            if file.failed is not None or file.unlinked:
                raise FsError(errno.ENOENT, "the file is gone")
            if file.image is not None and not file.writing:
                self._may_change(file, trunc)
            with self._lock:
                self.files.setdefault(inode, file)
            file.handles[fh] = Handle(trunc=trunc)
            file.closed_at = None
            if trunc:
                # Not a change of this handle's: a flush before any write (the
                # shell's dup2 dance of `cat > f`) must not upload an empty file.
                self._truncate(file, 0, None, mark=False)
            return file

    def _may_change(self, file: WrittenFile, trunc: bool) -> None:
        """May the active image behind ``file`` be changed (a new version)?"""
        assert file.image is not None
        # A new version starts from what the image is now (someone may have
        # changed its properties, or protected it, since we saw it).
        file.image = self.service.get(file.image.id)
        file.meta = carried_meta(file.image)
        ours = file.spool is not None and not trunc
        if not ours and not self.replace_on_close:
            raise FsError(errno.EPERM, f"image {file.image.id} is active: its data cannot be "
                          "overwritten (mount option replace_on_close replaces it on close)")
        if file.image.protected:
            raise FsError(errno.EPERM, f"image {file.image.id} is protected: it cannot be "
                          "replaced")
        if not trunc and file.spool is None:
            if not self.config.spool_dir:
                raise FsError(errno.EPERM, "changing an image in place needs its data in the "
                              "spool, and the mount has none (spool_dir); open it with O_TRUNC")
            LOG.info("copying image %s into the spool to change it", file.image.id)
            file.spool = spool_from_image(self.service, file.image, self.config.spool_dir,
                                          self.budget)
            file.size = file.image.size or 0

    # -- data ---------------------------------------------------------------------------------

    def write(self, file: WrittenFile, fh: int, offset: int, data: bytes) -> int:
        with file.lock:
            self._usable(file)
            try:
                written = self._upload_for(file).write(offset, data)
            except BaseException as error:
                self._failed(file, error)
                raise
            self._mark(file, fh)
            file.mtime = time.time()
            return written

    def _failed(self, file: WrittenFile, error: BaseException) -> None:
        """After an error in a write or truncate: if it ended the upload, every
        handle's flush reports it, and a new file is gone."""
        upload = file.upload
        if upload is None or upload.state is not UploadState.FAILED:
            return      # a refused write (ESPIPE, ENOSPC): the upload goes on
        file.upload = None
        if file.image is None:
            file.failed = error
        for handle in file.handles.values():
            handle.error = error

    def truncate(self, file: WrittenFile, size: int, fh: int | None = None
                 ) -> ImageRecord | None:
        """Change the size; returns the new image when that finished an upload
        (a truncate of a path nobody has open: no flush will come)."""
        with file.lock:
            self._usable(file)
            if fh is None and file.image is not None and not file.writing \
                    and size != file.size:
                self._may_change(file, trunc=size == 0)
            with self._lock:
                self.files.setdefault(file.inode, file)
            try:
                self._truncate(file, size, fh)
            except BaseException as error:
                self._failed(file, error)
                raise
            if fh is None and file.writing and not file.handles:
                return self._finish(file)
            return None

    def _truncate(self, file: WrittenFile, size: int, fh: int | None,
                  mark: bool = True) -> None:
        if size == file.current_size:
            return
        file.mtime = time.time()
        if not file.writing and file.image is None:
            file.size = size          # a draft: nothing to send yet
            return
        # A new version (the handle or _may_change said it may be made).
        self._upload_for(file).truncate(size)
        if mark:
            self._mark(file, fh)

    def read(self, file: WrittenFile, offset: int, size: int) -> bytes:
        with file.lock:
            if file.writing and file.upload is not None:
                return file.upload.read(offset, size)
            if file.spool is not None:
                return file.spool.read(offset, size, file.size)
            if file.image is None:
                return bytes(max(0, min(size, file.size - offset)))   # a draft: zeros
            raise FsError(errno.EAGAIN, "read the image through the read path")

    def _mark(self, file: WrittenFile, fh: int | None) -> None:
        handle = file.handles.get(fh) if fh is not None else None
        if handle is not None:
            handle.wrote = True
        else:   # a change without a handle (truncate of a path): any flush sends it
            for handle in file.handles.values():
                handle.wrote = True

    def _usable(self, file: WrittenFile) -> None:
        if file.failed is not None:
            raise file.failed
        if file.unlinked:
            raise FsError(errno.ESTALE, "the file was removed while open")

    def _upload_for(self, file: WrittenFile) -> Upload:
        if file.writing and file.upload is not None:
            return file.upload
        common: dict[str, Any] = {"meta": file.meta, "budget": self.budget,
                                  "janitor": self.janitor, "stats": self.stats}
        if file.image is None:
            upload = Upload(self.service, file.name, self.config, size=file.size, **common)
        elif file.spool is not None:
            upload = Upload(self.service, file.name, self.config, spool=file.spool,
                            size=file.size, resume=True, replaces=file.image.id, **common)
            file.spool = None       # the upload owns it now
        else:
            # A replacement that starts empty (O_TRUNC with replace_on_close).
            upload = Upload(self.service, file.name, self.config, replaces=file.image.id,
                            **common)
        file.upload = upload
        return upload

    # -- closing ------------------------------------------------------------------------------

    def flush(self, file: WrittenFile, fh: int) -> ImageRecord | None:
        """Finish the upload if this handle changed the data; raises its error."""
        with file.lock:
            handle = file.handles.get(fh)
            if handle is not None and handle.error is not None:
                error, handle.error, handle.wrote = handle.error, None, False
                raise error
            if handle is None or not handle.wrote:
                if file.failed is not None and handle is not None:
                    raise file.failed
                return None
            handle.wrote = False
            if not file.writing:
                if file.failed is not None:
                    raise file.failed
                return None
            return self._finish(file)

    def release(self, file: WrittenFile, fh: int) -> ImageRecord | None:
        """The last close of a handle; errors can only be logged here."""
        with file.lock:
            handle = file.handles.pop(fh, None)
            record = None
            try:
                if file.unlinked or (file.failed is not None):
                    return None
                if handle is not None and handle.trunc and file.image is None \
                        and not file.writing:
                    # cp of an empty (or all-hole) file: no write ever came.
                    self._upload_for(file)
                    record = self._finish(file)
                elif not file.handles and file.writing:
                    # A change no flush sent: an O_TRUNC open of an image that
                    # replace_on_close lets be replaced, and no write after it.
                    record = self._finish(file)
            except Exception as error:   # noqa: BLE001 - nobody is there to see it
                LOG.warning("upload of %r at its last close failed: %s", file.name,
                            describe(error))
            finally:
                if not file.handles:
                    file.closed_at = self.clock()
                    if file.unlinked or file.failed is not None:
                        self._forget(file)
            return record

    def _finish(self, file: WrittenFile) -> ImageRecord:
        upload = file.upload
        assert upload is not None
        try:
            if file.tainted is not None:
                upload.discard(file.tainted)
                raise FsError(errno.EIO, f"not made into an image: {file.tainted}")
            record = upload.finish()
        except BaseException as error:
            file.upload = None
            if file.image is None:
                file.failed = error      # a new file: it is gone with its image
            raise
        file.upload = None
        file.image = record
        file.size = record.size or 0
        if upload.converted:
            # The spool holds what was written, not what the server made of it.
            upload.close_spool()
        file.spool = upload.spool       # kept for a reopen (qemu-img), see expire()
        return record

    # -- names and metadata ----------------------------------------------------------------

    def unlink(self, file: WrittenFile) -> None:
        with file.lock:
            if file.image is not None:
                # (Also while a new version is being written: both go.)
                self.service.delete(file.image.id)
            if file.upload is not None and file.writing:
                file.upload.discard("removed while being written")
            file.unlinked = True
            if not file.handles:
                self._forget(file)

    def rename(self, file: WrittenFile, new_name: str | None) -> ImageRecord | None:
        with file.lock:
            record = None
            if file.image is not None:
                record = file.image = self.service.rename(file.image, new_name or "")
            upload = file.upload
            if upload is not None and file.writing:
                upload.name = new_name
                if upload.image_id:
                    self.service.rename(self.service.get(upload.image_id), new_name or "")
            file.name = new_name
            file.mtime = time.time()
            return record

    def set_meta(self, file: WrittenFile, kind: str, key: str, value: bytes | None) -> bool:
        """Record a setxattr/removexattr on a file without an image to change;
        False when the file's image should be changed instead."""
        with file.lock:
            if file.image is not None and not file.writing:
                return False
            meta = file.meta
            if kind == "core":
                if key in FORMAT_FIELDS:
                    started = file.upload is not None and file.upload.image_id
                    if started and value is not None and file.upload is not None and \
                            file.upload.formats.get(key) == parse_field(key, value):
                        return True   # what it was created with (cp -a copies it)
                    if started:
                        raise FsError(errno.EBUSY, f"the upload already started with "
                                      f"{key} decided")
                    if value is None:
                        setattr(meta, key, None)
                    else:
                        setattr(meta, key, parse_field(key, value) or None)
                elif key in SETTABLE_FIELDS:
                    if value is None:
                        raise FsError(errno.EPERM, f"user.glance.{key} cannot be removed")
                    meta.fields[key] = parse_field(key, value)
                else:
                    raise FsError(errno.EPERM, f"user.glance.{key} is managed by the server")
            elif value is None:
                if key not in meta.properties:
                    raise FsError(errno.ENODATA, f"no property {key!r}")
                del meta.properties[key]
            else:
                try:
                    meta.properties[key] = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise FsError(errno.EINVAL, "property values must be UTF-8") from None
            return True

    def note_copied(self, file: WrittenFile, key: str, value: bytes) -> None:
        """An attribute a copy (cp -a) sets that the mount skips: the source's
        hashes are kept, for the image to be checked against them."""
        if key in SOURCE_HASHES:
            with file.lock:
                file.meta.source_hashes[key] = value.decode("utf-8", "replace").strip()

    def pending_record(self, file: WrittenFile) -> ImageRecord:
        """What getfattr shows of a file whose image is not there (yet)."""
        meta = file.meta
        return ImageRecord(
            id=file.image_id or "", name=file.name,
            status="saving" if file.image_id else "queued", size=file.current_size,
            disk_format=meta.disk_format, container_format=meta.container_format,
            min_disk=meta.fields.get("min_disk", 0), min_ram=meta.fields.get("min_ram", 0),
            protected=bool(meta.fields.get("protected", False)),
            visibility=meta.fields.get("visibility"),
            tags=tuple(meta.fields.get("tags", ())), properties=dict(meta.properties))

    # -- the spool's life ----------------------------------------------------------------------

    def expire(self) -> list[int]:
        """Forget closed files past the reopen window (their images stay, as any
        other image); returns their inodes."""
        now = self.clock()
        gone = []
        for file in list(self.files.values()):
            if file.handles or file.writing or file.image is None:
                continue
            if file.closed_at is not None and now - file.closed_at >= REOPEN_WINDOW:
                # Called from the event loop: never wait for a busy file.
                if not file.lock.acquire(blocking=False):
                    continue
                try:
                    if not file.handles and not file.writing:
                        self._forget(file)
                        gone.append(file.inode)
                finally:
                    file.lock.release()
        return gone

    def _reclaim(self, wanted: int) -> None:
        """Spool is short: drop kept spools of closed files, oldest first."""
        closed = sorted((f for f in list(self.files.values())
                         if f.spool is not None and not f.handles and not f.writing),
                        key=lambda f: f.closed_at or 0.0)
        freed = 0
        for file in closed:
            if freed >= wanted:
                break
            if file.lock.acquire(blocking=False):
                try:
                    if file.spool is not None and not file.handles:
                        freed += file.spool.extent
                        file.spool.close()
                        file.spool = None
                finally:
                    file.lock.release()

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """The mount ends: what is not uploaded now never will be. An upload
        thread stuck on a stalled server is waited for ``wait`` seconds at
        most; its image stays in the journal for the next mount."""
        for file in list(self.files.values()):
            if file.writing and file.upload is not None:
                LOG.warning("%r was still being written at unmount: its upload is given up",
                            file.name)
                file.upload.discard("the mount ended", wait=wait)
            elif file.draft:
                LOG.info("%r never received data: no image was made", file.name)
            if file.spool is not None:
                file.spool.close()
        self.files.clear()
        self.janitor.close()


"""The write path's staging unit: one upload of a file written through the mount.

Why it is shaped this way (docs/design.rst, Writing):

* Writes that keep going forward stream into one upload while the writer is
  still writing: they pass through a bounded queue (``write_buffer`` bytes)
  to a worker thread that feeds one HTTP PUT with chunked encoding. Memory
  stays at the queue's bound whatever the file's size; a writer faster than
  the server waits in ``write``.
* Forward gaps (a sparse ``cp`` seeking over holes) and a size extended by
  ``ftruncate`` are sent as zeros, lazily: only when data after them arrives,
  or at close. So ``truncate -s`` then ``dd conv=notrunc`` still streams.
* Every write also lands in a local spool file (``spool_dir``, all files
  together within ``spool_size``). A write into data already sent (qemu-img,
  editors: "going back") stops the stream; at close the image is uploaded
  again, from the spool. Rewriting sent bytes with the same bytes is not
  going back. Without a spool, or once a file outgrew the spool's limit
  (a sequential writer then simply goes on without it), going back is
  refused with ESPIPE ("Illegal seek": the file is a stream now).
* The image is created once the first 64 KiB (or the end) are known, so
  ``disk_format`` comes from the data's own signature, then the extension;
  a ``disk_format`` set before the data arrived (``user.glance.disk_format``)
  wins. ``container_format`` is ``bare`` (``ova`` by signature).
* :meth:`Upload.finish` sends the rest, waits for ``active`` and compares the
  server's size, checksum and os_hash_value with what was sent. Any failure
  (415, 413, a dead server, a mismatch) deletes the half-made image (the
  :class:`Janitor` keeps trying while the server cannot be reached) and
  raises the error, so ``close()`` and ``cp`` fail.
* The Janitor's list is in memory, so a mount that dies mid-upload would
  take it along: with a write journal (glancefs.fs.write.journal) each image is
  also recorded on disk from its creation until it is verified or deleted,
  and the next mount of the endpoint deletes what is left.

Everything here blocks and is thread-safe; the filesystem calls it from
trio worker threads, the tests call it directly.
"""
from __future__ import annotations

import collections
import enum
import errno
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from glancefs.api import exceptions as exc
from glancefs.api.formats import SNIFF_BYTES, guess_formats
from glancefs.api.service import DataSource, ImageRecord, ImageService
from glancefs.fs.errors import FsError, describe
from glancefs.fs.stats import MountStats
from glancefs.fs.write.janitor import Janitor
from glancefs.fs.write.spool import CHUNK, ZEROS, Spool, SpoolBudget, SpoolFull

LOG = logging.getLogger("glancefs.fs.write")

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
# Statuses after which waiting for "active" is pointless.
STOP_WAIT = 60.0   # seconds a stopped upload's thread is waited for
DEAD_STATUSES = frozenset({"killed", "deleted", "pending_delete", "deactivated"})


@dataclass
class WriteConfig:
    spool_dir: str | None = "/var/tmp"   # None: no spool (going back is refused)
    spool_size: int = 8 * GiB            # all spool files of the mount together
    write_buffer: int = 8 * MiB          # queue between writes and the upload, per file
    active_timeout: float = 600.0        # wait this long for "active" after the data
    poll_interval: float = 0.25
    upload: str = "direct"               # direct, import or auto (see method())
    stores: tuple[str, ...] = ()         # where an import puts the image
    all_stores: bool = False
    allow_failure: bool = True           # with stores: one store that took it is enough
    _method: str | None = field(default=None, repr=False)

    def method(self, service: ImageService) -> str:
        """How this mount's uploads go: ``direct`` (PUT .../file) or ``import``
        (PUT .../stage, then the glance-direct import). ``auto`` is decided once,
        at the first upload (README.rst, Writing, says the rule): import when the
        server offers glance-direct and the mount names stores (only an import
        puts an image in several stores), else direct."""
        if self._method is not None:
            return self._method
        several = self.all_stores or len(self.stores) > 1
        if self.upload == "direct":
            if several:
                raise FsError(errno.EINVAL, "a direct upload goes to one store: "
                              "stores=A:B and all_stores need upload=import")
            method = "direct"
        elif self.upload == "auto" and not (self.stores or self.all_stores):
            # Nothing asks for an import: no request to find out whether one is offered
            # (a direct upload the server refuses switches over, see Upload._import_instead).
            method = "direct"
        else:
            offered = "glance-direct" in service.import_methods()
            if self.upload == "import" and not offered:
                raise FsError(errno.EOPNOTSUPP, "upload=import: the server offers no "
                              "glance-direct import (see glancefs import-info)")
            if self.upload == "auto" and several and not offered:
                raise FsError(errno.EOPNOTSUPP, "stores=A:B and all_stores need the "
                              "glance-direct import, which the server does not offer")
            method = "import" if self.upload == "import" or (
                offered and (self.stores or self.all_stores)) else "direct"
            LOG.info("uploads go %s (upload=%s; the server %s glance-direct)",
                     "through the import workflow" if method == "import"
                     else "directly (PUT .../file)", self.upload,
                     "offers" if offered else "does not offer")
        self._method = method
        return method


@dataclass
class PendingMeta:
    """What a user set on a file before its image existed (setxattr), applied
    when the image is created (formats, properties) or once it is active
    (fields such as protected, which would stop a failed upload from being
    cleaned up)."""
    disk_format: str | None = None
    container_format: str | None = None
    properties: dict[str, str] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    # A copy's source hashes (cp -a: user.glance.checksum, os_hash_*), which the
    # image must have once active: the copy is checked end to end.
    source_hashes: dict[str, str] = field(default_factory=dict)

    def copy(self) -> PendingMeta:
        return PendingMeta(self.disk_format, self.container_format, dict(self.properties),
                           dict(self.fields), dict(self.source_hashes))


# -- the bounded queue between writes and the upload thread ----------------------------


class _Abandoned(Exception):
    """The stream was stopped on purpose (a restart or a discard); not an error."""


class ChunkQueue:
    """Chunks of bytes with a bound on the bytes held; ``None`` ends the stream.

    ``put`` blocks while the queue holds ``limit`` bytes (one chunk always
    fits, however large). ``close`` wakes both sides: ``put`` and ``get``
    then raise :class:`_Abandoned`.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._items: collections.deque[bytes | None] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self.closed = False
        self.ended = False     # the end (None) was put: nothing more will come

    def put(self, chunk: bytes | None) -> None:
        size = len(chunk) if chunk is not None else 0
        with self._cond:
            while not self.closed and self._bytes and self._bytes + size > self.limit:
                self._cond.wait()
            if self.closed:
                raise _Abandoned()
            self._items.append(chunk)
            self._bytes += size
            if chunk is None:
                self.ended = True
            self._cond.notify_all()

    def get(self) -> bytes | None:
        with self._cond:
            while not self._items and not self.closed:
                self._cond.wait()
            if self.closed:
                raise _Abandoned()
            chunk = self._items.popleft()
            if chunk is not None:
                self._bytes -= len(chunk)
            self._cond.notify_all()
            return chunk

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._items.clear()
            self._bytes = 0
            self._cond.notify_all()

    @property
    def held(self) -> int:
        return self._bytes


# -- one upload ------------------------------------------------------------------------


class UploadState(enum.Enum):
    """The life of one upload: OPEN (written to) -> FINISHING (close sends the
    rest and checks the image) -> FINISHED (active, verified); any failure, or
    giving up, -> FAILED (the half-made image is deleted)."""
    OPEN = "open"
    FINISHING = "finishing"
    FINISHED = "finished"
    FAILED = "failed"


class Upload:
    """One version of a file written through the mount, from the first write
    to an active, verified image (or to nothing at all).

    ``spool`` may be given (the file's previous content, ``size`` bytes long,
    with ``resume=True``): the data then goes up from the spool at
    :meth:`finish`, as after going back. ``replaces`` is the id of an image
    the new one replaces: deleted only after the new one is active and
    verified.
    """

    def __init__(self, service: ImageService, name: str | None, config: WriteConfig, *,
                 meta: PendingMeta | None = None, spool: Spool | None = None,
                 budget: SpoolBudget | None = None, janitor: Janitor | None = None,
                 size: int = 0, resume: bool = False, replaces: str | None = None,
                 stats: MountStats | None = None) -> None:
        self.service = service
        self.name = name
        self.config = config
        self.stats = stats if stats is not None else MountStats()
        self.meta = meta if meta is not None else PendingMeta()
        self.janitor = janitor or Janitor(service)
        self.replaces = replaces
        if spool is None and config.spool_dir:
            try:
                spool = Spool(config.spool_dir, budget)
            except OSError as error:
                LOG.warning("no spool in %s (%s): writes must go forward", config.spool_dir,
                            error)
        if resume and spool is None:
            raise ValueError("resuming needs the spool that holds the data")
        self.spool = spool
        self.size = size               # the file's size (writes and ftruncate)
        self.stream_pos = 0            # bytes handed to the stream (all in order)
        self.streaming = not resume    # False: upload from the spool at finish
        self.state = UploadState.OPEN
        self.image_id: str | None = None    # the image being written
        self.formats: dict[str, str] = {}       # the formats it was created with
        self.record: ImageRecord | None = None
        self.why_restart: str | None = None
        self._lock = threading.RLock()
        self._queue = ChunkQueue(config.write_buffer)
        self._thread: threading.Thread | None = None
        self._result: tuple[ImageRecord, DataSource] | None = None
        self._error: BaseException | None = None
        self._created_props: dict[str, str] = {}
        self._created_disk: str | None = None
        self._direct_refused: exc.HTTPForbidden | None = None   # see _import_instead
        self.imported = False          # the data went through the import workflow
        self.converted = False         # ... and the server converted it
        if self.spool is not None and not resume:
            self.spool.truncate(0)

    # -- what the filesystem calls -------------------------------------------------------

    def write(self, offset: int, data: bytes) -> int:
        with self._lock:
            self._usable()
            end = offset + len(data)
            if self.streaming and offset < self.stream_pos:
                overlap = min(end, self.stream_pos)
                if self.spool is None:
                    raise FsError(errno.ESPIPE, self._no_spool(
                        f"a write at offset {offset} goes back into data already sent"
                        f" ({self.stream_pos} bytes)"))
                if self.spool.read(offset, overlap - offset, self.size) != data[:overlap - offset]:
                    self._restart(f"a write at offset {offset} went back into data already "
                                  "sent")
            if self.spool is not None:
                try:
                    self.spool.write(offset, data)
                except (SpoolFull, OSError) as error:
                    if not self.streaming:
                        raise FsError(errno.ENOSPC, f"the spool cannot hold this file, which "
                                      f"must be uploaded from it: {error}") from None
                    self._drop_spool(error)
            if self.streaming and end > self.stream_pos:
                skip = max(0, self.stream_pos - offset)
                self._zeros_to(offset)
                self._push(data[skip:] if skip else data)
            self.size = max(self.size, end)
            return len(data)

    def truncate(self, size: int) -> None:
        with self._lock:
            self._usable()
            if size == 0 and (self.stream_pos or not self.streaming):
                # Everything before is gone: start again, streaming.
                self._stop_stream("truncated to 0")
                self._queue = ChunkQueue(self.config.write_buffer)
                self._thread = None
                self._result = self._error = self._direct_refused = None
                self.streaming = True
                self.stream_pos = 0
                self.why_restart = None
            elif self.streaming and size < self.stream_pos:
                if self.spool is None:
                    raise FsError(errno.ESPIPE, self._no_spool(
                        f"cannot shrink to {size} bytes: {self.stream_pos} were already sent"))
                self._restart(f"truncated to {size} bytes, below the {self.stream_pos} "
                              "bytes already sent")
            if self.spool is not None:
                self.spool.truncate(size)
            self.size = size

    def read(self, offset: int, size: int) -> bytes:
        with self._lock:
            if self.spool is None:
                raise FsError(errno.ESPIPE, self._no_spool(
                    "the data being written cannot be read back"))
            return self.spool.read(offset, size, self.size)

    def finish(self) -> ImageRecord:
        """Upload what is left, wait for active and verify; raises (after
        deleting the half-made image) on any failure."""
        with self._lock:
            self._usable()
            self.state = UploadState.FINISHING
            try:
                if self.streaming:
                    self._zeros_to(self.size)
                    self._start_stream()
                    self._queue.put(None)
                    assert self._thread is not None
                    self._thread.join()
                    if self._error is not None:
                        raise self._error
                    if self._direct_refused is not None:
                        record, source = self._stage_refused()
                    else:
                        assert self._result is not None
                        record, source = self._result
                else:
                    record, source = self._upload_from_spool()
                record = self._settle(record, source)
                record = self._apply_meta(record)
            except BaseException as error:
                self._fail(error)
                raise
            self.state = UploadState.FINISHED
            self.record = record
        self.stats.add(record.id, record.name, uploads=1, upload_bytes=self.size)
        self.janitor.settled(record.id)
        if self.replaces and self.replaces != record.id:
            self.janitor.discard(self.replaces, f"replaced by {record.id}")
        LOG.info("uploaded %r as image %s: %d bytes, %s/%s, checksum %s", self.name, record.id,
                 record.size or 0, record.disk_format, record.container_format, record.checksum)
        return record

    def discard(self, why: str = "discarded", wait: float = STOP_WAIT) -> None:
        """Give up: stop the stream, delete the half-made image, drop the spool.
        ``wait``: how long the stream's thread may take to stop (the mount's
        end waits less: an upload stuck on a stalled server is left to the
        journal)."""
        # Before the lock: a writer waiting for room in the queue holds it, and
        # closing the queue is what wakes it.
        self._queue.close()
        with self._lock:
            if self.state in (UploadState.FINISHED, UploadState.FAILED):
                return
            self.state = UploadState.FAILED
            self._stop_stream(why, wait)
            if self.spool is not None:
                self.spool.close()

    def close_spool(self) -> None:
        with self._lock:
            if self.spool is not None:
                self.spool.close()
                self.spool = None

    @property
    def error(self) -> BaseException | None:
        return self._error

    # -- the stream ------------------------------------------------------------------------

    def _usable(self) -> None:
        if self.state is UploadState.FINISHED:
            raise FsError(errno.EBADF, "this upload is finished")
        if self.state is not UploadState.OPEN:
            if self._error is not None:
                raise self._error   # the same errno for every later call (flush after write)
            raise FsError(errno.EIO, "this upload was given up")
        if self._error is not None:
            # The stream died (the server refused or vanished): fail the writer now.
            error = self._error
            self._fail(error)
            raise error

    def _push(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._start_stream()
        try:
            self._queue.put(chunk)
        except _Abandoned:
            if self._error is not None:
                error = self._error
                self._fail(error)
                raise error from None
            raise FsError(errno.EIO, "the upload stream was stopped") from None
        self.stream_pos += len(chunk)

    def _zeros_to(self, offset: int) -> None:
        while self.stream_pos < offset:
            n = min(CHUNK, offset - self.stream_pos)
            self._push(ZEROS if n == CHUNK else ZEROS[:n])

    def _start_stream(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._stream_main, args=(self._queue,),
                                            name=f"upload-{(self.name or '')[:16]}",
                                            daemon=True)
            self._thread.start()

    def _stream_main(self, chunks: ChunkQueue) -> None:
        ended = False   # the end of the data was taken from the queue

        def produce() -> Iterator[bytes]:
            nonlocal ended
            while (chunk := chunks.get()) is not None:
                yield chunk
            ended = True

        image_id = None
        try:
            source = DataSource(produce(), size=None)
            record = self._create(source.peek(SNIFF_BYTES))
            image_id = record.id
            if chunks.closed:
                raise _Abandoned()
            if chunks.ended and self.stream_pos:
                # The file was closed before its upload began (a small file: the create
                # waited for its first 64 KiB): its size is known, and the server is
                # told (x-openstack-image-size), as for an upload from the spool. Not
                # an empty file: Images v1 takes a size of 0 for "no data yet" and
                # leaves the image queued.
                source.size = self.stream_pos
            try:
                record = self._send(record.id, source, source.size)
            except exc.HTTPForbidden as refused:
                if not self._import_instead(refused):
                    raise
                # The data is in the spool, and goes up from there at close: take what
                # the writer still sends, so it writes on at full speed.
                self._direct_refused = refused
                while not ended and chunks.get() is not None:
                    pass
                return
            self._result = (record, source)
        except _Abandoned:
            if image_id is not None:
                self.janitor.discard(image_id, "upload restarted or given up")
        except BaseException as error:  # noqa: BLE001 - handed to the writer
            if chunks.closed and image_id is not None:
                self.janitor.discard(image_id, "upload restarted or given up")
                return
            self._error = error
            chunks.close()   # wake a writer waiting for room

    def _stop_stream(self, why: str, wait: float = STOP_WAIT) -> None:
        """Stop the running stream; its image is deleted by its thread."""
        self._queue.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=wait)
            if thread.is_alive() and self.image_id is not None and self._result is None:
                # Still stuck sending to a server that stopped reading: delete
                # its image from here (or leave it to the janitor and journal).
                self.janitor.discard(self.image_id, why)
        if self._result is not None:   # the stream had already finished
            self.janitor.discard(self._result[0].id, why)
            self._result = None
        if self._error is not None and self.image_id is not None:
            self.janitor.discard(self.image_id, why)
        self.image_id = None

    def _restart(self, why: str) -> None:
        LOG.info("%r: %s; the image will be uploaded from the spool at close", self.name, why)
        self.stats.add(None, upload_restarts=1)   # its image is deleted: totals only
        self.why_restart = why
        self._stop_stream(why)
        self._error = None
        self.streaming = False

    def _drop_spool(self, error: BaseException) -> None:
        LOG.warning("%r: no more spool (%s); the file must now be written in order",
                    self.name, error)
        assert self.spool is not None
        self.spool.close()
        self.spool = None

    def _no_spool(self, what: str) -> str:
        if self.config.spool_dir:
            return f"{what}, and this file outgrew the spool (spool_size)"
        return f"{what}, and the mount has no spool (spool_dir)"

    # -- the image ---------------------------------------------------------------------------

    def _create(self, head: bytes) -> ImageRecord:
        meta = self.meta
        disk, container = meta.disk_format, meta.container_format
        how = "user.glance.disk_format"
        if not disk or not container:
            guess_disk, guess_container, how = guess_formats(head, self.name)
            disk, container = disk or guess_disk, container or guess_container
        self._created_props = dict(meta.properties)
        # The id is chosen here and journaled before the image exists, so a crash at any
        # moment after the create leaves nothing the next mount does not know of (an id
        # that was never created is simply not found then).
        self._created_disk = disk
        chosen = str(uuid.uuid4())
        self.janitor.track(chosen, self.name)
        try:
            record = self.service.create(self.name, disk, container,
                                         properties=self._created_props, image_id=chosen)
        except BaseException as error:
            if isinstance(error, exc.ClientException) and error.code and error.code < 500:
                self.janitor.settled(chosen)   # refused: nothing was made
            else:
                # No answer (a connection that broke, a timeout): the server may have
                # made the image all the same.
                self.janitor.discard(chosen, f"its create was not answered ({error})")
            raise
        if record.id != chosen:
            # A server that picks its own ids: recorded now, before any data is sent.
            self.janitor.track(record.id, self.name)
            self.janitor.settled(chosen)
        self.image_id = record.id
        self.formats = {"disk_format": disk, "container_format": container}
        LOG.info("created image %s for %r: disk_format %s (from the %s), container_format %s",
                 record.id, self.name, disk, how if how != "default" else "default, no "
                 "signature or extension", container)
        return record

    def _upload_from_spool(self) -> tuple[ImageRecord, DataSource]:
        assert self.spool is not None
        record = self._create(self.spool.read(0, SNIFF_BYTES, self.size))
        source = DataSource(self.spool.chunks(self.size), size=self.size)
        try:
            return self._send(record.id, source, self.size), source
        except exc.HTTPForbidden as refused:
            if not self._import_instead(refused):
                raise
        source = DataSource(self.spool.chunks(self.size), size=self.size)
        return self._send(record.id, source, self.size), source

    def _import_instead(self, refused: exc.HTTPForbidden) -> bool:
        """upload=auto, and the server refused a direct upload (its policy): every
        upload of the mount goes through the import from now on, when the server
        offers glance-direct and this file's data is all in the spool."""
        config = self.config
        if config.upload != "auto" or self.spool is None or self.imported:
            return False
        if "glance-direct" not in self.service.import_methods():
            return False
        config._method = "import"
        LOG.warning("the server refused a direct upload (%s): uploads go through the "
                    "import workflow from now on (upload=auto)", describe(refused))
        return True

    def _stage_refused(self) -> tuple[ImageRecord, DataSource]:
        """The file whose direct upload was refused: staged into the same (still
        queued) image from the spool, then imported."""
        assert self._direct_refused is not None and self.image_id is not None
        if self.spool is None:
            raise self._direct_refused   # the spool was dropped: nothing to send again
        source = DataSource(self.spool.chunks(self.size), size=self.size)
        return self._send(self.image_id, source, self.size), source

    def _send(self, image_id: str, source: DataSource, size: int | None) -> ImageRecord:
        """The data into the image: a direct upload, or staged then imported (where
        the server may convert it and put it in several stores)."""
        config = self.config
        if config.method(self.service) == "direct":
            store = config.stores[0] if config.stores else None
            kwargs: dict[str, Any] = {"store": store} if store else {}
            return self.service.upload(image_id, source, size=size, filename=self.name,
                                       **kwargs)
        self.service.stage(image_id, source, size=size)
        self.imported = True
        self.service.start_import(image_id, "glance-direct", stores=config.stores,
                                  all_stores=config.all_stores,
                                  allow_failure=config.allow_failure)
        LOG.info("image %s: %d bytes staged, import started%s", image_id, source.sent,
                 f" to {', '.join(config.stores)}" if config.stores else
                 " to every store" if config.all_stores else "")
        return self.service.get(image_id)

    def _settle(self, record: ImageRecord, source: DataSource) -> ImageRecord:
        """Wait for active, then check that the server holds what was written."""
        deadline = time.monotonic() + self.config.active_timeout
        # An import to several stores makes the image active with the first; cp returns
        # once every store asked for has it (or failed it).
        while record.status != "active" or (self.imported and record.importing_to_stores):
            if self.imported and (record.status == "queued" or record.status in DEAD_STATUSES):
                # A failed import puts the image back to queued: its task says why.
                raise self.service.import_failure(record.id)
            if record.status in DEAD_STATUSES:
                raise FsError(errno.EIO, f"image {record.id} is {record.status!r} after upload")
            if time.monotonic() > deadline:
                raise FsError(errno.ETIMEDOUT, f"image {record.id} still {record.status!r} "
                              f"{self.config.active_timeout:.0f}s after upload")
            time.sleep(self.config.poll_interval)
            record = self.service.get(record.id)
        if source.sent != self.size:
            raise FsError(errno.EIO, f"sent {source.sent} bytes of a {self.size}-byte file")
        if self.imported and record.failed_import:
            LOG.warning("image %s: the import failed in store(s) %s (allow_failure: the "
                        "image is active in %s)", record.id, record.failed_import,
                        record.stores)
        if self.imported and record.disk_format != self._created_disk:
            # The server converted the data (image_conversion): other bytes, other
            # hashes; what was sent was checked by the conversion reading it.
            self.converted = True
            LOG.info("image %s: converted by the server from %s to %s: %d bytes became %d",
                     record.id, self._created_disk, record.disk_format, self.size,
                     record.size or 0)
            return record
        if record.size is not None and record.size != self.size:
            raise exc.HashMismatch(f"image {record.id}: the server stored {record.size} bytes, "
                                   f"{self.size} were written")
        source.check(record.id, record.checksum)
        self._check_source_hashes(record)
        return record

    def _check_source_hashes(self, record: ImageRecord) -> None:
        """A copy (cp -a) told the source's hashes: the image must have them."""
        copied = self.meta.source_hashes
        pairs = [("checksum", record.checksum, copied.get("checksum"))]
        if copied.get("os_hash_algo", record.os_hash_algo) == record.os_hash_algo:
            pairs.append(("os_hash_value", record.os_hash_value, copied.get("os_hash_value")))
        for what, mine, theirs in pairs:
            if theirs and mine and mine != theirs:
                raise exc.HashMismatch(f"image {record.id}: its {what} {mine} is not the "
                                       f"source's {theirs}: the copy differs from its source")

    def _apply_meta(self, record: ImageRecord) -> ImageRecord:
        """Fields and the properties changed since the image was created, in
        one request; protected last of all, once nothing else can fail."""
        meta = self.meta
        props = {k: v for k, v in meta.properties.items() if self._created_props.get(k) != v}
        removals = [k for k in self._created_props if k not in meta.properties]
        if not (meta.fields or props or removals):
            return record
        return self.service.update(record, meta.fields, props, removals)

    def _fail(self, error: BaseException) -> None:
        if self.state is UploadState.FAILED:
            return
        self.state = UploadState.FAILED
        self._error = self._error or error
        self._queue.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=60)
        image_id = self.image_id or (self._result[0].id if self._result else None)
        self.stats.add(image_id, self.name, upload_failures=1)
        if image_id is not None:
            self.janitor.discard(image_id, f"its upload failed ({type(error).__name__})")
        self.image_id = None
        if self.spool is not None:
            self.spool.close()
            self.spool = None

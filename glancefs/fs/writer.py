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
  take it along: with a write journal (glancefs.fs.journal) each image is
  also recorded on disk from its creation until it is verified or deleted,
  and the next mount of the endpoint deletes what is left.

Everything here blocks and is thread-safe; the filesystem calls it from
trio worker threads, the tests call it directly.
"""
from __future__ import annotations

import collections
import errno
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from glancefs.api import exceptions as exc
from glancefs.api.formats import SNIFF_BYTES, guess_formats
from glancefs.api.service import DataSource, ImageRecord, ImageService
from glancefs.fs.errors import FsError, describe
from glancefs.fs.journal import Journal
from glancefs.fs.stats import MountStats

LOG = logging.getLogger("glancefs.fs.writer")

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
CHUNK = 1 * MiB
ZEROS = bytes(CHUNK)
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

    def copy(self) -> PendingMeta:
        return PendingMeta(self.disk_format, self.container_format, dict(self.properties),
                           dict(self.fields))


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


# -- the spool -------------------------------------------------------------------------


class SpoolFull(Exception):
    """The mount's spool limit would be exceeded."""


class SpoolBudget:
    """Bytes of spool the whole mount may use. ``reclaim(n)`` (set by the
    filesystem) is asked to free spool kept for files already uploaded
    before a reservation fails."""

    def __init__(self, limit: int, reclaim: Callable[[int], None] | None = None) -> None:
        self.limit = limit
        self.used = 0
        self.reclaim = reclaim
        self._lock = threading.Lock()

    def reserve(self, size: int) -> bool:
        for attempt in range(2):
            with self._lock:
                if self.used + size <= self.limit:
                    self.used += size
                    return True
                short = self.used + size - self.limit
            if attempt == 0 and self.reclaim is not None:
                self.reclaim(short)
        return False

    def release(self, size: int) -> None:
        with self._lock:
            self.used = max(0, self.used - size)


class Spool:
    """A local copy of one file's data: an unlinked sparse temporary file.

    ``extent`` is the spool file's length, which is what it holds against
    the budget (holes included: the budget is a promise, not a measure).
    """

    def __init__(self, directory: str, budget: SpoolBudget | None = None) -> None:
        self.budget = budget
        # Closed by close(): the spool lives as long as its file is written.
        self._file = tempfile.TemporaryFile(dir=directory, prefix="glancefs-spool-")  # noqa: SIM115
        self.fd = self._file.fileno()
        self.extent = 0
        self.closed = False

    def write(self, offset: int, data: bytes) -> None:
        """Raises SpoolFull past the budget, OSError when the disk says no."""
        end = offset + len(data)
        grow = end - self.extent
        if grow > 0:
            if self.budget is not None and not self.budget.reserve(grow):
                raise SpoolFull(f"the spool limit ({self.budget.limit} bytes) is reached")
            self.extent = end
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], offset + done)

    def read(self, offset: int, size: int, file_size: int) -> bytes:
        """``size`` bytes at ``offset`` of a file of ``file_size`` bytes whose
        tail beyond the spool's extent is zeros."""
        end = min(offset + size, file_size)
        if end <= offset:
            return b""
        data = os.pread(self.fd, end - offset, offset) if offset < self.extent else b""
        if len(data) < end - offset:
            data += bytes(end - offset - len(data))
        return data

    def chunks(self, size: int, chunk: int = CHUNK) -> Iterator[bytes]:
        """The file's first ``size`` bytes in order."""
        offset = 0
        while offset < size:
            n = min(chunk, size - offset)
            if offset >= self.extent:
                yield ZEROS[:n] if n < CHUNK else ZEROS
            else:
                yield self.read(offset, n, size)
            offset += n

    def truncate(self, size: int) -> None:
        """Shrink (growing needs no disk: reads past the extent are zeros)."""
        if size < self.extent:
            os.ftruncate(self.fd, size)
            if self.budget is not None:
                self.budget.release(self.extent - size)
            self.extent = size

    def fill(self, chunks: Iterator[bytes]) -> int:
        """Append ``chunks`` from offset 0 (a download of the image being
        replaced); returns the bytes written."""
        offset = 0
        for data in chunks:
            self.write(offset, data)
            offset += len(data)
        return offset

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.budget is not None:
                self.budget.release(self.extent)
            self.extent = 0
            self._file.close()


# -- cleaning up -----------------------------------------------------------------------


def _retryable(error: BaseException) -> bool:
    return isinstance(error, (exc.CommunicationError, exc.HTTPServerError,
                              exc.HTTPTooManyRequests, exc.HTTPConflict, exc.HTTPUnauthorized))


@dataclass
class _Job:
    why: str
    unless_active: bool = False   # check first: an image that is active stays


class Janitor:
    """Deletes images this mount (or a dead mount before it) left half-made.

    A failed upload's image is deleted at once; when the server cannot be
    reached (it died mid-upload), the id is kept and deletion retried in a
    background thread every ``interval`` seconds until the server answers,
    so no queued or saving leftover survives the server's return.

    With a :class:`~glancefs.fs.journal.Journal`, the images of uploads in
    progress (:meth:`track`) and those waiting for deletion are also on disk,
    so they outlive this process: the next mount of the endpoint deletes them.
    """

    def __init__(self, service: ImageService, interval: float = 1.0,
                 journal: Journal | None = None) -> None:
        self.service = service
        self.interval = interval
        self.journal = journal
        self._pending: dict[str, _Job] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def track(self, image_id: str, name: str | None) -> None:
        """An image is being created for an upload: on disk before it exists."""
        if self.journal is not None:
            self.journal.add(image_id, name)

    def settled(self, image_id: str) -> None:
        """Nothing to clean up: the image is active and verified, deleted, gone, or
        was never made."""
        if self.journal is not None:
            self.journal.remove(image_id)

    def discard(self, image_id: str, why: str, unless_active: bool = False) -> bool:
        """Delete now if possible (True), else keep trying in the background.
        ``unless_active``: an image that is active by now is left alone (the
        leftovers of a dead mount, whose state this mount never saw)."""
        job = _Job(why, unless_active)
        if self._attempt(image_id, job, first=True):
            return True
        with self._cond:
            self._pending[image_id] = job
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="glancefs-janitor",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return False

    def _attempt(self, image_id: str, job: _Job, first: bool) -> bool:
        """One try; True when done with the image (deleted, gone, left alone,
        or refused for good), False to try again."""
        why = job.why
        try:
            if job.unless_active:
                status = self.service.get(image_id).status
                if status == "active":
                    LOG.info("image %s (%s) is active: left alone", image_id, why)
                    self.settled(image_id)
                    return True
                why = f"{why}; it was {status}"
            self.service.delete(image_id)
        except exc.HTTPNotFound:
            if job.unless_active:
                LOG.info("image %s (%s) no longer exists", image_id, why)
            self.settled(image_id)
            return True
        except exc.ClientException as error:
            if _retryable(error):
                if first:
                    LOG.warning("image %s (%s) not deleted yet, will retry: %s", image_id,
                                why, describe(error))
                return False
            LOG.error("image %s (%s) could not be deleted: %s", image_id, why, describe(error))
            self.settled(image_id)
            return True    # a refusal that retrying cannot change
        if first:
            LOG.info("deleted image %s (%s)", image_id, why)
        else:
            LOG.info("deleted image %s (%s), left behind by a failed upload", image_id, why)
        self.settled(image_id)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                self._cond.wait(self.interval)
                todo = dict(self._pending)
            for image_id, job in todo.items():
                if not self._attempt(image_id, job, first=False):
                    continue
                with self._cond:
                    self._pending.pop(image_id, None)
                    self._cond.notify_all()

    @property
    def pending(self) -> set[str]:
        with self._cond:
            return set(self._pending)

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, self.interval))
        return True

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self.journal is not None:
            left = self.journal.close()
            if left:
                LOG.warning("images left half-made, kept in the write journal %s for the "
                            "next mount of this endpoint to delete: %s", self.journal.path,
                            ", ".join(left))
        elif self._pending:
            LOG.warning("images left half-made (delete them by hand): %s",
                        ", ".join(sorted(self._pending)))


# -- one upload ------------------------------------------------------------------------


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
        self.state = "open"            # open, finishing, finished, failed
        self.image_id: str | None = None    # the image being written
        self.record: ImageRecord | None = None
        self.why_restart: str | None = None
        self._lock = threading.RLock()
        self._queue = ChunkQueue(config.write_buffer)
        self._thread: threading.Thread | None = None
        self._result: tuple[ImageRecord, DataSource] | None = None
        self._error: BaseException | None = None
        self._created_props: dict[str, str] = {}
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
                self._result = self._error = None
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
            self.state = "finishing"
            try:
                if self.streaming:
                    self._zeros_to(self.size)
                    self._start_stream()
                    self._queue.put(None)
                    assert self._thread is not None
                    self._thread.join()
                    if self._error is not None:
                        raise self._error
                    assert self._result is not None
                    record, source = self._result
                else:
                    record, source = self._upload_from_spool()
                record = self._settle(record, source)
                record = self._apply_meta(record)
            except BaseException as error:
                self._fail(error)
                raise
            self.state = "finished"
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
            if self.state in ("finished", "failed"):
                return
            self.state = "failed"
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
        if self.state == "finished":
            raise FsError(errno.EBADF, "this upload is finished")
        if self.state != "open":
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
        def produce() -> Iterator[bytes]:
            while (chunk := chunks.get()) is not None:
                yield chunk

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
            record = self.service.upload(record.id, source, size=source.size,
                                         filename=self.name)
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
        LOG.info("created image %s for %r: disk_format %s (from the %s), container_format %s",
                 record.id, self.name, disk, how if how != "default" else "default, no "
                 "signature or extension", container)
        return record

    def _upload_from_spool(self) -> tuple[ImageRecord, DataSource]:
        assert self.spool is not None
        record = self._create(self.spool.read(0, SNIFF_BYTES, self.size))
        source = DataSource(self.spool.chunks(self.size), size=self.size)
        record = self.service.upload(record.id, source, size=self.size, filename=self.name)
        return record, source

    def _settle(self, record: ImageRecord, source: DataSource) -> ImageRecord:
        """Wait for active, then check that the server holds what was written."""
        deadline = time.monotonic() + self.config.active_timeout
        while record.status != "active":
            if record.status in DEAD_STATUSES:
                raise FsError(errno.EIO, f"image {record.id} is {record.status!r} after upload")
            if time.monotonic() > deadline:
                raise FsError(errno.ETIMEDOUT, f"image {record.id} still {record.status!r} "
                              f"{self.config.active_timeout:.0f}s after upload")
            time.sleep(self.config.poll_interval)
            record = self.service.get(record.id)
        if source.sent != self.size:
            raise FsError(errno.EIO, f"sent {source.sent} bytes of a {self.size}-byte file")
        if record.size is not None and record.size != self.size:
            raise exc.HashMismatch(f"image {record.id}: the server stored {record.size} bytes, "
                                   f"{self.size} were written")
        source.check(record.id, record.checksum)
        return record

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
        if self.state == "failed":
            return
        self.state = "failed"
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


def spool_from_image(service: ImageService, record: ImageRecord, directory: str,
                     budget: SpoolBudget | None) -> Spool:
    """A spool holding an active image's data (to change it with replace-on-close)."""
    spool = Spool(directory, budget)
    try:
        written = spool.fill(service.read(record))
    except BaseException:
        spool.close()
        raise
    if record.size is not None and written != record.size:
        spool.close()
        raise exc.InvalidResponse(f"image {record.id}: read {written} of {record.size} bytes")
    return spool

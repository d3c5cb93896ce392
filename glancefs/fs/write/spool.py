"""The spool: a local copy of a file being written (``spool_dir``).

Why: a writer that goes back (qemu-img, editors) into data already streamed
to the server can still produce the right image, uploaded again from here at
close; all spools together stay within ``spool_size`` (:class:`SpoolBudget`).
Blocking and thread-safe.
"""
from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator

from glancefs.api import exceptions as exc
from glancefs.api.buffers import Chunk
from glancefs.api.service import ImageRecord, ImageService

CHUNK = 1024 * 1024    # unit of the spool's reads, and of the zeros of gaps
ZEROS = bytes(CHUNK)


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

    def write(self, offset: int, data: Chunk) -> None:
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

    def fill(self, chunks: Iterator[Chunk]) -> int:
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

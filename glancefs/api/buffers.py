"""Receive buffers used again instead of allocated for every chunk.

Why it is shaped this way:

* A download read as ``raw.read(1 MiB)`` gets a new 1 MiB object per chunk.
  Where chunks are freed in the thread that made them (the CLI writing a
  file) malloc hands the same memory back at once. In the mount they are not:
  blocks arrive in fetch threads, wait in the block cache and the hashing
  queue, and are freed later in other threads, so malloc gives fresh pages
  for most chunks. Measured on a 512 MiB cold read through the mount: 75 to
  80 page faults per MiB, all in the kernel copying received data into those
  pages, and 0.7 to 0.8 system CPU s/GiB where receiving into reused buffers
  and serving FUSE from memory need 0.5 together.
* So the mount receives straight into the pool's buffers (``readinto``,
  :func:`glancefs.api.download.stream` with ``buffers``).
* A buffer is free when nothing refers to it but the pool: blocks in the
  cache, queued for hashing, being written to the disk cache or answering a
  read all hold a reference (``sys.getrefcount``; every holder in CPython
  owns one, a memoryview of the buffer too). So nobody gives a buffer back,
  none is lost on an error path, and a buffer in use is never written. The
  check and the hand-out happen under one lock while the GIL is held, and no
  other thread can reach a free buffer: nothing else refers to it.
* Buffers are made as they are needed, up to ``capacity``, and free ones are
  taken oldest first, so a small read keeps few of them. When all are held,
  ``take`` hands out a buffer the pool does not keep.
"""
from __future__ import annotations

import sys
import threading

# What a download yields: bytes, or a pool's buffers when the caller gave a pool.
Chunk = bytes | bytearray

# References to a free buffer while take() checks it: the pool's list, the loop
# variable and getrefcount's own argument.
_FREE = 3


class BufferPool:
    """Writable buffers of one size, free again once nobody else holds them.

    ``take`` is thread-safe (fetch threads call it).
    """

    def __init__(self, size: int, capacity: int) -> None:
        self.size = size
        self.capacity = capacity
        self._kept: list[bytearray] = []
        self._lock = threading.Lock()
        self.reused = 0      # buffers handed out again
        self.made = 0        # buffers allocated (kept or not)

    def take(self) -> bytearray:
        """A buffer of ``size`` bytes nobody else refers to (its content is stale)."""
        with self._lock:
            for buffer in self._kept:
                if sys.getrefcount(buffer) == _FREE:
                    self.reused += 1
                    return buffer
            self.made += 1
            buffer = bytearray(self.size)
            if len(self._kept) < self.capacity:
                self._kept.append(buffer)
            return buffer

    def __len__(self) -> int:
        """Buffers kept (held or free)."""
        return len(self._kept)

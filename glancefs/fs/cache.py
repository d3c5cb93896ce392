"""Where image data is kept between the server and the kernel.

Active image data never changes, so blocks are keyed by image id and index
(the on-disk cache also by the image's hash, so a re-uploaded image under a
reused id can never be served stale) and never expire; only memory and disk
limits evict them.

:class:`BlockCache` is the RAM budget: every block fetched or prefetched lives
here and the least recently used ones go first. :class:`DiskCache` is the
optional on-disk cache (``-o cache_dir=...,cache_size=...``); its methods
block and are called from worker threads.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

from glancefs.api.buffers import Chunk

LOG = logging.getLogger("glancefs.fs.cache")

BlockKey = tuple[str, int]   # (image id, block index)


class BlockCache:
    """Blocks in RAM, least recently used evicted past ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._blocks: OrderedDict[BlockKey, Chunk] = OrderedDict()

    def get(self, key: BlockKey) -> Chunk | None:
        data = self._blocks.get(key)
        if data is not None:
            self._blocks.move_to_end(key)
        return data

    def peek(self, key: BlockKey) -> Chunk | None:
        """Like get, without counting as a use (for the hash verifier)."""
        return self._blocks.get(key)

    def __contains__(self, key: BlockKey) -> bool:
        return key in self._blocks

    def put(self, key: BlockKey, data: Chunk) -> None:
        old = self._blocks.pop(key, None)
        if old is not None:
            self.used -= len(old)
        self._blocks[key] = data
        self.used += len(data)
        while self.used > self.budget and len(self._blocks) > 1:
            _, evicted = self._blocks.popitem(last=False)
            self.used -= len(evicted)

    def discard(self, key: BlockKey) -> None:
        data = self._blocks.pop(key, None)
        if data is not None:
            self.used -= len(data)

    def drop_image(self, image_id: str) -> None:
        for key in [k for k in self._blocks if k[0] == image_id]:
            self.used -= len(self._blocks.pop(key))

    def __len__(self) -> int:
        return len(self._blocks)


class DiskCache:
    """Blocks on local disk: ``<root>/b<block size>/<image id>-<hash>/<index>``.

    Bounded by ``limit`` bytes; the least recently used block files go first
    (use order is kept in memory, seeded from file mtimes at start-up).
    """

    def __init__(self, root: str | os.PathLike[str], limit: int, block_size: int) -> None:
        self.root = Path(root) / f"b{block_size}"
        self.limit = limit
        self._lock = threading.Lock()
        self._files: OrderedDict[Path, int] = OrderedDict()
        self.used = 0
        self.root.mkdir(parents=True, exist_ok=True)
        found: list[tuple[float, Path, int]] = []
        for path in self.root.glob("*/*"):
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            found.append((st.st_mtime, path, st.st_size))
        for _, path, size in sorted(found):
            self._files[path] = size
            self.used += size
        self._evict()

    def _path(self, image_id: str, tag: str, index: int) -> Path:
        return self.root / f"{image_id}-{tag}" / str(index)

    def has(self, image_id: str, tag: str, index: int) -> bool:
        with self._lock:
            return self._path(image_id, tag, index) in self._files

    def get(self, image_id: str, tag: str, index: int) -> bytes | None:
        path = self._path(image_id, tag, index)
        with self._lock:
            if path not in self._files:
                return None
            self._files.move_to_end(path)
        try:
            return path.read_bytes()
        except OSError:
            with self._lock:
                self.used -= self._files.pop(path, 0)
            return None

    def put(self, image_id: str, tag: str, index: int, data: Chunk) -> None:
        path = self._path(image_id, tag, index)
        with self._lock:
            if path in self._files:
                return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as error:
            LOG.warning("disk cache: cannot write %s: %s", path, error)
            return
        with self._lock:
            self._files[path] = len(data)
            self.used += len(data)
            self._evict()

    def drop_image(self, image_id: str) -> None:
        with self._lock:
            for path in [p for p in self._files if p.parent.name.startswith(image_id + "-")]:
                self.used -= self._files.pop(path)
                path.unlink(missing_ok=True)

    def _evict(self) -> None:
        while self.used > self.limit and self._files:
            path, size = self._files.popitem(last=False)
            self.used -= size
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()
            except OSError:
                pass

"""The mount's own counters: what it fetched, served, hashed and uploaded.

A user reads them as JSON from the root directory
(``getfattr --only-values -n user.glancefs.stats /mnt/images``), and scripts/bench
reads them there too instead of scraping the log, whose rounded figures lost small
values (a 4 MiB hash "took 0.00 s of CPU").

Counters only grow, from the mount's start. They are updated from several threads at
once (fetch threads, the hashing threads, upload threads), so every change takes one
lock: a few per MiB moved, nothing against the work they count.

The JSON::

    {"version": 1, "since": <unix time of the mount's start>, "uptime_seconds": s,
     "retries": n,                  # HTTP requests sent again, and downloads resumed
     "totals": {<counters>},        # every image, and uploads whose image never existed
     "images": {"<image id>": {"name": ..., <counters>}, ...},
     "images_omitted": n,           # least recently active images left out (size limit)
     "memory": {"blocks_bytes": n,  # image data held in memory now (the block cache)
                "buffers_bytes": n, # receive buffers made so far, held or free (api.buffers)
                "budget_bytes": n}} # the memory= option

with the counters of :class:`Counters`. ``hash_cpu_seconds`` is the hashing threads'
CPU time at full precision; ``hash_busy_seconds`` their wall time with a block in hand
(hashing it, or waiting for a core or the GIL): close to a read's own time, the read
went at its hash's pace (``verify=off`` would be faster); well above their CPU time,
other work on the machine held them back. ``hash_core_wait_seconds`` is how long they
could run but waited for a core (Linux's scheduler statistics; 0 where it has none):
the share of that held-back time the machine's cores, not the GIL, account for.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

XATTR_NAME = b"user.glancefs.stats"
# Linux refuses extended attribute values above 64 KiB (XATTR_SIZE_MAX): the per-image
# part is cut to fit, least recently active images first.
XATTR_SIZE_MAX = 65536


@dataclass
class Counters:
    bytes: int = 0              # image data received from the server
    gets: int = 0               # data GETs sent (ranged or whole)
    cache_hits: int = 0         # blocks a read found in memory (cached or prefetched)
    disk_hits: int = 0          # blocks a read found in the on-disk cache
    misses: int = 0             # blocks a read had to wait for
    reread_bytes: int = 0       # of the bytes received, those of blocks the kernel asked
                                # for again, while the file stayed open, after it had been
                                # served all of them: its page cache lost them (memory
                                # pressure, a reclaimer, drop_caches), not a fetch twice
    streams_added: int = 0      # parallel ranged GETs added for readers waiting on their
                                # stream (fs.reader's rule); 0 where one stream keeps up
    streams_dropped: int = 0    # of them, dropped again: the reader got no faster
    fetch_failures: int = 0     # GETs that failed after the client's retries
    verified: int = 0           # whole reads whose hash matched
    mismatches: int = 0         # whole reads whose hash did not match
    hash_bytes: int = 0         # bytes those hashes covered
    hash_cpu_seconds: float = 0.0
    hash_busy_seconds: float = 0.0  # wall time they had a block in hand (module docstring)
    hash_core_wait_seconds: float = 0.0  # ... could run but waited for a core (same)
    uploads: int = 0            # uploads that ended with an active, verified image
    upload_bytes: int = 0
    upload_failures: int = 0
    upload_restarts: int = 0    # streams given up for an upload from the spool at close


_FIELDS = tuple(f.name for f in dataclasses.fields(Counters))


@dataclass
class _Image:
    name: str | None
    counters: Counters = field(default_factory=Counters)


class MountStats:
    def __init__(self) -> None:
        self.since = time.time()
        self._started = time.monotonic()
        self.totals = Counters()
        # Insertion order is activity order: an image moves to the end when counted.
        self._images: dict[str, _Image] = {}
        self._lock = threading.Lock()

    def add(self, image_id: str | None, name: str | None = None, **counts: float) -> None:
        """Add ``counts`` (Counters field names) to the image's and the totals.
        ``image_id`` None counts in the totals only (an upload that failed before its
        image was created)."""
        with self._lock:
            entry = None
            if image_id is not None:
                entry = self._images.pop(image_id, None) or _Image(name)
                self._images[image_id] = entry
                if name is not None:
                    entry.name = name
            for key, value in counts.items():
                setattr(self.totals, key, getattr(self.totals, key) + value)
                if entry is not None:
                    setattr(entry.counters, key, getattr(entry.counters, key) + value)

    def image(self, image_id: str) -> Counters:
        """A copy of one image's counters (zeros for an image never counted)."""
        with self._lock:
            entry = self._images.get(image_id)
            return dataclasses.replace(entry.counters) if entry else Counters()

    def snapshot(self, retries: int = 0,
                 memory: dict[str, int] | None = None) -> dict[str, Any]:
        with self._lock:
            images = {image_id: {"name": entry.name, **dataclasses.asdict(entry.counters)}
                      for image_id, entry in self._images.items()}
            totals = dataclasses.asdict(self.totals)
        return {"version": 1, "since": self.since,
                "uptime_seconds": time.monotonic() - self._started, "retries": retries,
                "totals": totals, "images": images, "images_omitted": 0,
                "memory": dict(memory or {})}

    def to_json(self, retries: int = 0, limit: int = XATTR_SIZE_MAX,
                memory: dict[str, int] | None = None) -> bytes:
        """The snapshot as UTF-8 JSON of at most ``limit`` bytes. ``memory``: what
        the reader holds now (fs.reader.Reader.memory)."""
        data = self.snapshot(retries, memory)
        text = json.dumps(data, ensure_ascii=False).encode()
        if len(text) <= limit:
            return text
        # Keep the most recently active images that fit; the totals stay whole.
        images: dict[str, Any] = data["images"]
        kept: dict[str, Any] = {}
        data["images"] = kept
        data["images_omitted"] = len(images)
        room = limit - len(json.dumps(data, ensure_ascii=False).encode()) - 16
        for image_id in reversed(list(images)):
            piece = len(json.dumps({image_id: images[image_id]},
                                   ensure_ascii=False).encode())
            if piece > room:
                break
            kept[image_id] = images[image_id]
            room -= piece
        data["images"] = dict(reversed(list(kept.items())))
        data["images_omitted"] = len(images) - len(kept)
        return json.dumps(data, ensure_ascii=False).encode()

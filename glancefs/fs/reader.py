"""The read path: FUSE reads -> aligned blocks -> ranged GETs.

Why it is shaped this way:

* Random reads (``qemu-img info``, ``file``) fetch only the aligned blocks
  they touch (``block_size``, 1 MiB by default), never the whole image.
* A reader that keeps going forward gets a prefetch window that starts at
  ``prefetch_start`` and doubles each time it crosses into a new block, up to
  ``prefetch_max`` (and a fair share of the memory budget). The window is
  filled by ranged GETs of twice the window while it grows (at most a part,
  below, with ``streams`` > 1), paced by the window and streaming block by
  block into the cache, so the reader is served while the rest is still
  arriving. A seek resets the window and cancels the streams (a block one
  had received is kept: ``_pass_on``).
* Parallel ranged reads: once the window is at its cap, a reader where one
  connection is the limit (a far Glance) is fed by parts (``download.
  part_size``: the window split by ``streams``, at least 4 MiB), started in
  order, each its own GET paced by the window, up to ``streams`` at once.
  The rule for adding streams (``Reader._adapt``): a reader starts with one
  GET to the end of the image, as with ``streams=1``. What its streams
  deliver is measured over spans of ``MEASURED_BLOCKS`` blocks per stream
  (with several, at least half a part: shorter spans measured the bursts of
  parts starting and ending, not the link's rate); when the reader had to
  wait for most of the blocks it read (two measurements in a row, or nearly
  all in one, for the first), all ``streams`` are tried at once (the newest
  GET is trimmed a part past where it is, so parts follow it). Once the last
  of those started delivered its first block, the next span is measured, and
  the reader keeps as many
  streams as the rate they brought is worth at the rate each had before
  (``streams_that_paid``):
  all of them on a link that caps each connection (half a stream's rate from
  each added one counts: the window bounds what the parts bring), none
  where they brought nothing; those dropped are tried again only after
  ``RETRY_AFTER`` seconds (twice as long after each drop). Trying all at once
  is what a far reader needs: stepping up one measured step at a time (1, 2,
  4, 8) took a 1 GiB read through the bench's link a second longer to reach
  8. A reader whose image's first GETs were slow to bring their first block
  (``judged_far``) fills its growing window with one GET to the end, so its
  one stream is measured from the start, not after the growing GETs ended.
  Once there are several, a quarter of the blocks waited for is enough to
  try again (the reader finds most blocks of the later parts already there).
  A part's successor starts before the part ends (``lead_blocks``): once a
  part has no more blocks left than one stream brings while a GET waits for
  its first byte, it no longer counts against the streams allowed, so each
  connection's next request is on its way while its last blocks arrive
  rather than after (on the bench's link, 2 blocks: a 1 GiB read came 0-22%
  faster, paired rounds).
  On loopback the mount's CPU, not a connection, is the limit: the reader
  waits for some of its blocks, not nearly all, so a near reader
  (``judged_far``), which must wait for nearly all twice in a row, rarely
  tries streams, and keeps them only as far as they measured faster.
  Blocks arriving out of order wait in the cache; the Verifier takes them in
  order (``_deliver``/``_advance``).
* The kernel's page cache keeps what it was served (keep_cache), so a
  sequential reader's block is dropped once every byte of it was served and
  hashed (``_discard_served``): served, not passed, because a congested
  kernel reads the tail of a read-ahead late, megabytes behind.
* Blocking HTTP runs in worker threads (``trio.to_thread``); blocks come back
  to trio one at a time, so a slow request never holds up other FUSE requests.
* A server that ignores ``Range`` (Images v1) sends the whole image for every
  request. For such servers each open file gets one sequential stream from
  byte 0 that fills the cache as it goes and pauses when it is a window ahead
  of its reader; only a read behind the stream (and not cached) starts over.
* Verification: a read at offset 0 starts a :class:`Verifier` for the image.
  Blocks are handed to a hashing thread in order as they arrive (so hashing
  overlaps with fetching and serving), readers are held back only when the
  hashing thread falls more than ``hash_lag`` behind (bounding memory), and
  the read that reaches the end of the file waits for the digest when most
  blocks were served since offset 0 (the rest, which the kernel's page cache
  answered, are fetched again for the hash, or waited for where a stream is
  still bringing them), failing with EIO on a mismatch.
"""
from __future__ import annotations

import collections
import errno
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import trio

from glancefs.api import exceptions as exc
from glancefs.api.buffers import BufferPool, Chunk
from glancefs.api.download import PART_WINDOW, BackgroundHash, part_size
from glancefs.api.service import ImageRecord, ImageService
from glancefs.fs.cache import BlockCache, DiskCache
from glancefs.fs.errors import FsError, said_already
from glancefs.fs.stats import MountStats

LOG = logging.getLogger("glancefs.fs.reader")

MiB = 1024 * 1024
STREAM_IDLE = 10.0    # seconds a paused stream keeps its connection
# How far behind its furthest read the kernel may read pages of a read-ahead it
# skipped (its FUSE requests congested): 2 to 6 MiB seen with 2 MiB of read-ahead.
LATE_READS = 16 * MiB
VERIFY_GAP_BLOCKS = 8  # blocks a full read may have had from the page cache instead
STARVED_SHARE = 0.5   # blocks read that were waited for, for more streams to be tried
ALL_PAID = 0.5        # share of one stream's rate each added one must bring for all to stay
FAR_FIRST_BLOCK = 0.05   # seconds from a GET to its first block that make a reader far
FIRST_GETS = 8        # GETs of an image whose first blocks are timed (judged_far)
MEASURED_SECONDS = 0.05   # a measurement spans at least this long
ALL_WAITED = 0.9      # ... from one stream in one measurement, without a second
MEASURED_BLOCKS = 4   # blocks per stream allowed that one measurement of their rate spans
RETRY_AFTER = 1.0     # seconds after streams were dropped before they are tried again
REFAIL_WINDOW = 2.0   # seconds a long failed fetch fails new fetches of its image at once


@dataclass
class ReadConfig:
    block_size: int = MiB
    prefetch_start: int = MiB
    prefetch_max: int = PART_WINDOW
    memory: int = 256 * MiB
    verify: bool = True
    fetch_threads: int = 32          # HTTP requests in flight, all files
    streams: int = 8                 # ranged GETs receiving at once per sequential reader
    range_supported: bool = True     # False for servers that ignore Range (v1)
    deadline: float = 30.0           # seconds a read waits for a block while its
                                     # fetch makes no progress, then EIO

    @property
    def hash_lag(self) -> int:
        """How far readers may run ahead of the hashing thread (memory held in
        its queue, part of ``memory``)."""
        return max(2 * self.block_size, min(32 * MiB, self.memory // 8))

    @property
    def hash_lag_blocks(self) -> int:
        return self.hash_lag // self.block_size


def window_cap(prefetch_max: int, memory: int, block_size: int, readers: int) -> int:
    """How far a sequential reader's prefetch window grows: ``prefetch_max``, and
    no more than its share of half the ``memory`` budget among the ``readers``
    sequential readers open; at least one block."""
    share = memory // (2 * max(1, readers))
    return max(block_size, min(prefetch_max, share))


def streams_that_paid(before: int, after: int, rate_before: float, rate_after: float) -> int:
    """How many of ``after`` streams to keep, from the rate they brought and the rate
    each of the ``before`` streams had: all of them where each added one brought at
    least ``ALL_PAID`` of that (a far link that caps each connection: the window
    bounds what the parts bring, a window per part cycle: with the 64 MiB window
    this was measured with, 64 MiB per 275 ms on the bench's link, which is 5.8
    of its 40 MiB/s connections' worth, not 8; and one
    span measures the new streams while they start, and its rate moves by a fifth
    from one span to the next. Three quarters kept 5 of 8 streams where the
    stream before was measured at 54 MiB/s rather than 40), otherwise as many as the
    rate is worth, rounded to the nearest, between ``before`` and ``after``:
    ``before`` where they brought nothing (the CPU or a cap on all connections is
    the limit), those that paid where the link gives some but not all."""
    worth = rate_after / (rate_before / before)
    if worth - before >= ALL_PAID * (after - before):
        return after
    return max(before, min(after, int(worth + 0.5)))


def lead_blocks(stream_rate: float | None, first_block: float | None, block_size: int,
                part_blocks: int) -> int:
    """How many blocks before a part's end the part after it starts: the blocks one
    stream brings (``stream_rate``, bytes/s) while a GET waits for its first byte
    (``first_block``, seconds to a GET's first block, less that block's own transfer),
    so the next request's round trip and the server's work on it overlap the last
    blocks of the one before instead of following them. 0 (a part ends before the
    next starts) until both are measured; at most half a part, so no more than
    twice the streams allowed are ever in flight.

    Through the bench's far link (20 ms each way, 40 MiB/s a connection) a first
    block takes 73-80 ms and a stream of 8 brings 29 MiB/s: 2 blocks of 1 MiB.
    """
    if not stream_rate or first_block is None:
        return 0
    blocks = -(-int(stream_rate * first_block) // block_size) - 1
    return max(0, min(part_blocks // 2, blocks))


def measured_span(streams: int, part: int, block_size: int) -> int:
    """Bytes one measurement of what ``streams`` streams deliver spans (at least
    ``MEASURED_SECONDS`` too): ``MEASURED_BLOCKS`` blocks per stream, and with
    several at least half a ``part``, since parts start and end in bursts and a
    shorter span measured those rather than the link's rate.

    One GET to the end of the image brings its blocks evenly, so one stream needs
    no more: half a part for it too put off trying streams by a span at the 128
    MiB window (0.33 s into a far read instead of 0.23), and a 1 GiB read through
    the bench's link read 262 against 258 MiB/s (medians of 8 alternating
    rounds, faster in 6).
    """
    span = MEASURED_BLOCKS * block_size * streams
    return max(part // 2, span) if streams > 1 else span


def first_block_seconds(first_blocks: list[FirstBlock]) -> float | None:
    """The median time the first GETs of an image took to their first block (None
    until one came)."""
    known = sorted(ask.seconds for ask in first_blocks if ask.seconds is not None)
    return known[len(known) // 2] if known else None


def judged_far(first_blocks: list[FirstBlock], now: float) -> bool | None:
    """Whether the reader of an image is far from its server, from the first GETs of
    the image (``FirstBlock``, up to ``FIRST_GETS``): far (True) when some brought their
    first block and every one of them took ``FAR_FIRST_BLOCK`` or more for it (those
    still waiting have waited that long); near (False) as soon as one came sooner;
    not known yet (None) otherwise.

    Round trips and a connection's rate are what a first block takes: 74 to 80 ms
    through the bench's far link (20 ms each way, 40 MiB/s per connection), 15 to
    51 ms on loopback with the mount's own work on the same 2 cores.
    """
    known = [ask.seconds for ask in first_blocks if ask.seconds is not None]
    if any(seconds < FAR_FIRST_BLOCK for seconds in known):
        return False
    if known and all(now - ask.sent >= FAR_FIRST_BLOCK
                     for ask in first_blocks if ask.seconds is None):
        return True
    return None


@dataclass
class FirstBlock:
    """One GET of an image: when it was sent (``time.monotonic``), and how long its
    first block took (None until it came). Set by its fetch thread."""
    sent: float
    seconds: float | None = None


class _Stop(Exception):
    """A fetch thread was told to stop (nobody needs its blocks any more)."""


class Pending:
    """A block someone is fetching; waiters get its data or its error."""

    __slots__ = ("event", "data", "error", "job")

    def __init__(self, job: Job) -> None:
        self.event = trio.Event()
        self.data: Chunk | None = None
        self.error: BaseException | None = None
        self.job = job


@dataclass(eq=False)   # identity, so jobs can live in sets
class Job:
    """One fetch thread: a ranged GET of blocks [first, last), or a stream from
    ``first`` to the end of the image that pauses before ``want_until``
    (``first`` is 0 for servers without Range support)."""
    first: int
    last: int
    stream: bool = False
    cancelled: bool = False
    position: int = 0            # next block the thread will deliver
    # Next block trio has taken in (_deliver). Blocks in [arrived, position) are
    # handed over but still queued: a reader that finds one missing waits for
    # this job rather than fetching it again (_request); ``position`` alone, set
    # by the thread, says nothing of whether trio has them yet.
    arrived: int = 0
    want_until: int = 0          # streams pause before delivering this block
    gate: threading.Condition = field(default_factory=threading.Condition)
    done: bool = False
    stalled_at: int | None = None    # position where a reader gave up waiting on it

    @property
    def live(self) -> bool:
        return not (self.done or self.cancelled)

    def cancel(self) -> None:
        with self.gate:
            self.cancelled = True
            self.gate.notify_all()

    def want(self, block: int) -> None:
        # Only trio raises want_until: reading it without the lock first spares
        # the lock (and the stream thread it contends with) on every read that
        # does not move it.
        if block <= self.want_until:
            return
        with self.gate:
            if block > self.want_until:
                self.want_until = block
                self.gate.notify_all()


class Verifier:
    """Hashes one image's blocks in order (a BackgroundHash) and tells trio."""

    def __init__(self, record: ImageRecord, algo: str, expected: str, nblocks: int,
                 token: trio.lowlevel.TrioToken) -> None:
        self.record = record
        self.algo = algo
        self.expected = expected
        self.nblocks = nblocks
        self.next = 0                  # next block to hand to the thread
        self.served = bytearray(nblocks)   # blocks returned to a read since offset 0
        self.active = True
        self._token = token
        self.progress = trio.Event()    # set (and replaced) as hashing advances
        # Whether trio waits for progress. Waking trio costs the hashing thread
        # a syscall and a second GIL hand-over per block (a fifth of its time),
        # so it wakes trio only when someone waits, and at the end.
        self.watched = False
        # Unbounded: the trio thread must never block; reads bound the backlog.
        self._hash = BackgroundHash(hashlib.new(algo), depth=None,
                                    on_progress=self._progressed,
                                    name=f"hash-{record.id[:8]}")

    @property
    def hashed(self) -> int:
        """Blocks the thread has finished."""
        return self._hash.hashed

    @property
    def digest(self) -> str | None:
        return self._hash.digest

    @property
    def cpu_seconds(self) -> float:
        """The hashing thread's CPU time, once done."""
        return self._hash.cpu_seconds

    @property
    def busy_seconds(self) -> float:
        """The hashing thread's wall time with a block in hand (BackgroundHash)."""
        return self._hash.busy_seconds

    @property
    def core_wait_seconds(self) -> float:
        """The hashing thread's time waiting for a core, once done (BackgroundHash)."""
        return self._hash.core_wait_seconds

    def _progressed(self) -> None:
        """From the hashing thread: wake trio if it waits, or at the end."""
        if self.watched or self._hash.digest is not None:
            self.watched = False
            try:
                self._token.run_sync_soon(self._wake)
            except trio.RunFinishedError:
                self._hash.abandon()

    def _wake(self) -> None:
        event, self.progress = self.progress, trio.Event()
        event.set()

    async def wait_progress(self) -> None:
        """Return once one more block is hashed (or hashing ended)."""
        seen = self.hashed
        event = self.progress
        self.watched = True
        # Checked after setting ``watched``: a block finished before this
        # returns now, one finished after wakes us (the GIL orders the two).
        if self.hashed != seen or self.digest is not None or not self.active:
            return
        await event.wait()

    def feed(self, data: Chunk) -> None:
        self._hash.update(data)
        self.next += 1
        if self.next == self.nblocks:
            self._hash.finish()

    def abandon(self) -> None:
        if self.active:
            self.active = False
            self._hash.abandon()

    @property
    def backlog(self) -> int:
        return self.next - self.hashed


class ImageData:
    """Read state of one image shared by all its open files."""

    def __init__(self, reader: Reader, record: ImageRecord) -> None:
        self.reader = reader
        self.record = record
        self.id = record.id
        self.size = record.size or 0
        bs = reader.config.block_size
        self.nblocks = (self.size + bs - 1) // bs
        self.pending: dict[int, Pending] = {}
        self.jobs: set[Job] = set()
        self.handles = 0
        self.verifier: Verifier | None = None
        self.inflight: dict[int, tuple[int, int]] = {}   # read serial -> blocks
        self.read_done = trio.Event()
        # (trio time, error) of a fetch that could not reach the server: the
        # kernel retries a failed read-ahead as a plain read at once, and that
        # retry must not wait a second deadline (_check_failure).
        self.failure: tuple[float, BaseException] | None = None
        hashed = ImageService.hash_of(record)
        self.disk_tag = (hashed[1][:16] if hashed else None)
        self.first_blocks: list[FirstBlock] = []   # its first GETs (judged_far)
        # Blocks dropped because the kernel had been served every byte of them: a
        # read of one again means its page cache lost them (MountStats.reread_bytes).
        self.served_dropped: set[int] = set()

    def block_length(self, index: int) -> int:
        """Bytes of block ``index``: a whole block, but the last may be shorter."""
        bs = self.reader.config.block_size
        return min(bs, self.size - index * bs)


class Handle:
    """One open file: where its reader is and how far ahead to fetch."""

    def __init__(self, image: ImageData) -> None:
        self.image = image
        self.next_off: int | None = None
        self.last_block = -1
        self.window = 0
        self.streams: list[Job] = []     # sequential GETs in flight, oldest first
        # Parallel ranged reads: the state of the rule for adding streams (Reader._adapt).
        self.allowed = 1                 # streams at once
        self.delivered = 0               # blocks its ended streams delivered
        self.seen = -1                   # the furthest block its reads asked for
        self.reads = 0                   # blocks read since the mark (each once), and
        self.waits = 0                   # those a read waited for a stream to bring
        self.mark: tuple[float, int] | None = None   # (trio time, bytes arrived) then
        self.probe: float | None = None  # the rate before the streams being tried
        self.before = 1                  # how many streams there were before them
        self.probing = False             # that stream's measurement has begun
        self.tried: Job | None = None    # the last of the streams being tried
        self.retry_at = 0.0              # trio time before which no stream is tried again
        self.backoff = RETRY_AFTER       # ... seconds after the next drop (doubles each time)
        self.starved_runs = 0            # measurements in a row in which it mostly waited
        self.verifying = False           # this file's reads have started a hash
        self.far: bool | None = None     # its GETs are far from the server (judged_far)
        self.lead = 0                    # blocks before a part's end its successor starts
        # Bytes served of each block its reads touched since its last seek and not
        # dropped yet, and the first block not yet looked at for being far behind.
        self.served: dict[int, int] = {}
        self.passed = 0


class Reader:
    """Serves reads of all open images from one cache and one thread pool."""

    def __init__(self, service: ImageService, config: ReadConfig,
                 disk: DiskCache | None = None, stats: MountStats | None = None) -> None:
        self.service = service
        self.config = config
        # Blocks are received into buffers used again once nobody holds them
        # (api.buffers): fresh memory per block cost page faults. As many as the
        # memory budget has blocks, made as they are needed.
        self.buffers = BufferPool(config.block_size, max(8, config.memory // config.block_size))
        # The hashing queue may hold up to hash_lag beyond what the cache holds.
        self.cache = BlockCache(max(4 * config.block_size,
                                    config.memory - (config.hash_lag if config.verify else 0)))
        self.disk = disk
        self.images: dict[str, ImageData] = {}
        self.limiter = trio.CapacityLimiter(config.fetch_threads)
        self.nursery: trio.Nursery | None = None
        self.on_corrupt: Callable[[str], None] | None = None
        self._serial = 0
        # Blocks handed over by fetch threads, delivered in trio (deque: thread-safe).
        self._arrivals: collections.deque[tuple[ImageData, Job, int, Chunk, bool]] = \
            collections.deque()
        self._wake_pending = False
        self._sequential = 0          # handles with an open prefetch window
        # Images whose last full read did not match their hash: reads of their
        # final block keep failing (the kernel retries a failed readahead
        # synchronously) until a new read from offset 0 verifies again.
        self.mismatched: set[str] = set()
        self.stats = stats if stats is not None else MountStats()

    def memory(self) -> dict[str, int]:
        """What it holds now, for the mount's counters (fs.stats)."""
        return {"blocks_bytes": self.cache.used,
                "buffers_bytes": len(self.buffers) * self.buffers.size,
                "budget_bytes": self.config.memory}

    def _check_ranges(self) -> bool:
        """Whether ranged GETs get ranges. The API notices a server that sends
        the whole image instead (``ImageService.ranges_ignored``, set as the
        answer's headers arrive); from then on each open file is read as one
        stream, never one whole download per block."""
        if self.config.range_supported and self.service.ranges_ignored:
            self.config.range_supported = False
            LOG.warning("the Images API ignores Range requests; reading images as one "
                        "stream per open file from now on")
        return self.config.range_supported

    # -- open / release ---------------------------------------------------

    def open(self, record: ImageRecord) -> Handle:
        image = self.images.get(record.id)
        if image is None or image.record.size != record.size or (
                image.record.os_hash_value, image.record.checksum) != (
                record.os_hash_value, record.checksum):
            image = ImageData(self, record)
            self.images[record.id] = image
        image.handles += 1
        return Handle(image)

    def release(self, handle: Handle) -> None:
        image = handle.image
        for job in handle.streams:
            job.cancel()
        if handle.window:
            self._sequential -= 1
            handle.window = 0
        image.handles -= 1
        if image.handles <= 0:
            for job in list(image.jobs):
                job.cancel()
            if image.verifier:
                image.verifier.abandon()
                image.verifier = None
            if self.images.get(image.id) is image:
                del self.images[image.id]

    # -- reading -------------------------------------------------------------

    async def read(self, handle: Handle, off: int, size: int) -> bytes | memoryview:
        image = handle.image
        if off >= image.size or size <= 0:
            return b""
        self._check_ranges()
        bs = self.config.block_size
        end = min(off + size, image.size)
        first, last = off // bs, (end - 1) // bs
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("image %s: read %d+%d (handle window %d)", image.id, off, size,
                      handle.window)
        self._track(handle, off, end, first)
        if off != 0 and image.id in self.mismatched and last == image.nblocks - 1:
            raise FsError(errno.EIO, "the image's data did not match its hash; "
                                     "read it again from the start to re-check")
        if self.config.verify and (off == 0 or not handle.verifying) and (
                image.verifier is None or not image.verifier.active):
            # A file's first read starts the hash even when it is not at offset
            # 0: the page cache may answer the start (_finish_verify).
            handle.verifying = True
            if off == 0:
                self.mismatched.discard(image.id)
            self._start_verifier(image)
        if handle.window and self.config.range_supported:
            # Start (or extend) the stream before waiting for this read's own
            # blocks, so its request latency overlaps theirs.
            self._prefetch(handle)
        self._serial += 1
        serial = self._serial
        image.inflight[serial] = (first, last)
        if last > handle.seen:
            # Blocks, not reads: the share that waited must not depend on the
            # kernel's read size (a 1 MiB block is 1 to 8 reads).
            handle.reads += last - max(first - 1, handle.seen)
            handle.seen = last
        try:
            blocks = await self._blocks(handle, first, last)
            verifier = image.verifier
            if verifier is not None and verifier.active:
                for index in range(first, last + 1):
                    verifier.served[index] = 1
        finally:
            del image.inflight[serial]
            finished, image.read_done = image.read_done, trio.Event()
            finished.set()
        if handle.window:
            self._prefetch(handle)
        self._discard_served(handle, off, end)
        verifier = image.verifier
        if verifier is not None and verifier.active:
            if end == image.size:
                await self._finish_verify(image, verifier, serial)
                if handle.window:
                    self._drop_served(handle)   # the last blocks are hashed now
            else:
                # Keep the hashing thread's queue (memory) bounded: wait for it
                # rather than letting a fast reader pile blocks up behind it.
                while verifier.active and verifier.backlog > self.config.hash_lag_blocks:
                    await verifier.wait_progress()
        start = off - first * bs
        if first == last:
            return memoryview(blocks[0])[start:start + end - off]
        parts = [memoryview(blocks[0])[start:]]
        parts.extend(memoryview(b) for b in blocks[1:-1])
        parts.append(memoryview(blocks[-1])[:end - last * bs])
        return b"".join(parts)

    def _discard_served(self, handle: Handle, off: int, end: int) -> None:
        """Counts the bytes served of each block a read touched; a sequential
        reader's blocks (its first read's too) are dropped once every byte of
        them was served (the kernel's page cache has them now, keep_cache) and
        the hashing thread has them: ours need not keep them. A random reader's
        stay until evicted.

        Served, not passed: under load the kernel skips the tail of a read-ahead
        (its FUSE requests congested) and reads those pages later, megabytes
        behind the reader's furthest read (measured with the connection's
        ``congestion_threshold`` at 1: reads 2 to 6 MiB behind). A block dropped
        because the reader had passed it was fetched a second time then. The
        kernel's reads are not aligned to blocks and arrive slightly out of
        order; counting bytes needs no allowance for either. A block never served
        (the page cache had its pages) is dropped once it is further behind the
        furthest read than the kernel reads late (``LATE_READS``, or the largest
        window)."""
        bs = self.config.block_size
        served = handle.served
        for index in range(off // bs, (end - 1) // bs + 1):
            start = index * bs
            served[index] = served.get(index, 0) + min(end, start + bs) - max(off, start)
        if handle.window:   # a random reader's reads each start anew (_track)
            self._drop_served(handle)

    def _drop_served(self, handle: Handle) -> None:
        image = handle.image
        bs = self.config.block_size
        served = handle.served
        verifier = image.verifier
        hashed = verifier.next if verifier is not None and verifier.active else image.nblocks
        for index, count in list(served.items()):
            if index < hashed and count >= image.block_length(index):
                del served[index]
                self.cache.discard((image.id, index))
                image.served_dropped.add(index)
        far = min(hashed, ((handle.next_off or 0) - max(LATE_READS, self._window_cap())) // bs)
        for index in range(handle.passed, far):
            served.pop(index, None)
            self.cache.discard((image.id, index))
        handle.passed = max(handle.passed, far)

    def _track(self, handle: Handle, off: int, end: int, first: int) -> None:
        """Sequential or not; grow or reset the prefetch window."""
        bs = self.config.block_size
        # The kernel sends read-ahead requests concurrently and they may arrive
        # out of order: a little behind the furthest point is still "in order".
        # A reader already found sequential may also be read a little ahead of
        # the furthest point (the kernel's read-ahead requests race each other):
        # that is no seek, and must not cancel the streams feeding it.
        ahead = max(4 * bs, handle.window) if handle.window else bs
        sequential = handle.next_off is not None and \
            handle.next_off - max(4 * bs, handle.window) <= off <= handle.next_off + ahead
        if sequential:
            if first > handle.last_block:
                # Grows once per new block the reader enters: a reader that keeps
                # up is worth fetching further ahead for.
                if not handle.window:
                    self._sequential += 1
                    handle.window = self.config.prefetch_start
                else:
                    handle.window = min(handle.window * 2, self._window_cap())
            handle.next_off = max(handle.next_off or 0, end)
        else:
            if handle.window:
                self._sequential -= 1
            handle.window = 0
            handle.next_off = end
            if handle.streams and self.config.range_supported:
                # A seek: the streams' bytes are no longer wanted.
                for job in handle.streams:
                    job.cancel()
                handle.streams = []
            # Streams are added again only for a reader that proves sequential
            # anew (what it learned, its back-off, stays).
            handle.allowed, handle.mark, handle.probe = 1, None, None
            handle.starved_runs, handle.seen = 0, first - 1
            handle.served.clear()
            handle.passed = first
        handle.last_block = max(handle.last_block, first) if sequential else first

    def _window_cap(self) -> int:
        config = self.config
        return window_cap(config.prefetch_max, config.memory, config.block_size,
                          self._sequential)

    def _prefetch(self, handle: Handle) -> None:
        """Keep ranged GETs going up to ``window`` bytes past the furthest point read.

        A sequential reader is served by streaming GETs of twice the window
        while the window grows, then (window at its cap) by one GET to the end
        of the image with ``streams=1`` (few request latencies), or by parts
        started in order, as many at once as the rule in the module's docstring
        allows (no GET larger than a part then). Each GET is paced by the window:
        its thread stops handing over (and so reading) blocks that far ahead
        and resumes as the reader catches up, so memory stays bounded; sizes
        that grow only while the reader keeps up bound what a reader that
        stops early costs in transfer. Releasing the file (or seeking) cancels
        the streams and closes their connections.
        """
        image = handle.image
        bs = self.config.block_size
        # From the furthest point read (_track), not this read's end: a late read
        # behind it (the kernel reading what it skipped) fetches what it lacks
        # itself (_blocks); blocks behind that point not in the cache were served
        # and dropped, not to be fetched.
        end = handle.next_off or 0
        target = min(image.nblocks, (end + handle.window + bs - 1) // bs)
        live = [job for job in handle.streams if job.live]
        if len(live) < len(handle.streams):
            handle.delivered += sum(job.position - job.first for job in handle.streams
                                    if not job.live)
            handle.streams = live
        for job in handle.streams:
            job.want(target)
        if not self.config.range_supported:
            return   # its stream starts from byte 0 when a block is missing (_request)
        if handle.window >= self._window_cap() and self.config.streams > 1:
            self._adapt(handle)
            if handle.allowed > 1 and self._in_flight(handle) >= handle.allowed:
                return   # as many parts in flight as the rule allows; the next when one ends
        start = max([(end + bs - 1) // bs] + [job.last for job in handle.streams])
        # GETs of twice the window while it grows (what a reader that stops
        # early costs in transfer stays small: the socket buffers of a paused
        # GET fill too); once the window is at its cap the reader has proven it
        # keeps going, and one GET to the end of the image, paced by the window
        # (_gate), saves a server round trip per window.
        at_cap = handle.window >= self._window_cap()
        part = part_size(self._window_cap(), self.config.streams, bs) // bs
        if handle.far is None:
            handle.far = judged_far(image.first_blocks, time.monotonic())
            if handle.far is not None:
                LOG.debug("image %s: a %s reader (first blocks in %s ms)", image.id,
                          "far" if handle.far else "near",
                          ", ".join(f"{ask.seconds * 1000:.0f}" for ask in image.first_blocks
                                    if ask.seconds is not None))
        if not at_cap:
            size = max(1, 2 * handle.window // bs)
            if self.config.streams > 1:
                # No longer than a part: the rule measures one stream once these
                # end (_adapt), and a far reader's parallel parts start then.
                # A far reader's window is filled by one GET to the end instead:
                # its one stream is measured from the start rather than after its
                # growing GETs ended (streams tried 0.23-0.26 s into a read
                # through the bench's far link, not 0.57-0.64 s: a 256 MiB read
                # 13% faster), and a GET costs it a round trip.
                size = image.nblocks if handle.far else min(size, part)
        elif handle.allowed <= 1:
            size = image.nblocks
        else:
            size = part
        started: Job | None = None
        while True:
            while start < target and ((image.id, start) in self.cache or
                                      start in image.pending):
                start += 1
            if start >= target:
                break
            started = Job(start, min(image.nblocks, start + size), stream=True,
                          want_until=target)
            handle.streams.append(started)
            self._start_job(image, started)
            if not at_cap or handle.allowed <= 1 or self._in_flight(handle) >= handle.allowed:
                break
            start = started.last
        if started is not None and handle.probe is not None and handle.tried is None:
            # The streams being tried were all started just now, the last one last:
            # once it delivers, all of them do (_adapt). Not whichever part is newest
            # later: on loopback a part ends, and the next starts, more often than a
            # new GET's first block takes, so the newest was nearly never there and the
            # measurement waited (0.45 s of a 512 MiB read at half its speed).
            handle.tried = started

    def _in_flight(self, handle: Handle) -> int:
        """The streams that count against ``Handle.allowed``: all of them while the
        streams being tried are measured, otherwise those with more blocks left than
        ``lead_blocks`` (the others are about to end, and their successors start)."""
        if handle.probe is not None:
            return len(handle.streams)
        return sum(1 for job in handle.streams if job.last - job.position > handle.lead)

    def _adapt(self, handle: Handle) -> None:
        """The rule for adding streams (module docstring), for a reader at its cap.

        What its streams deliver (blocks arrived, in any order: the reader's own
        progress lags behind a new stream by up to a part) is measured over
        spans of MEASURED_BLOCKS blocks per stream allowed (half a part at
        least with several), while no more streams are in flight than allowed.
        After a measurement in which at least STARVED_SHARE of the blocks it
        read had to be waited for (for the first stream added: two in a row, or one in
        which ALL_WAITED did), the reader is allowed all ``streams``; once the
        last of those started (``Handle.tried``) has delivered its first block,
        the next span is measured and the reader keeps the streams that paid
        (``streams_that_paid``); those
        that did not are dropped, to be tried after RETRY_AFTER seconds (twice
        as long after each drop).
        With more than one stream, a quarter of the blocks read waited for is
        enough to try again: on the bench's link, asking for half held a
        1 GiB read at 6 of 8 streams for most of its length. Spans last at
        least MEASURED_SECONDS (on loopback a span of a few blocks is a few
        milliseconds, and measured bursts). Where the mount's CPU, or a cap on
        all connections together, is the limit, no added stream stays.
        """
        if handle.allowed >= self.config.streams and handle.probe is None:
            return
        image = handle.image
        bs = self.config.block_size
        part = part_size(handle.window, self.config.streams, bs)
        now = trio.current_time()
        newest = handle.streams[-1] if handle.streams else None
        arrived = bs * (handle.delivered +
                        sum(job.position - job.first for job in handle.streams))
        if self._in_flight(handle) > handle.allowed:
            # More in flight than the rule allows (GETs from while the window grew,
            # parts of a stream just dropped): not what is being measured.
            handle.mark = None
            handle.starved_runs = 0
            return
        if handle.mark is None or (handle.probe is not None and not handle.probing):
            if handle.probe is not None:
                last = handle.tried
                if last is None or (last.live and last.position <= last.first):
                    return    # the streams being tried have not all started: not measured yet
                handle.probing = True
            handle.mark = (now, arrived)
            handle.reads = handle.waits = 0
            return
        since, offset = handle.mark
        span = measured_span(handle.allowed, part, bs)
        if arrived - offset < span or now - since < MEASURED_SECONDS:
            return
        measured = (arrived - offset) / (now - since)
        waited = handle.waits / max(1, handle.reads)
        LOG.debug("image %s: %d streams: %.0f MiB/s, %d of %d blocks waited for", image.id,
                  handle.allowed, measured / MiB, handle.waits, handle.reads)
        handle.mark = (now, arrived)
        handle.reads = handle.waits = 0
        handle.lead = lead_blocks(measured / handle.allowed,
                                  first_block_seconds(image.first_blocks), bs, part // bs)
        if handle.probe is not None:
            before, tried = handle.before, handle.allowed
            handle.allowed = streams_that_paid(before, tried, handle.probe, measured)
            handle.probe = None
            if handle.allowed < tried:
                LOG.debug("image %s: %d streams came at %.0f MiB/s, what %d would bring: "
                          "keeping those", image.id, tried, measured / MiB, handle.allowed)
                self.stats.add(image.id, streams_dropped=tried - handle.allowed)
                # Tried again later, not never: one measurement of a bursty link
                # can be wrong, and the rate it allows changes.
                handle.retry_at = now + handle.backoff
                handle.backoff *= 2
                return
        # With parts in flight the reader finds most blocks of the later ones
        # already there, so it waits for fewer of them even where the link is the
        # limit: at 6 of 8 streams on the bench's far link it waited for 22-48%
        # of its blocks while they came at 170 of the 240 MiB/s 6 could carry.
        # Streams are tried from one only after two measurements in a row in which
        # most blocks were waited for, or one with nearly all: a reader held back by
        # CPU (loopback) waits now and then, one held back by its connection
        # all the time. A near reader (judged_far) needs nearly all twice: on
        # loopback it waited for 40-80% of its blocks in most spans of an unverified
        # read (its fetch and FUSE take turns on 2 cores) and tried streams in 6 of
        # 8 reads of 512 MiB; none did with this rule, and they read at 989 MiB/s
        # against 786 (medians); one whose connection is capped waits for all.
        if handle.allowed > 1:
            share = STARVED_SHARE / 2
        else:
            share = ALL_WAITED if handle.far is False else STARVED_SHARE
        starved = waited >= share
        handle.starved_runs = handle.starved_runs + 1 if starved else 0
        if handle.allowed == 1 and handle.starved_runs < 2 and (
                waited < ALL_WAITED or handle.far is False):
            return
        if handle.allowed >= self.config.streams or not handle.starved_runs or \
                now < handle.retry_at:
            return
        handle.probe = measured
        handle.probing = False
        handle.tried = None
        handle.before = handle.allowed
        handle.allowed = self.config.streams
        self.stats.add(image.id, streams_added=handle.allowed - handle.before)
        LOG.debug("image %s: the reader waits for its streams at %.0f MiB/s: %d in flight",
                  image.id, measured / MiB, handle.allowed)
        if newest is not None:
            self._trim(image, newest, part // bs)

    def _trim(self, image: ImageData, job: Job, part: int) -> None:
        """End ``job`` (the newest stream, a GET to the end of the image or a long
        one from while the window grew) a part past where it is, so parts can
        follow it in parallel. Never before a block a reader waits for on it; its
        thread stops at the new end without reading further (_fetch_run)."""
        waited = [index for index, pending in image.pending.items() if pending.job is job]
        cut = max([job.position + part] + [index + 1 for index in waited])
        if cut < job.last:
            LOG.debug("image %s: stream of blocks %d-%d now ends at %d", image.id, job.first,
                      job.last - 1, cut - 1)
            job.last = cut

    async def _blocks(self, handle: Handle, first: int, last: int) -> list[Chunk]:
        image = handle.image
        if self._arrivals:
            self._drain_arrivals()   # blocks already handed over count as here
        out: list[Chunk | None] = [self.cache.get((image.id, i)) for i in range(first, last + 1)]
        missing = [first + n for n, data in enumerate(out) if data is None]
        hits = len(out) - len(missing)
        if missing and self.disk is not None and image.disk_tag:
            found = await trio.to_thread.run_sync(self._disk_get_many, image, missing,
                                                  limiter=self.limiter)
            for index, data in found.items():
                self._deliver(image, None, index, data, from_disk=True)
                out[index - first] = data
            missing = [i for i in missing if i not in found]
        again = [index for index in missing if index in image.served_dropped]
        if again:
            image.served_dropped.difference_update(again)
            self.stats.add(image.id, reread_bytes=sum(map(image.block_length, again)))
            LOG.debug("image %s: blocks %s asked for again after they were served",
                      image.id, again)
        self.stats.add(image.id, cache_hits=hits, disk_hits=len(out) - hits - len(missing),
                       misses=len(missing))
        if missing:
            self._check_failure(image)
            self._request(handle, missing)
        for n, have in enumerate(out):
            if have is None:
                out[n] = await self._wait_block(handle, first + n)
        return out  # type: ignore[return-value]  # every None was filled above

    def _request(self, handle: Handle, missing: list[int]) -> None:
        """Make sure every block in ``missing`` (sorted) is on its way."""
        self._check_ranges()
        image = handle.image
        bs = self.config.block_size
        stream = handle.streams[-1] if handle.streams else None
        ahead = max(handle.window, bs) // bs
        if not self.config.range_supported:
            # Every GET sends the image from byte 0: never one per block. The
            # handle's stream serves what is ahead of it; a block behind it (and
            # no longer cached) needs a new stream.
            if stream is None or not stream.live or stream.arrived > missing[0]:
                if stream is not None:
                    stream.cancel()
                stream = Job(0, image.nblocks, stream=True)
                handle.streams = [stream]
                self._start_job(image, stream)
            stream.want(min(image.nblocks, missing[-1] + 1 + ahead))
            for index in missing:
                if index not in image.pending:
                    image.pending[index] = Pending(stream)
            return
        # The handle's own streams first, then the image's others: the read that
        # reaches the end may come before the kernel's reads of the blocks just
        # before it (its read-ahead's requests race), and the hash's fetch of the
        # blocks it was not served (_finish_verify, a handle of its own) must
        # wait for the reader's streams bringing them, not GET them a second time.
        streams = handle.streams + [job for job in image.jobs
                                    if job.stream and job not in handle.streams]
        run: list[int] = []
        for index in missing:
            if index in image.pending:
                continue
            coming = next((job for job in streams if job.live and job.arrived <= index
                           < min(job.last, job.want_until + ahead)), None)
            if coming is not None:
                # A sequential stream gets there soon, or handed it over and trio
                # has not taken it in yet: wait for it. (Judged by where its thread
                # was, a block handed over while this read ran was fetched again by
                # a GET of its own: 1 or 2 MiB of a 96 MiB read through a capped
                # link, in 3 of 9 runs where the stats lock was held 1 ms longer.)
                coming.want(index + 1)
                image.pending[index] = Pending(coming)
                continue
            if run and index != run[-1] + 1:
                self._start_job(image, Job(run[0], run[-1] + 1))
                run = []
            run.append(index)
        if run:
            self._start_job(image, Job(run[0], run[-1] + 1))

    async def _wait_block(self, handle: Handle, index: int) -> Chunk:
        image = handle.image
        for _attempt in range(3):
            data = self.cache.get((image.id, index))
            if data is not None:
                return data
            pending = image.pending.get(index)
            if pending is None:
                self._check_failure(image)
                self._request(handle, [index])
                pending = image.pending[index]
            if pending.job.stream and handle.window >= self._window_cap() and \
                    pending.job in handle.streams:
                # The reader waits for its streams: the link, not the reader, is
                # the limit (the rule for adding streams, in the module's docstring).
                handle.waits += 1
            await self._arrival(image, index, pending)
            if pending.data is not None:
                return pending.data
            if pending.error is not None and not isinstance(pending.error, _Stop):
                raise pending.error
        raise FsError(errno.EIO, f"block {index} of image {image.id} could not be fetched")

    @staticmethod
    def _check_failure(image: ImageData) -> None:
        """Fail at once when a fetch of this image could not reach the server
        moments ago (its read already waited out the deadline and said why)."""
        if image.failure is not None:
            when, error = image.failure
            if trio.current_time() - when < REFAIL_WINDOW:
                raise error
            image.failure = None

    async def _arrival(self, image: ImageData, index: int, pending: Pending) -> None:
        """Wait for ``pending`` while its fetch makes progress; EIO once it has
        made none for ``deadline`` seconds (a stalled or unanswering server).
        A stream still on its way to the block (a server without Range sends
        everything before it) is progress, however far it has to go."""
        job = pending.job
        while True:
            seen = job.position
            if job.stalled_at != seen:
                with trio.move_on_after(self.config.deadline):
                    await pending.event.wait()
                    return
                if job.position != seen:
                    continue
            # Said once per stall: the kernel retries a failed read-ahead as a
            # plain read at once, and that must not wait a second deadline.
            job.stalled_at = seen
            raise FsError(errno.EIO, f"image {image.id}: no data from the server for "
                          f"{self.config.deadline:g} s (block {index})")

    # -- fetching --------------------------------------------------------------

    def _start_job(self, image: ImageData, job: Job) -> None:
        LOG.debug("image %s: fetching blocks %d-%d%s", image.id, job.first, job.last - 1,
                  " (stream)" if job.stream else "")
        image.jobs.add(job)
        # Nothing before ``first`` is coming from this job (_request relies on it).
        job.position = max(job.position, job.first)
        job.arrived = max(job.arrived, job.first)
        if not job.stream:
            for index in range(job.first, job.last):
                image.pending.setdefault(index, Pending(job))
        assert self.nursery is not None, "Reader.nursery must be set before reading"
        self.nursery.start_soon(self._run_job, image, job)

    async def _run_job(self, image: ImageData, job: Job) -> None:
        error: BaseException | None = None
        started = trio.current_time()
        try:
            await trio.to_thread.run_sync(self._fetch_thread, image, job,
                                          trio.lowlevel.current_trio_token(),
                                          limiter=self.limiter, abandon_on_cancel=True)
        except _Stop as stop:
            error = stop
        except Exception as failed:  # noqa: BLE001 - handed to the readers waiting for these blocks
            error = failed
            self.stats.add(image.id, fetch_failures=1)
            if isinstance(failed, exc.CommunicationError) and \
                    trio.current_time() - started >= self.config.deadline / 2:
                # A failure that took long (a server stalled, or away for the whole
                # retry schedule): the kernel's retry would wait as long again. One
                # that came quickly (connections reset) is worth that retry.
                image.failure = (trio.current_time(), failed)
            if job.stalled_at == job.position:
                # A reader's deadline passed first and said why ("no data from the
                # server"), and nothing came since; the kernel's retry of that read
                # fails with this: not a second line (the deadline and the HTTP
                # timeout are alike, so either may come first).
                said_already(failed)
            # Not a warning: each read this fails says why (fs.errors.refuse), and
            # a failed prefetch nobody waits for is fetched again when read.
            LOG.debug("fetching blocks %d-%d of image %s failed: %s", job.first,
                      job.last - 1, image.id, failed)
        finally:
            job.done = True
            image.jobs.discard(job)
            # The thread's last blocks may still wait in the hand-over queue (its
            # wake-up can be queued behind this task's): deliver them first.
            self._drain_arrivals()
            for index, pending in list(image.pending.items()):
                if pending.job is job:
                    if error is None:
                        error = FsError(errno.EIO, f"image {image.id}: blocks {job.first}-"
                                        f"{job.last - 1} ended at {job.position}, short of "
                                        f"block {index}")
                    del image.pending[index]
                    pending.error = error
                    pending.event.set()

    def _fetch_thread(self, image: ImageData, job: Job, token: trio.lowlevel.TrioToken) -> None:
        """Runs in a worker thread: GET the blocks, hand each to trio.

        Blocks already in the on-disk cache are read from there, and the GETs
        cover only the runs between them.
        """
        disk = self.disk if image.disk_tag and self.config.range_supported else None
        tag = image.disk_tag or ""
        index = job.first
        while index < job.last:
            if disk is not None:
                while index < job.last:
                    data = disk.get(image.id, tag, index)
                    if data is None:
                        break
                    self._pass_on(token, image, job, index, data, True)
                    index += 1
            if index >= job.last:
                return
            stop = job.last
            if disk is not None:
                stop = index + 1
                while stop < job.last and not disk.has(image.id, tag, stop):
                    stop += 1
            self._fetch_run(image, job, token, index, stop)
            index = stop

    def _fetch_run(self, image: ImageData, job: Job, token: trio.lowlevel.TrioToken,
                   index: int, stop: int) -> None:
        """One GET of blocks [index, stop) (from byte 0 without Range support)."""
        bs = self.config.block_size
        if not self._check_ranges():
            index = 0
        offset = index * bs
        length = min(stop * bs, image.size) - offset
        chunks: Iterator[Chunk] = self.service.read(image.record, offset, length,
                                                    verify=False, chunk_size=bs,
                                                    buffers=self.buffers)
        self.stats.add(image.id, image.record.name, gets=1)
        timed: FirstBlock | None = None
        if len(image.first_blocks) < FIRST_GETS:
            timed = FirstBlock(time.monotonic())
            image.first_blocks.append(timed)
        buffer: Chunk = b""
        try:
            for chunk in chunks:
                if timed is not None:
                    timed.seconds, timed = time.monotonic() - timed.sent, None
                self.stats.add(image.id, bytes=len(chunk))
                buffer = buffer + chunk if buffer else chunk
                while len(buffer) >= bs or (buffer and index * bs + len(buffer) >= image.size):
                    # A whole block as received (a pool's buffer) is kept as it is.
                    data: Chunk
                    data, buffer = (buffer, b"") if len(buffer) <= bs else \
                        (buffer[:bs], buffer[bs:])
                    self._pass_on(token, image, job, index, data, False)
                    index += 1
                    if stop > index >= job.last:
                        # Trimmed (_trim): parts after it come from other GETs, so
                        # not a byte more is read of this one.
                        return
                if job.cancelled:
                    raise _Stop()
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _pass_on(self, token: trio.lowlevel.TrioToken, image: ImageData, job: Job,
                 index: int, data: Chunk, from_disk: bool) -> None:
        """Hand block ``index`` to trio once its reader is near enough (_gate),
        then stop if the job was cancelled meanwhile.

        A block already received is handed over even when its job was cancelled
        while it waited: its bytes were paid for. A stream paused at its window
        holds one; after a seek (or a late read of the congested kernel judged
        one) the reader that comes back to it finds it in the cache instead of
        fetching it a second time."""
        if job.stream:
            self._gate(job, index)
        self._hand_over(token, image, job, index, data, from_disk)
        if job.cancelled:
            raise _Stop()

    def _gate(self, job: Job, index: int) -> None:
        """A stream waits here while it is far enough ahead of its reader, or
        until it is cancelled.

        A reader that stops for good (a file held open, never read again) must
        not pin a server connection: after STREAM_IDLE seconds the stream ends,
        and a later read starts a new one.
        """
        with job.gate:
            deadline = time.monotonic() + STREAM_IDLE
            while index >= job.want_until and not job.cancelled:
                if time.monotonic() > deadline:
                    job.cancelled = True
                    break
                job.gate.wait(timeout=1.0)

    def _hand_over(self, token: trio.lowlevel.TrioToken, image: ImageData, job: Job,
                   index: int, data: Chunk, from_disk: bool) -> None:
        job.position = index + 1
        # Not waiting for trio to take it: the thread keeps reading the socket.
        # One wake-up serves every block that arrived meanwhile, so a busy
        # trio thread is not interrupted once per block.
        self._arrivals.append((image, job, index, data, from_disk))
        if not self._wake_pending:
            self._wake_pending = True
            try:
                token.run_sync_soon(self._drain_arrivals)
            except trio.RunFinishedError:
                raise _Stop() from None

    def _drain_arrivals(self) -> None:
        # Cleared before draining: a block appended from now on schedules a new
        # wake-up (at worst a spare one that finds nothing).
        self._wake_pending = False
        while self._arrivals:
            self._deliver(*self._arrivals.popleft())

    def _disk_get_many(self, image: ImageData, indexes: list[int]) -> dict[int, bytes]:
        assert self.disk is not None and image.disk_tag
        found = {}
        for index in indexes:
            data = self.disk.get(image.id, image.disk_tag, index)
            if data is not None:
                found[index] = data
        return found

    def _deliver(self, image: ImageData, job: Job | None, index: int, data: Chunk,
                 from_disk: bool) -> None:
        """In trio: a block arrived (from ``job``, or the disk cache); wake its
        waiters, feed the verifier."""
        if job is not None:
            job.arrived = max(job.arrived, index + 1)
        self.cache.put((image.id, index), data)
        image.failure = None
        pending = image.pending.pop(index, None)
        if pending is not None:
            pending.data = data
            pending.event.set()
        if self.disk is not None and image.disk_tag and not from_disk and self.nursery:
            self.nursery.start_soon(self._disk_put, image.id, image.disk_tag, index, data)
        verifier = image.verifier
        if verifier is not None and verifier.active and index == verifier.next:
            verifier.feed(data)
            self._advance(image, verifier)

    async def _disk_put(self, image_id: str, tag: str, index: int, data: Chunk) -> None:
        assert self.disk is not None
        await trio.to_thread.run_sync(self.disk.put, image_id, tag, index, data)

    # -- verification ------------------------------------------------------------

    def _start_verifier(self, image: ImageData) -> None:
        expected = ImageService.hash_of(image.record)
        if expected is None or image.nblocks == 0:
            return
        verifier = Verifier(image.record, expected[0], expected[1], image.nblocks,
                            trio.lowlevel.current_trio_token())
        image.verifier = verifier
        self._advance(image, verifier)

    def _advance(self, image: ImageData, verifier: Verifier) -> None:
        """Hand the hashing thread every block that is next in order and here."""
        while verifier.active and verifier.next < verifier.nblocks:
            data = self.cache.peek((image.id, verifier.next))
            if data is None:
                return
            verifier.feed(data)

    async def _finish_verify(self, image: ImageData, verifier: Verifier, serial: int) -> None:
        """The read reaching the end: was it a full read? Then wait for the digest.

        A full read need not have asked for every block: the kernel's page cache
        answers what an earlier partial read (and its read-ahead) left there, and
        with active data never changing (keep_cache) that can be megabytes. So a
        read from offset 0 to the end counts as full when it was served most of
        the image; the blocks it was not served are fetched again for the hash.
        A reader that only touched the start and the end (``qemu-img info``) is
        not: checking it would cost the transfer of the whole image.
        """
        while True:
            unserved = [i for i, seen in enumerate(verifier.served) if not seen]
            covering = [r for s, r in image.inflight.items() if s != serial]
            # Earlier reads of this file may still be in flight (the kernel sends
            # reads concurrently): wait for them before deciding.
            if not any(a <= i <= b for a, b in covering for i in unserved):
                break
            await image.read_done.wait()
        if len(unserved) > max(VERIFY_GAP_BLOCKS, image.nblocks // 4):
            LOG.debug("image %s: %d of %d blocks were not read since offset 0; not verified",
                      image.id, len(unserved), image.nblocks)
            verifier.abandon()
            return
        # Blocks the page cache served, or evicted before the hasher reached
        # them, are fetched again, a bounded run at a time.
        refetch = Handle(image)
        lag_blocks = self.config.hash_lag_blocks
        try:
            while verifier.active and verifier.next < verifier.nblocks:
                wanted = [i for i in range(verifier.next, min(verifier.nblocks,
                                                              verifier.next + lag_blocks))
                          if (image.id, i) not in self.cache and i not in image.pending]
                if wanted:
                    self._request(refetch, wanted)
                await self._wait_block(refetch, verifier.next)
                self._advance(image, verifier)
        finally:
            for job in refetch.streams:
                job.cancel()
        while verifier.active and verifier.digest is None:
            await verifier.wait_progress()
        if not verifier.active:
            return
        verifier.active = False
        # Its hashing rate is the ceiling of a verified read: scripts/bench reads the
        # CPU time from the counters (user.glancefs.stats), where it is not rounded.
        matched = verifier.digest == verifier.expected
        self.stats.add(image.id, verified=int(matched), mismatches=int(not matched),
                       hash_bytes=image.size, hash_cpu_seconds=verifier.cpu_seconds,
                       hash_busy_seconds=verifier.busy_seconds,
                       hash_core_wait_seconds=verifier.core_wait_seconds)
        if matched:
            LOG.info("image %s: %s verified; hashing %.0f MiB took %.3f s of CPU", image.id,
                     verifier.algo, image.size / MiB, verifier.cpu_seconds)
            return
        LOG.error("image %r (%s): %s of the data read is %s, the server published %s",
                  image.record.name, image.id, verifier.algo, verifier.digest, verifier.expected)
        self.mismatched.add(image.id)
        self.forget_data(image.id)
        if self.on_corrupt is not None:
            self.on_corrupt(image.id)
        raise FsError(errno.EIO, f"{verifier.algo} of the data does not match the image's hash")

    def forget_data(self, image_id: str) -> None:
        self.cache.drop_image(image_id)
        if self.disk is not None:
            disk = self.disk
            if self.nursery is not None:
                self.nursery.start_soon(trio.to_thread.run_sync, disk.drop_image, image_id)
            else:
                disk.drop_image(image_id)

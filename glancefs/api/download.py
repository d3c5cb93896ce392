"""Streamed, resumable, verified downloads.

A download is a generator of byte chunks. When the connection drops in the
middle, it asks again from the last byte it yielded with a ranged GET; a
server that ignores ``Range`` (Images v1) answers 200 with the whole body and
the generator skips what it already gave. A read that covers the whole image
is hashed as it goes and checked at the end against ``os_hash_value`` (or the
MD5 ``checksum``), so resumed or not, wrong bytes never pass silently.

Where one connection is capped (a far Glance behind a gateway or a per-stream
limited back end), :func:`parallel_stream` reads the image as ranged parts over
several connections at once and still yields it in order, verified. How big a
part is (:func:`part_size`) is one rule shared with the mount's read path.
"""
from __future__ import annotations

import collections
import hashlib
import logging
import queue
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from http.client import HTTPResponse as WireResponse
from typing import Any

import requests
import urllib3

from glancefs.api import exceptions as exc
from glancefs.api.buffers import BufferPool, Chunk
from glancefs.api.http import CHUNK_SIZE, HTTPClient

LOG = logging.getLogger(__name__)

MiB = 1024 * 1024
PART_MIN = 4 * MiB        # a smaller part costs a request latency per few MiB
# What a parallel download holds, and the mount's default prefetch_max: parts are this
# window split by the streams, so it sets how many GETs a far read costs Glance. 128 MiB
# (16 MiB parts of 8 streams) halved the GETs of a 1 GiB read through the bench's far link
# against 64 MiB (67 against 130), and cut Glance's CPU for it by a third (0.61-0.77 CPU
# s/GiB against 0.97-1.08, three paired rounds): each GET is a database lookup and policy
# checks for Glance, and a token check too where Keystone guards it.
PART_WINDOW = 128 * MiB
LOW_WATER = 256 * 1024    # bytes a body's socket gathers before a receive returns

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_STREAM_ERRORS = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                  requests.Timeout, urllib3.exceptions.HTTPError, ConnectionError,
                  exc.CommunicationError)


@dataclass(frozen=True)
class Expected:
    """What the server published about the data, to check it against."""
    size: int | None = None
    os_hash_algo: str | None = None
    os_hash_value: str | None = None
    checksum: str | None = None

    def choice(self) -> tuple[str, str] | None:
        """(algorithm, expected hex digest) of the best hash known: the
        ``os_hash_value`` where hashlib knows its algorithm, else the MD5
        ``checksum``. The one rule for the client's downloads and the mount's
        reads."""
        if self.os_hash_algo and self.os_hash_value:
            try:
                hashlib.new(self.os_hash_algo)
                return self.os_hash_algo, self.os_hash_value.lower()
            except ValueError:
                LOG.warning("unknown os_hash_algo %r; checking the MD5 checksum instead",
                            self.os_hash_algo)
        if self.checksum:
            return "md5", self.checksum.lower()
        return None

    def hasher(self) -> tuple[str, str, hashlib._Hash] | None:
        """(algorithm, expected hex digest, hash object) of the best hash known."""
        chosen = self.choice()
        if chosen is None:
            return None
        algo, want = chosen
        return algo, want, hashlib.new(algo, usedforsecurity=False)


def part_size(window: int, streams: int, align: int) -> int:
    """Bytes of one ranged GET when ``streams`` GETs share ``window`` bytes ahead.

    The one rule for both parallel readers (the mount's read path and
    :func:`parallel_stream`): the window split evenly, so every stream is paced
    by it and all of them together hold no more than it; at least PART_MIN (a
    request latency per part must stay small next to the part's transfer), and
    a multiple of ``align`` (the mount's block size) so no block is cut in two.
    """
    size = max(PART_MIN, window // max(1, streams), align)
    return size // align * align


def stream(http: HTTPClient, path: str, *, offset: int = 0, length: int | None = None,
           expected: Expected = Expected(), verify: bool = True,
           chunk_size: int = CHUNK_SIZE, resume_attempts: int | None = None,
           buffers: BufferPool | None = None) -> Iterator[Chunk]:
    """Yield the bytes of ``path`` from ``offset``, ``length`` bytes long
    (to the end when None).

    ``buffers``: receive whole chunks into buffers taken from that pool (of
    ``chunk_size`` bytes) rather than new objects; a buffer is used again once
    nothing refers to it (:mod:`glancefs.api.buffers`).

    Raises HashMismatch when a whole-image read does not match, InvalidResponse
    when the server sends more, less or other than asked, CommunicationError
    when the connection keeps failing without progress.
    """
    if length is not None and length <= 0:
        return
    size = expected.size
    end: int | None
    if size is not None:
        if offset >= size:
            return
        end = size if length is None else min(size, offset + length)
    else:
        end = None if length is None else offset + length
    whole = offset == 0 and length is None or (offset == 0 and size is not None and end == size)
    check = expected.hasher() if verify and whole else None
    hashing = BackgroundHash(check[2]) if check else None
    attempts_left = http.retries_now if resume_attempts is None else resume_attempts
    pos = offset
    while True:
        try:
            for chunk in _one_response(http, path, pos, end, whole and pos == 0, chunk_size,
                                       buffers):
                pos += len(chunk)
                if hashing:
                    hashing.update(chunk)
                attempts_left = http.retries_now if resume_attempts is None else resume_attempts
                yield chunk
            break
        except _STREAM_ERRORS as error:
            # A CommunicationError comes from http.request, which already
            # retried the request its own number of times: resuming again would
            # multiply the retries (a stalled server held a reader for
            # (retries + 1)^2 read timeouts). Only a body that broke after the
            # server answered is resumed here.
            if attempts_left <= 0 or isinstance(error, exc.CommunicationError):
                # The request's own error names the method and the URL again: say them once.
                where, why = (error.url, error.details) if isinstance(
                    error, exc.CommunicationError) and error.url else (path, error)
                raise exc.TransferBroken(
                    f"download of {where} failed at byte {pos}: {why}") from None
            attempts_left -= 1
            http.retried += 1
            LOG.warning("download of %s broke at byte %d (%s); resuming", path, pos,
                        _short(error))
            time.sleep(0.2)
    if end is not None and pos != end:
        raise exc.InvalidResponse(f"download of {path} ended at byte {pos}, expected {end}")
    if check and hashing:
        _verify(check[0], check[1], hashing, path)


def parallel_stream(http: HTTPClient, path: str, *, expected: Expected, streams: int = 8,
                    verify: bool = True, chunk_size: int = CHUNK_SIZE,
                    window: int = PART_WINDOW) -> Iterator[Chunk]:
    """The whole image at ``path`` as chunks in order, fetched as ranged parts by up
    to ``streams`` threads at once.

    Parts (:func:`part_size` of ``window``) are started in order, each a
    :func:`stream` of its range on its own connection, so a broken connection
    resumes that part only. The oldest part is yielded as it arrives; later parts
    buffer in memory (about ``window`` bytes: ``streams`` parts, and the one being
    yielded). The chunks are hashed in order and
    checked at the end as :func:`stream` does. One stream (or an unknown size, or a
    server known to ignore Range) is :func:`stream` itself.
    """
    size = expected.size
    part = part_size(window, streams, 1)
    if streams <= 1 or not size or size <= part or http.range_ignored:
        yield from stream(http, path, expected=expected, verify=verify, chunk_size=chunk_size)
        return
    check = expected.hasher() if verify else None
    hashing = BackgroundHash(check[2]) if check else None
    parts = [(start, min(part, size - start)) for start in range(0, size, part)]
    stop = threading.Event()
    running: collections.deque[_Part] = collections.deque()
    following = iter(parts)
    try:
        while True:
            while len(running) < streams:
                planned = next(following, None)
                if planned is None:
                    break
                running.append(_Part(http, path, planned[0], planned[1], chunk_size, stop))
            if not running:
                break
            current = running.popleft()
            for chunk in current.chunks():
                if hashing:
                    hashing.update(chunk)
                yield chunk
                # Parts after the oldest may end first (they only wait in memory
                # then): the next starts when the newest ends, not when the
                # consumer reaches it, so the connections stay busy.
                while len(running) < streams and running and running[-1].finished.is_set():
                    planned = next(following, None)
                    if planned is None:
                        break
                    running.append(_Part(http, path, planned[0], planned[1], chunk_size, stop))
    finally:
        stop.set()
    if check and hashing:
        _verify(check[0], check[1], hashing, f"{path} ({streams} streams)")


class _Part:
    """One ranged part of a :func:`parallel_stream`, fetched by its own thread into
    a queue the consumer drains in order."""

    _END = object()

    def __init__(self, http: HTTPClient, path: str, offset: int, length: int,
                 chunk_size: int, stop: threading.Event) -> None:
        self.offset, self.length = offset, length
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stop = stop
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(http, path, chunk_size),
                                        name=f"part-{offset}", daemon=True)
        self._thread.start()

    def _run(self, http: HTTPClient, path: str, chunk_size: int) -> None:
        try:
            for chunk in stream(http, path, offset=self.offset, length=self.length,
                                verify=False, chunk_size=chunk_size):
                if self._stop.is_set():
                    return   # the consumer went away: close the connection
                self._queue.put(chunk)
            self._queue.put(self._END)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            self._queue.put(error)
        finally:
            self.finished.set()

    def chunks(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def _verify(algo: str, want: str, hashing: BackgroundHash, path: str) -> None:
    """HashMismatch unless what was hashed is what the server published."""
    got = hashing.hexdigest()
    if got != want:
        LOG.error("%s of %s is %s, the server published %s", algo, path, got, want)
        raise exc.HashMismatch(f"{algo} mismatch for {path}: got {got}, expected {want}")
    LOG.debug("%s verified for %s", algo, path)


class BackgroundHash:
    """Hashes chunks in a worker thread while the caller fetches the next: the
    one hashing thread of the client (downloads, uploads) and of the mount
    (its Verifier).

    hashlib releases the GIL on large buffers, so a download costs the slower
    of the network and the hash rather than their sum. ``depth`` bounds the
    queue, so memory stays at a few chunks and a caller faster than the hash
    waits; None leaves it unbounded, for a caller that must never block (the
    mount's trio thread, which bounds its own backlog). ``on_progress`` is
    called from the hashing thread after each chunk and once more when the
    digest is there.

    ``busy_seconds`` is the wall time the thread had a chunk in hand: hashing it,
    or waiting for a core or for the GIL to go on. Next to ``cpu_seconds`` it
    shows what the machine's other work took from the hash; next to the time a
    download took, whether the hash set its pace (it was busy nearly all along).
    ``core_wait_seconds`` is the part of the thread's life it could run but
    waited for a core (the kernel's scheduler statistics, :func:`core_wait`; it
    wakes for a chunk, so nearly all of that wait is with one in hand): what
    ``busy_seconds`` holds beyond it and ``cpu_seconds`` is, roughly, the GIL.
    """

    _DONE = b""

    def __init__(self, hasher: hashlib._Hash, depth: int | None = 8,
                 on_progress: Callable[[], None] | None = None, name: str = "hash") -> None:
        self._hasher = hasher
        self._queue: queue.Queue[Chunk] = queue.Queue(maxsize=depth or 0)
        self._on_progress = on_progress
        self._abandoned = threading.Event()
        self.hashed = 0                  # chunks hashed so far
        self.digest: str | None = None   # once finish() was called and all is hashed
        self.cpu_seconds = 0.0           # the thread's CPU time, once the digest is there
        self.busy_seconds = 0.0          # wall time with a chunk in hand (see above)
        self.core_wait_seconds = 0.0     # runnable, waiting for a core (see above), once done
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.thread_time()
        waited = core_wait()
        while not self._abandoned.is_set():
            try:
                chunk = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if chunk is self._DONE:
                digest = self._hasher.hexdigest()
                self.cpu_seconds = time.thread_time() - started
                self.core_wait_seconds = core_wait() - waited
                self.digest = digest
                if self._on_progress is not None:
                    self._on_progress()
                return
            taken = time.perf_counter()
            self._hasher.update(chunk)
            self.busy_seconds += time.perf_counter() - taken
            self.hashed += 1
            if self._on_progress is not None:
                self._on_progress()

    def update(self, chunk: Chunk) -> None:
        if chunk:
            self._queue.put(chunk)

    def finish(self) -> None:
        """No more chunks: ``digest`` follows once the queue is hashed."""
        self._queue.put(self._DONE)

    def hexdigest(self) -> str:
        self.finish()
        self._thread.join()
        assert self.digest is not None
        return self.digest

    def abandon(self) -> None:
        """Stop without a digest (the thread ends within half a second)."""
        self._abandoned.set()

    def __del__(self) -> None:
        # A download closed early must not leave its thread waiting forever.
        self._abandoned.set()


def core_wait() -> float:
    """Seconds the calling thread has been runnable but waiting for a core since it
    started (Linux: ``run_delay`` of ``/proc/thread-self/schedstat``); 0.0 where the
    kernel does not tell. On a machine whose cores are all busy a thread waits there,
    whatever its own code does: the figure that says the machine, not the thread,
    set the pace."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class _LowWater:
    """Fewer, larger receives for a body arriving slowly (a far or capped link).

    Where data comes in small bursts (a gateway, a rate-limited back end), every
    receive returns a few KiB and costs a poll, a recv and a hand-over of the GIL:
    on a far link with 4 streams the mount spent 5.0 CPU s/GiB reading against
    3.6 on loopback. SO_RCVLOWAT tells the kernel to wake the reader only once
    ``LOW_WATER`` bytes are there. It must never ask for more than the body still
    has to send (the connection stays open after it, so the wait would last until
    the timeout): it is set only while more than ``LOW_WATER`` bytes remain beyond
    the chunk being read, and reset before the connection goes back to the pool.
    Plain TCP only: a TLS socket's records make the count of bytes unrelated to
    what a read returns.
    """

    def __init__(self, resp: requests.Response) -> None:
        connection = getattr(resp.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        self._sock = sock if isinstance(sock, socket.socket) and \
            not isinstance(sock, ssl.SSLSocket) else None
        self._now = 1

    def before(self, want: int, remaining: int | None) -> None:
        """About to read ``want`` bytes of a body with ``remaining`` left."""
        if self._sock is None:
            return
        mark = LOW_WATER if remaining is not None and remaining - want >= LOW_WATER else 1
        self._set(mark)

    def reset(self) -> None:
        self._set(1)

    def _set(self, mark: int) -> None:
        if mark == self._now or self._sock is None:
            return
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, mark)
            self._now = mark
        except OSError:
            self._sock = None    # closed under us: the read says why


def _one_response(http: HTTPClient, path: str, pos: int, end: int | None,
                  plain: bool, chunk_size: int,
                  buffers: BufferPool | None = None) -> Iterator[Chunk]:
    """Chunks of one GET starting at ``pos``; adapts to servers ignoring Range."""
    headers = {}
    if not plain:
        # Never send Range for a whole read from 0: Glance crashes on a ranged
        # GET of an image without data, and a plain GET is what curl does.
        headers["Range"] = f"bytes={pos}-" if end is None else f"bytes={pos}-{end - 1}"
    resp = http.request("GET", path, headers=headers, stream=True)
    low_water = _LowWater(resp)
    try:
        if resp.status_code == 204:
            return
        skip = 0
        if resp.status_code == 206:
            match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != pos or (
                    end is not None and int(match.group(2)) > end - 1):
                raise exc.InvalidResponse(
                    f"asked {path} for bytes {pos}-{'' if end is None else end - 1}, "
                    f"got Content-Range {resp.headers.get('Content-Range')!r}")
        elif headers:
            # 200 to a ranged request: the server sent everything from 0.
            skip = pos
            if not http.range_ignored:
                LOG.info("%s ignores Range requests; skipping to byte %d of the whole body",
                         http.endpoint, pos)
                http.range_ignored = True
        remaining = None if end is None else end - pos
        raw = resp.raw
        body = getattr(raw, "_fp", None)   # http.client's response under urllib3's
        if buffers is not None and buffers.size == chunk_size and not skip and \
                remaining is not None and isinstance(body, WireResponse) and \
                hasattr(raw, "_error_catcher") and not resp.headers.get("Content-Encoding"):
            remaining = yield from _into_buffers(raw, body, buffers, remaining, low_water)
        else:
            while remaining is None or remaining > 0:
                want = chunk_size if remaining is None else min(chunk_size, remaining + skip)
                if skip:
                    want = min(chunk_size, skip)
                low_water.before(want, None if remaining is None else remaining + skip)
                chunk = raw.read(want, decode_content=False)
                if not chunk:
                    break
                if skip:
                    skip -= len(chunk)
                    continue
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        if remaining:
            raise requests.exceptions.ChunkedEncodingError(
                f"connection closed with {remaining} bytes missing")
    finally:
        low_water.reset()
        resp.close()


def _into_buffers(raw: urllib3.HTTPResponse, body: WireResponse,
                  buffers: BufferPool, remaining: int,
                  low_water: _LowWater) -> Generator[Chunk, None, int]:
    """``remaining`` bytes of a body, each whole chunk received into a pooled buffer
    (``readinto`` on http.client's response, which urllib3 reads through too; its
    ``_fp`` and ``_error_catcher`` are urllib3 internals, in 1.26 and 2.x alike:
    where either is missing, chunks are read as new objects). A chunk shorter
    than a buffer (the last one, or what came before the body ended) is yielded
    as bytes of its own. Returns the bytes the body still owed when it ended."""
    while remaining > 0:
        want = min(buffers.size, remaining)
        buffer = buffers.take()
        got = 0
        with memoryview(buffer) as view:
            # urllib3's own handling, as its read has it: socket and http.client
            # errors become its exceptions (a stalled body is a ReadTimeoutError and
            # is resumed as before), and once the body is read to its end the
            # connection goes back to the pool.
            with raw._error_catcher():
                while got < want:
                    low_water.before(want - got, remaining - got)
                    received = body.readinto(view[got:want])
                    if not received:
                        break
                    got += received
            short = bytes(view[:got]) if got < buffers.size else None
        remaining -= got
        if short is None:
            yield buffer
        elif short:
            yield short
        del buffer             # the consumer holds it now, or it is free again
        if got < want:
            break              # the body ended early
    return remaining


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) < 200 else text[:197] + "..."

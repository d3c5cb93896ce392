"""A far Glance on loopback: a TCP proxy that emulates a long, capped link.

Every figure taken with Glance on 127.0.0.1 hides what a real cloud adds: tens of
milliseconds between client and server, and per-connection caps (load balancers,
gateways, the per-stream limits of Swift/Ceph/S3 back ends). Put this proxy between a
client (or the mount) and a real Glance and it becomes a "remote Glance", with no root
and no ``tc``:

* ``delay``: one-way delay, in each direction. A pipeline, not a pause per chunk: bytes
  that pass the proxy at ``t`` come out at ``t + delay``, and meanwhile the next bytes
  are read, so a delay costs round trips, never throughput. A new connection costs one
  round trip before its first byte goes (TCP's handshake), so a client that opens a
  connection per request pays for it as it would on a real link.
* ``rate``: bytes per second of each connection, in each direction (a token bucket;
  reading stops while it is empty, so the sender is held back by TCP as behind a real
  bottleneck).
* ``total_rate``: bytes per second of all connections together, per direction.

What it does not emulate: loss, jitter, TCP's own window and slow start over the long
path (the client's TCP sees loopback; the queue between the two sides of the proxy is
bounded by ``2 x rate x delay`` and at least 4 MiB).

Command line (runs until SIGINT/SIGTERM; prints where it listens)::

    python -m glancefs.testing.linkproxy --listen 9393 --upstream 127.0.0.1:9292 \\
        --delay-ms 20 --rate 40M --total-rate 400M

Rates are bytes per second; K, M and G are powers of 1024 (``40M`` is 40 MiB/s).
In tests: ``with LinkProxy("127.0.0.1", glance.port, delay=0.02, rate=8 * MiB) as link:``
then use ``link.endpoint``.
"""
from __future__ import annotations

import argparse
import collections
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

from glancefs.api.values import parse_size

KiB = 1024
MiB = 1024 * KiB
BURST = 64 * KiB          # what a bucket lets through at once (one read)
MIN_QUEUE = 4 * MiB       # bytes in flight inside the proxy, per direction, at least
UNCAPPED = 2 * 1024 * MiB  # the rate assumed for the queue bound when nothing caps it


class TokenBucket:
    """``rate`` bytes per second with a burst of ``burst``; shared by threads.

    A taker may run the bucket into debt and then sleeps until it is paid off, so
    takers that share a bucket share its rate (each waits behind the debt of all).
    """

    def __init__(self, rate: float, burst: int = BURST) -> None:
        if rate <= 0:
            raise ValueError("a rate must be positive")
        self.rate = float(rate)
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


@dataclass
class LinkStats:
    connections: int = 0
    open: int = 0           # connections open now
    peak_open: int = 0      # most connections open at once (parallel GETs show here)
    bytes_up: int = 0       # client -> server, counted as each piece is sent on
    bytes_down: int = 0     # server -> client (same)


class _Pipe:
    """One direction of one connection: a reader thread that takes bytes off ``src``
    at the link's rate and stamps them with the time they may come out, and a writer
    thread that sends them to ``dst`` at that time."""

    def __init__(self, conn: _Connection, src: socket.socket, dst: socket.socket,
                 buckets: list[TokenBucket], not_before: float, up: bool) -> None:
        self.conn = conn
        self.src, self.dst = src, dst
        self.buckets = buckets
        self.not_before = not_before
        self.up = up
        link = conn.link
        slowest = min([b.rate for b in buckets] or [UNCAPPED])
        self.limit = max(MIN_QUEUE, int(2 * slowest * link.delay))
        self.read_size = BURST if buckets else 256 * KiB
        self._queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self.finished = threading.Event()

    def start(self) -> None:
        for target, name in ((self._read, "read"), (self._write, "write")):
            threading.Thread(target=target, name=f"link-{name}", daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                data = self.src.recv(self.read_size)
                for bucket in self.buckets:
                    bucket.take(len(data))
                # Out at the time it passed the bottleneck plus the delay (and, on a
                # new connection, not before the handshake's round trip).
                release = max(time.monotonic(), self.not_before) + self.conn.link.delay
                with self._cond:
                    while self._queued >= self.limit and not self.conn.closed:
                        self._cond.wait(0.5)
                    if self.conn.closed:
                        return
                    self._queue.append((release, data or None))
                    self._queued += len(data)
                    self._cond.notify_all()
                if not data:
                    return
        except OSError:
            self.conn.abort()

    def _write(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self.conn.closed:
                        self._cond.wait(0.5)
                    if self.conn.closed:
                        return
                    release, data = self._queue.popleft()
                    self._queued -= len(data or b"")
                    self._cond.notify_all()
                wait = release - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if data is None:
                    # The sender is done: pass its FIN on, the other way may go on.
                    self.dst.shutdown(socket.SHUT_WR)
                    return
                # Counted as handed over, before the send: a receiver that has every
                # byte (and its caller reading the stats) must find them all counted.
                self.conn.link._count(self.up, len(data))
                self.dst.sendall(data)
        except OSError:
            self.conn.abort()
        finally:
            self.finished.set()
            self.conn.pipe_done()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class _Connection:
    def __init__(self, link: LinkProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.link = link
        self.client, self.upstream = client, upstream
        self.closed = False
        self._lock = threading.Lock()
        self._done = 0
        accepted = time.monotonic()
        up = [b for b in (link._bucket(), link._total_up) if b is not None]
        down = [b for b in (link._bucket(), link._total_down) if b is not None]
        self.pipes = (_Pipe(self, client, upstream, up, accepted + 2 * link.delay, True),
                      _Pipe(self, upstream, client, down, 0.0, False))

    def start(self) -> None:
        for pipe in self.pipes:
            pipe.start()

    def pipe_done(self) -> None:
        with self._lock:
            self._done += 1
            last = self._done == len(self.pipes)
        if last:
            self.abort()

    def abort(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for pipe in self.pipes:
            pipe.wake()
        self.link._forget(self)


class LinkProxy:
    """Listens on ``host:port`` (0: a free port) and forwards every connection to
    ``upstream_host:upstream_port`` through an emulated link (see the module)."""

    def __init__(self, upstream_host: str, upstream_port: int, *, delay: float = 0.02,
                 rate: float | None = None, total_rate: float | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        if delay < 0:
            raise ValueError("the delay must not be negative")
        self.upstream = (upstream_host, upstream_port)
        self.delay = delay
        self.rate = rate
        self.total_rate = total_rate
        self._total_up = TokenBucket(total_rate) if total_rate else None
        self._total_down = TokenBucket(total_rate) if total_rate else None
        self.stats = LinkStats()
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._listener = socket.create_server((host, port))
        self.host = host
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="link-accept",
                                        daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def describe(self) -> str:
        def per_second(value: float | None) -> str:
            return "uncapped" if not value else f"{value / MiB:g} MiB/s"
        return (f"{self.host}:{self.port} -> {self.upstream[0]}:{self.upstream[1]}, "
                f"{self.delay * 1000:g} ms each way, {per_second(self.rate)} per connection, "
                f"{per_second(self.total_rate)} in all")

    def _bucket(self) -> TokenBucket | None:
        return TokenBucket(self.rate) if self.rate else None

    def start(self) -> LinkProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            live = list(self._connections)
        for conn in live:
            conn.abort()

    def __enter__(self) -> LinkProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset_stats(self) -> None:
        with self._lock:
            # Connections still open stay counted: they close after the reset.
            live = len(self._connections)
            self.stats = LinkStats(open=live, peak_open=live)

    def _count(self, up: bool, n: int) -> None:
        with self._lock:
            if up:
                self.stats.bytes_up += n
            else:
                self.stats.bytes_down += n

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            if conn in self._connections:
                self._connections.discard(conn)
                self.stats.open -= 1

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, client, upstream)
            with self._lock:
                self.stats.connections += 1
                self.stats.open += 1
                self.stats.peak_open = max(self.stats.peak_open, self.stats.open)
                self._connections.add(conn)
            conn.start()


def parse_rate(text: str) -> float | None:
    """Bytes per second from ``40M``, ``400MiB/s``, ``1.5G``, ``65536``; None for
    ``0``, ``none`` or ``off`` (uncapped). A size per second: the project's one
    size parser reads the number."""
    if text.strip().lower() in ("none", "off", "0", ""):
        return None
    return parse_size(text.strip().removesuffix("/s").removesuffix("/S")) or None


def _upstream(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _rate_arg(text: str) -> float | None:
    try:
        return parse_rate(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m glancefs.testing.linkproxy",
        description="Forward TCP connections through an emulated far link: a one-way "
                    "delay each direction and rate caps per connection and in all.")
    parser.add_argument("--listen", type=int, default=0, metavar="PORT",
                        help="port to listen on (default 0: a free one, printed)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--upstream", type=_upstream, required=True, metavar="HOST:PORT",
                        help="where connections go (e.g. a Glance at 127.0.0.1:9292)")
    parser.add_argument("--delay-ms", type=float, default=20.0,
                        help="one-way delay in each direction, ms (default 20)")
    parser.add_argument("--rate", type=_rate_arg, default=None,
                        help="cap of each connection, bytes/s per direction, K/M/G = "
                             "KiB/MiB/GiB (e.g. 40M; default uncapped)")
    parser.add_argument("--total-rate", type=_rate_arg, default=None,
                        help="cap of all connections together, per direction (e.g. 400M)")
    args = parser.parse_args(argv)
    link = LinkProxy(args.upstream[0], args.upstream[1], delay=args.delay_ms / 1000,
                     rate=args.rate, total_rate=args.total_rate, host=args.host,
                     port=args.listen).start()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"linkproxy: {link.describe()}", flush=True)
    stop.wait()
    link.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

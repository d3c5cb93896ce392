"""A TCP proxy that injects faults between a client and a real server.

Tests put it in front of Glance to see what the client does when a
connection is cut in the middle of a body, when the server answers 503/429,
or when it stalls. Faults are queued as :class:`Fault` values; each new
connection takes the next one whose ``match`` fits the request line, so a
test says exactly which request breaks and how. It also counts the
connections and the bytes the server sent (headers included), so tests can
check how much a read transferred (:meth:`FaultProxy.reset_stats` starts the
count again) and keeps each request's head (``Stats.heads``, to check the headers a
client sent), and with ``strip_range=True`` it drops the ``Range`` header of
every request, to act like a server that ignores it (v1). ``add_headers``
are put into every request head: in front of a Glance in ``headers`` auth
mode they make a client that sends no identity (the mount) act as one
project (``glance_server.identity_headers``).
"""
from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class Fault:
    """One fault for one connection whose request line contains ``match``.

    ``cut_after``: forward that many bytes of the answer, then reset.
    ``respond``: answer with these raw bytes instead of forwarding
    (``b""``: close the connection without an answer).
    ``stall``: forward nothing back for that many seconds first;
    ``stall_after``: with ``stall``, forward the answer's head and that many
    bytes of its body first, then stall (a server that stalls mid-body;
    0: right after the headers).
    ``hold``: forward nothing, answer nothing: the connection stays open
    until the fault is cleared (:meth:`FaultProxy.clear`), like a load
    balancer in front of a server that never answers.
    ``idle_for``: only for a request that comes on a keep-alive connection
    idle for at least that many seconds since its last answer (with
    ``respond=b""``: a gateway whose idle timeout closes the connection just
    as the request arrives).

    A stall or a hold ends early when the proxy's faults are cleared.
    """
    match: str = ""
    cut_after: int | None = None
    respond: bytes | None = None
    stall: float = 0.0
    stall_after: int | None = None
    hold: bool = False
    idle_for: float | None = None
    times: int = 1


def http_response(status: int, reason: str, body: bytes = b"",
                  headers: dict[str, str] | None = None) -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}",
            "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_RANGE_HEADER = re.compile(rb"\r\nRange:[^\r\n]*", re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"\r\nContent-Length:\s*(\d+)", re.IGNORECASE)
_METHODS = (b"GET ", b"PUT ", b"POST ", b"HEAD ", b"PATCH ", b"DELETE ")


@dataclass
class _Answer:
    """What the fault of the request in flight on one connection did so far."""
    fault: Fault | None = None
    sent: int = 0                 # bytes of the answer forwarded
    head: bytes = b""             # the answer's head, while it is incomplete
    body_at: int | None = None    # where the body began, in the chunk that held it
    body_sent: int = 0
    stalled: bool = False


@dataclass
class Stats:
    connections: int = 0
    bytes_from_server: int = 0
    requests: list[str] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)    # request line and headers

    def headers_of(self, request_start: str) -> list[dict[str, str]]:
        """The headers (names in lower case) of each request whose line starts with
        ``request_start`` (e.g. ``"PUT /v2/images/ID/file"``)."""
        found = []
        for head in self.heads:
            line, _, rest = head.partition("\r\n")
            if line.startswith(request_start):
                pairs = (h.partition(":") for h in rest.split("\r\n") if h)
                found.append({k.strip().lower(): v.strip() for k, _, v in pairs})
        return found


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, port: int = 0,
                 strip_range: bool = False,
                 add_headers: Mapping[str, str] | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.strip_range = strip_range
        self.add_headers = b"".join(f"{k}: {v}\r\n".encode("latin-1")
                                    for k, v in (add_headers or {}).items())
        self.faults: list[Fault] = []
        self.stats = Stats()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._cleared = threading.Event()    # replaced by clear(): wakes stalls and holds
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def clear(self) -> None:
        """No more faults; stalls and holds in progress end now."""
        with self._lock:
            self.faults.clear()
            cleared, self._cleared = self._cleared, threading.Event()
        cleared.set()

    def reset_stats(self) -> None:
        """Count from zero again (connections, bytes, requests)."""
        with self._lock:
            self.stats = Stats()

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._cleared.set()
        self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _take_fault(self, request_line: str, idle: float | None) -> Fault | None:
        """``idle``: seconds the connection waited since its last answer (None:
        its first request)."""
        with self._lock:
            self.stats.requests.append(request_line)
            for fault in self.faults:
                if fault.idle_for is not None and (idle is None or idle < fault.idle_for):
                    continue
                if fault.match in request_line and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _keep_head(self, head: bytes) -> None:
        with self._lock:
            self.stats.heads.append(head.decode("latin-1"))

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.stats.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        """One client connection. Keep-alive connections carry several
        requests: each request head is inspected for a fault before it is
        forwarded."""
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        answer = [_Answer()]      # the answer in flight on this connection
        answered_at: list[float | None] = [None]   # when its last answer's bytes went
        done = threading.Event()

        def client_to_server() -> None:
            buffer = b""
            inspected = False     # this request's line was seen (a head may span recvs)
            body_left = 0         # bytes of this request's body (Content-Length) to come
            try:
                while True:
                    data = client.recv(65536)
                    if not data:
                        break
                    if body_left:
                        # A body is forwarded untouched; what follows it on a
                        # keep-alive connection is the next request's head.
                        taken = min(body_left, len(data))
                        body_left -= taken
                        upstream.sendall(data[:taken])
                        data = data[taken:]
                        if not data:
                            continue
                    buffer += data
                    if self.strip_range and buffer.startswith(_METHODS):
                        # Only in a request head: a body is forwarded untouched.
                        data = _RANGE_HEADER.sub(b"", data)
                    if buffer.startswith(_METHODS) and b"\r\n" in buffer and not inspected:
                        inspected = True
                        if self.add_headers:
                            # Right after the request line, which ends in this chunk.
                            at = buffer.index(b"\r\n") + 2 - (len(buffer) - len(data))
                            data = data[:at] + self.add_headers + data[at:]
                        line = buffer.split(b"\r\n", 1)[0].decode("latin-1")
                        cleared = self._cleared
                        last = answered_at[0]
                        fault = self._take_fault(
                            line, None if last is None else time.monotonic() - last)
                        if fault and fault.respond is not None:
                            client.sendall(fault.respond)
                            break
                        if fault and fault.hold:
                            cleared.wait()
                            break
                        # This request's answer is the one its fault (or none) acts
                        # on: a keep-alive connection's next request starts afresh.
                        answer[0] = _Answer(fault)
                    if b"\r\n\r\n" in buffer or len(buffer) > 65536:
                        if inspected and b"\r\n\r\n" in buffer:
                            head, rest = buffer.split(b"\r\n\r\n", 1)
                            self._keep_head(head)
                            body_left = max(0, _content_length(head) - len(rest))
                        buffer, inspected = b"", False
                    upstream.sendall(data)
            except OSError:
                pass
            finally:
                done.set()
                _close(upstream)
                _close(client)

        def server_to_client() -> None:
            try:
                while True:
                    data = upstream.recv(262144)
                    if not data:
                        break
                    state = answer[0]
                    fault = state.fault
                    if fault and fault.stall and fault.stall_after is not None \
                            and not state.stalled:
                        data = self._until_stall(client, fault, state, data)
                        if not data:
                            continue
                    elif fault and fault.stall and not state.stalled:
                        state.stalled = True
                        self._cleared.wait(fault.stall)
                    if fault and fault.cut_after is not None:
                        room = fault.cut_after - state.sent
                        if room <= len(data):
                            client.sendall(data[:max(room, 0)])
                            self._count(max(room, 0))
                            _reset(client)
                            break
                    client.sendall(data)
                    answered_at[0] = time.monotonic()
                    state.sent += len(data)
                    self._count(len(data))
            except OSError:
                pass
            finally:
                _close(upstream)
                _close(client)

        threading.Thread(target=client_to_server, daemon=True).start()
        server_to_client()

    def _until_stall(self, client: socket.socket, fault: Fault, state: _Answer,
                     data: bytes) -> bytes:
        """Forward the head and ``stall_after`` body bytes of ``data``, then
        stall; returns what is left to forward after the stall."""
        assert fault.stall_after is not None
        if state.body_at is None:
            head = state.head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                state.head = head
                client.sendall(data)
                self._count(len(data))
                return b""
            state.body_at = end + 4 - (len(head) - len(data))   # in this chunk
            body_start = state.body_at
        else:
            body_start = 0
        room = body_start + fault.stall_after - state.body_sent
        now, rest = data[:max(room, 0)], data[max(room, 0):]
        client.sendall(now)
        self._count(len(now))
        state.body_sent += max(0, len(now) - body_start)
        if room <= len(data) and not state.stalled:
            state.stalled = True
            self._cleared.wait(fault.stall)
        return rest

    def _count(self, n: int) -> None:
        with self._lock:
            self.stats.bytes_from_server += n


def _content_length(head: bytes) -> int:
    """A request head's Content-Length (0 without one: no body, or chunked)."""
    found = _CONTENT_LENGTH.search(head)
    return int(found.group(1)) if found else 0


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0 makes the last close send RST: the client sees a reset,
    # not a clean end. SHUT_RD wakes the other pump thread blocked in recv()
    # on this socket; until it lets go, the kernel would not close it at all.
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    _close(sock, shutdown=False)


def _close(sock: socket.socket, shutdown: bool = True) -> None:
    try:
        if shutdown:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass

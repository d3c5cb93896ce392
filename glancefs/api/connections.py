"""Pooled connections, and the one rule about reusing them.

Why it is shaped this way: a server, or a gateway in front of it, closes a
keep-alive connection that sat idle for its own timeout (gunicorn 2 s, Apache
5 s, a cloud load balancer 60 s, nginx 75 s), and the client cannot know when.
A request sent on such a connection at the moment the other end closes it is
reset, and the client cannot tell whether it was read. urllib3 opens a new
connection when it sees an old one closed, and glancefs sends a safe request
(GET, HEAD) again anyway (glancefs.api.http); but a request that is not safe to
repeat (POST, PUT, PATCH, DELETE) would fail: a create after a pause, an ``rm``
at the prompt, a token from Keystone.

So a request that is not safe to repeat is never sent on a connection that sat
idle for more than :data:`STALE_AFTER` seconds: it gets a new one, which the
other end cannot have timed out. The cost is one connection set-up for such a
request after a pause; those requests are few (create, upload, update, delete)
next to reads, which keep reusing their connections whatever their age.

The rule sits in urllib3's connection pool, the only place that knows both the
request's method and the connection's idle time; :class:`PoolAdapter` puts the
pool under a requests session.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Below every idle timeout in common use (gunicorn's 2 s is the shortest).
STALE_AFTER = 1.0
_IDLE_SINCE = "_glancefs_idle_since"   # set on a connection when it goes back to the pool

_request = threading.local()           # whether this thread's request is unsafe to repeat


@contextlib.contextmanager
def _unsafe_to_repeat(method: str) -> Iterator[None]:
    outer = getattr(_request, "unsafe", False)
    _request.unsafe = method.upper() not in SAFE_METHODS
    try:
        yield
    finally:
        _request.unsafe = outer


def _fresh_if_stale(conn: Any) -> Any:
    idle_since = getattr(conn, _IDLE_SINCE, None)
    if getattr(_request, "unsafe", False) and idle_since is not None and \
            time.monotonic() - idle_since > STALE_AFTER:
        # urllib3 connects a closed connection again when it sends on it; it is
        # marked idle again when it goes back to the pool (_mark_idle).
        conn.close()
    return conn


def _mark_idle(conn: Any) -> None:
    if conn is not None:
        setattr(conn, _IDLE_SINCE, time.monotonic())


class FreshHTTPConnectionPool(HTTPConnectionPool):
    def urlopen(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        with _unsafe_to_repeat(method):
            return super().urlopen(method, url, *args, **kwargs)

    def _get_conn(self, timeout: float | None = None) -> Any:
        return _fresh_if_stale(super()._get_conn(timeout))

    def _put_conn(self, conn: Any) -> None:
        _mark_idle(conn)
        super()._put_conn(conn)


class FreshHTTPSConnectionPool(FreshHTTPConnectionPool, HTTPSConnectionPool):
    """The same over TLS: the methods above, then HTTPSConnectionPool's (its scheme,
    its connections, its __init__)."""


POOL_CLASSES = {"http": FreshHTTPConnectionPool, "https": FreshHTTPSConnectionPool}


class PoolAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with the pools above (also behind an HTTP proxy)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = POOL_CLASSES
        return manager

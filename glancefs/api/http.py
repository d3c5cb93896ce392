"""HTTP for the Images API: one keystoneauth1 session, retries of safe
requests, status -> exception, and streamed bodies.

Why keystoneauth1 for everything, even a bare token: the same code path then
serves a token + endpoint, a password or an application credential, and the
session renews an expiring token before a request (and once after a 401)
without the caller noticing. Its debug log masks tokens.
"""
from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint

from glancefs.api import exceptions as exc
from glancefs.api.connections import SAFE_METHODS, PoolAdapter

LOG = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 503})
CHUNK_SIZE = 1024 * 1024
MAX_ERROR_BODY = 64 * 1024
USER_AGENT = "glancefs"
_VERSION_SUFFIX = re.compile(r"/v\d+(\.\d+)?/?$")
_URL_IN_TEXT = re.compile(r"https?://[^\s:'\"]+(:\d+)?[^\s'\"]*")


def strip_version(endpoint: str) -> str:
    """glanceclient accepts endpoints with or without a /v1 or /v2 suffix;
    the paths we build always carry the version themselves."""
    return _VERSION_SUFFIX.sub("", endpoint.rstrip("/"))


class SizedIterable:
    """An iterable body with a known length, so requests sends it with
    Content-Length in large chunks instead of 8 KiB file reads or chunked
    encoding."""

    def __init__(self, chunks: Iterable[bytes], length: int) -> None:
        self._chunks = chunks
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)


@dataclass(frozen=True)
class _Deadline:
    at: float          # time.monotonic() by which the answer must be here
    seconds: float     # the whole allowance, for the error message


class HTTPClient:
    """Sends requests to one Images endpoint through a keystoneauth1 session.

    ``endpoint`` may be given (with or without a version suffix); otherwise it
    is looked up in the service catalog as the ``image`` service.

    Time limits, and why there are three:

    * ``connect_timeout``: opening a connection. Short, so a refused or
      unroutable server is known in seconds.
    * ``timeout``: the longest wait for a byte from the server (the socket's
      read timeout). A stalled body fails after it.
    * ``deadline``: the overall limit of one request until its answer's
      headers, retries and back-off included (the retries happen inside it,
      never after it); ``None`` (the command line's default, as
      python-glanceclient) bounds each attempt only. The mount sets it, and
      :meth:`within` gives the requests of one thread a tighter one (a
      metadata operation's). Uploads are not bounded by it: their data takes
      as long as it takes, and ``upload_timeout`` bounds the wait for the
      answer after the data.
    """

    def __init__(self, endpoint: str | None = None, *, token: str | None = None,
                 session: ks_session.Session | None = None,
                 insecure: bool = False, cacert: str | None = None,
                 cert: str | None = None, key: str | None = None,
                 timeout: float | None = 600.0, connect_timeout: float = 10.0,
                 upload_timeout: float | None = 600.0, deadline: float | None = None,
                 retries: int = 4, max_backoff: float = 30.0,
                 interface: str = "public", region_name: str | None = None,
                 service_type: str = "image", pool_size: int = 32,
                 **_ignored: Any) -> None:
        if session is None:
            if endpoint is None:
                raise exc.ClientException(
                    "an endpoint is needed when no keystone session is given "
                    "(set OS_IMAGE_URL or --os-image-url)")
            verify: bool | str = False if insecure else (cacert or True)
            auth = token_endpoint.Token(strip_version(endpoint), token) if token else None
            client_cert = (cert, key) if cert and key else cert
            session = ks_session.Session(auth=auth, verify=verify, cert=client_cert,
                                         user_agent=USER_AGENT)
        self.session = session
        if getattr(session, "timeout", None) is None and timeout is not None:
            # keystoneauth asks Keystone for tokens with the session's own
            # timeout, which is none at all: a stalled Keystone would hold a
            # request forever.
            session.timeout = timeout
        self._mount_pool(session, pool_size)
        self._endpoint = strip_version(endpoint) if endpoint else None
        self._endpoint_lock = threading.Lock()
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.upload_timeout = upload_timeout
        self.deadline = deadline
        self._local = threading.local()    # the deadline set by within(), per thread
        self.retries = retries
        self.max_backoff = max_backoff
        self.interface = interface
        self.region_name = region_name
        self.service_type = service_type
        # Set once a ranged GET is answered 200 with the whole body (Images
        # v1 does that): readers of small parts should then stream instead.
        self.range_ignored = False
        # Requests sent again (and downloads resumed, glancefs.api.download): the
        # mount's counters report it (glancefs.fs.stats).
        self.retried = 0

    @staticmethod
    def _mount_pool(session: ks_session.Session, pool_size: int) -> None:
        # Many FUSE readers run at once; requests' default pool of 10
        # connections would make them queue or open throw-away connections.
        # A request unsafe to repeat never goes on a connection idle long
        # enough for the other end to close it (glancefs.api.connections).
        adapter = PoolAdapter(pool_connections=4, pool_maxsize=pool_size)
        session.session.mount("http://", adapter)
        session.session.mount("https://", adapter)

    @property
    def endpoint(self) -> str:
        with self._endpoint_lock:
            if self._endpoint is None:
                try:
                    found = self.session.get_endpoint(
                        service_type=self.service_type, interface=self.interface,
                        region_name=self.region_name)
                except ks_exc.ClientException as e:
                    raise translate_keystone_error(e) from None
                if not found:
                    raise exc.ClientException(
                        f"no '{self.service_type}' endpoint ({self.interface}) "
                        "in the service catalog")
                self._endpoint = strip_version(found)
            return self._endpoint

    @property
    def authenticated(self) -> bool:
        return self.session.auth is not None

    def url(self, path: str) -> str:
        return self.endpoint + path

    @contextlib.contextmanager
    def within(self, seconds: float | None, retries: int | None = None) -> Iterator[None]:
        """Requests made by this thread inside the block get their answer
        within ``seconds`` in all (the tighter of this and an enclosing
        deadline), or raise :class:`DeadlineExceeded`; with ``retries``, they
        are retried that many times at most. None: no change."""
        outer = getattr(self._local, "deadline", None)
        outer_retries = getattr(self._local, "retries", None)
        if seconds is not None:
            at = time.monotonic() + seconds
            if outer is None or at < outer.at:
                self._local.deadline = _Deadline(at, seconds)
        if retries is not None:
            self._local.retries = retries
        try:
            yield
        finally:
            self._local.deadline = outer
            self._local.retries = outer_retries

    @property
    def retries_now(self) -> int:
        """How many times a failed request of this thread is retried."""
        chosen = getattr(self._local, "retries", None)
        return self.retries if chosen is None else chosen

    def _request_deadline(self) -> _Deadline | None:
        chosen = getattr(self._local, "deadline", None)
        if self.deadline is not None:
            own = _Deadline(time.monotonic() + self.deadline, self.deadline)
            if chosen is None or own.at < chosen.at:
                chosen = own
        return chosen

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                params: Any = None, json: Any = None, data: Any = None,
                stream: bool = False, ok: Iterable[int] = (),
                upload: bool = False) -> requests.Response:
        """One request; raises the exception of its error status.

        ``upload``: ``data`` is image data. Its answer may take long after the
        body (the server finishes writing and hashing the image), so it gets
        ``upload_timeout``, while sending still fails after ``timeout`` of a
        server that stopped reading.

        Safe methods are retried on connection errors, 429 and 503 (with
        Retry-After honoured); nothing else is retried, because a repeated
        POST or a re-sent upload body could create or corrupt an image.
        """
        url = self.url(path)
        attempts = self.retries_now + 1 if method in SAFE_METHODS else 1
        deadline = None if upload else self._request_deadline()
        delay = 0.5
        last_error: str | None = None
        for attempt in range(1, attempts + 1):
            if upload:
                timeouts = self._upload_timeouts()
            else:
                timeouts = self._timeouts(deadline, method, url, attempt, last_error)
            try:
                resp = self.session.request(
                    url, method, headers=dict(headers or {}), params=params, json=json,
                    data=data, stream=stream, raise_exc=False,
                    authenticated=self.authenticated,
                    # A consumed upload body cannot be sent again after a 401.
                    allow_reauth=data is None or isinstance(data, (bytes, str)),
                    timeout=timeouts, connect_retries=0)
            except ks_exc.ClientException as e:
                error = translate_keystone_error(e, method=method, url=url)
                if self._identity_unreachable(e):
                    # Getting a token failed, not the Images API: retrying the
                    # request would only ask the unreachable Keystone again.
                    raise exc.CommunicationError(
                        f"the identity service could not be reached for a token: "
                        f"{error.details}", method=method, url=url) from None
                if isinstance(e, ks_exc.SSLError) and "certificate" in str(e).lower():
                    # A certificate that failed verification fails the same way again.
                    raise error from None
                if isinstance(error, exc.CommunicationError) and deadline is not None and \
                        time.monotonic() >= deadline.at - 0.1:
                    # The attempt ran into the deadline (its timeouts end there).
                    raise self._expired(deadline, method, url, attempt, error.details) from None
                if attempt < attempts and isinstance(error, exc.CommunicationError):
                    wait = _jitter(delay)
                    if not self._time_for(deadline, wait):
                        raise error from None   # what failed says more than the clock
                    LOG.log(self._retry_level, "%s %s failed (%s); retry %d of %d", method, url,
                                error.details, attempt, attempts - 1)
                    self.retried += 1
                    time.sleep(wait)
                    delay = min(delay * 2, self.max_backoff)
                    last_error = error.details
                    continue
                raise error from None
            if resp.status_code in RETRY_STATUSES and attempt < attempts:
                wait = retry_after(resp.headers.get("Retry-After"), default=delay,
                                   cap=self.max_backoff)
                if self._time_for(deadline, wait):
                    LOG.log(self._retry_level, "%s %s answered %d; retry %d of %d in %.1fs",
                            method, url,
                                resp.status_code, attempt, attempts - 1, wait)
                    resp.close()
                    self.retried += 1
                    time.sleep(wait)
                    delay = min(delay * 2, self.max_backoff)
                    last_error = f"HTTP {resp.status_code}"
                    continue
                # No time left to wait for a retry: the server's own answer says why.
            if resp.status_code >= 300 and resp.status_code not in ok:
                raise error_from_response(resp, method, url)
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def _timeouts(self, deadline: _Deadline | None, method: str, url: str, attempt: int,
                  last_error: str | None) -> tuple[float | None, float | None]:
        """(connect, read) timeouts of one attempt: never past the deadline."""
        if deadline is None:
            return (self.connect_timeout, self.timeout)
        left = deadline.at - time.monotonic()
        if left <= 0:
            raise self._expired(deadline, method, url, attempt - 1, last_error)
        read = left if self.timeout is None else min(self.timeout, left)
        return (min(self.connect_timeout, left), read)

    @property
    def _retry_level(self) -> int:
        # The command line tells its user why it is slow; a mount logs the
        # failure once, when it is given up on (fs.errors), not every retry.
        return logging.WARNING if self.deadline is None else logging.DEBUG

    @staticmethod
    def _time_for(deadline: _Deadline | None, wait: float) -> bool:
        """Whether a retry after ``wait`` seconds still has time to be answered."""
        return deadline is None or time.monotonic() + wait + 0.5 < deadline.at

    @staticmethod
    def _expired(deadline: _Deadline | None, method: str, url: str, attempts: int,
                 last_error: str | None) -> exc.DeadlineExceeded:
        seconds = deadline.seconds if deadline is not None else 0.0
        tried = f" ({attempts} attempt{'s' if attempts != 1 else ''}" \
            f"{', last: ' + last_error if last_error else ''})" if attempts else ""
        return exc.DeadlineExceeded(f"no answer within {seconds:g} s{tried}",
                                    method=method, url=url)

    def _upload_timeouts(self) -> tuple[float | None, float | None]:
        # urllib3 applies the first figure while the body is sent (its "connect"
        # timeout covers sending) and the second to the wait for the answer.
        if self.timeout is None:
            return (None, self.upload_timeout)
        answer = None if self.upload_timeout is None else max(self.timeout, self.upload_timeout)
        return (max(self.connect_timeout, self.timeout), answer)

    def _identity_unreachable(self, error: ks_exc.ClientException) -> bool:
        """A connection failure that names another address than the Images
        endpoint: keystoneauth was asking Keystone for a token."""
        if not isinstance(error, (ks_exc.ConnectFailure, ks_exc.ConnectTimeout)):
            return False
        if isinstance(self.session.auth, token_endpoint.Token) or self._endpoint is None:
            return False
        named = _URL_IN_TEXT.search(str(error))
        return named is not None and not named.group(0).startswith(self._endpoint)

    def json_request(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.request(method, path, **kwargs)
        try:
            if resp.status_code == 204 or not resp.content:
                return None
            return resp.json()
        except ValueError:
            raise exc.InvalidResponse(
                f"expected JSON, got {resp.headers.get('Content-Type', 'no content type')}: "
                f"{exc.server_message(resp.content[:200])}",
                method=method, url=resp.url) from None

    def pages(self, path: str, key: str, params: Any,
              limit: int | None = None) -> Iterator[dict[str, Any]]:
        """The items under ``key`` of a listing Glance pages with ``next`` links
        (images, metadefs), ``limit`` of them at most. The server's next link
        keeps the query's filters and adds the marker."""
        url: str | None = path
        query: Any = params
        remaining = limit
        while url:
            body = self.json_request("GET", url, params=query)
            if body is None:
                return
            if not isinstance(body, dict) or not isinstance(body.get(key, []), list):
                raise exc.InvalidResponse(
                    f"expected an object with a list of {key}, got {type(body).__name__}",
                    method="GET", url=self.url(url))
            for raw in body.get(key, []):
                yield raw
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        return
            next_link = body.get("next")
            if not next_link:
                return
            split = urlsplit(next_link)
            url = split.path if split.path.startswith("/v2") else path
            query = [(k, v) for k, vs in parse_qs(split.query, keep_blank_values=True).items()
                     for v in vs]


def _jitter(delay: float) -> float:
    return delay * (0.75 + random.random() / 2)


def retry_after(value: str | None, *, default: float, cap: float) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return default
        seconds = when.timestamp() - time.time()
    return max(0.0, min(seconds, cap))


def error_from_response(resp: requests.Response, method: str, url: str) -> exc.HTTPException:
    body = b""
    try:
        for chunk in resp.iter_content(8192):
            body += chunk
            if len(body) >= MAX_ERROR_BODY:
                break
    except (requests.RequestException, OSError):
        pass
    finally:
        resp.close()
    details = exc.server_message(body, resp.headers.get("Content-Type", "")) or resp.reason or ""
    request_id = (resp.headers.get("x-openstack-request-id")
                  or resp.headers.get("x-compute-request-id"))
    return exc.from_status(resp.status_code, details, request_id=request_id,
                           method=method, url=url)


def translate_keystone_error(error: ks_exc.ClientException, *, method: str | None = None,
                             url: str | None = None) -> exc.ClientException:
    """keystoneauth1's errors in our tree, with nothing secret in the text."""
    if isinstance(error, (ks_exc.ConnectFailure, ks_exc.ConnectTimeout,
                          ks_exc.SSLError, ks_exc.UnknownConnectionError)):
        # keystoneauth says "Unable to establish connection" for a connection
        # that broke in the middle of a body too: say what is known.
        text = _first_line(error).replace("Unable to establish connection to",
                                          "connection to", 1)
        return exc.CommunicationError(_without_pool_report(text), method=method, url=url)
    if isinstance(error, ks_exc.HttpError):
        # Keystone itself refused (wrong password, unknown project ...).
        return exc.from_status(error.http_status or 500,
                               f"Keystone refused the request: {_first_line(error)}",
                               method=method, url=url)
    if isinstance(error, (ks_exc.MissingAuthPlugin, ks_exc.AuthPluginException,
                          ks_exc.MissingRequiredOptions)):
        return exc.HTTPUnauthorized(f"authentication is not configured: {_first_line(error)}",
                                    code=401, method=method, url=url)
    if isinstance(error, ks_exc.EndpointNotFound):
        return exc.ClientException(f"no image endpoint in the catalog: {_first_line(error)}")
    return exc.CommunicationError(_first_line(error), method=method, url=url)


_POOL_REPORT = re.compile(r"\w*HTTPS?ConnectionPool\(.*$")


def _without_pool_report(text: str) -> str:
    """'connection to URL: [Errno 111] Connection refused' instead of urllib3's
    report of its retries around it (the pool, the URL again, nested reprs)."""
    report = _POOL_REPORT.search(text)
    cause = exc.ERRNO_TEXT.search(report.group(0)) if report else None
    if report is None or cause is None:
        return text
    return text[:report.start()] + cause.group(0).strip()


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__

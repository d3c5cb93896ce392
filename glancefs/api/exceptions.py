"""The one exception tree of the Images API client.

Every error the client raises is a :class:`ClientException`. HTTP answers
become the subclass named after their status, and each carries ``code`` (the
HTTP status, or ``None``), ``details`` (the server's message, already cleaned
of HTML and JSON wrapping) and ``request_id`` where the server sent one::

    ClientException
    +-- CommunicationError         the server could not be reached, or the
    |   |                          connection failed and could not be resumed
    |   +-- DeadlineExceeded       no answer within the request's overall
    |   |                          deadline (its retries included)
    |   +-- TransferBroken         a download that the server answered broke
    |                              and could not be resumed
    +-- InvalidResponse            the server answered something malformed:
    |   |                          bad JSON, a short body, a Content-Range
    |   |                          that does not match the request
    |   +-- HashMismatch           downloaded bytes do not match the image's
    |                              os_hash_value / checksum
    +-- NoUniqueMatch              a name matches more than one image
    +-- ImportFailed               the server's import task failed; ``details``
    |                              is the task's own message
    +-- UnsupportedVersion         an API version other than 1 or 2
    +-- HTTPException              any HTTP error status; ``code`` says which
        +-- HTTPMultipleChoices    300 (e.g. a v1 request to a v2-only Glance)
        +-- HTTPBadRequest         400
        +-- HTTPUnauthorized       401 (renewing the token did not help)
        +-- HTTPForbidden          403 (policy, protected image, read-only field)
        +-- HTTPNotFound           404
        +-- HTTPMethodNotAllowed   405
        +-- HTTPConflict           409 (wrong status for the operation, duplicate)
        +-- HTTPOverLimit          413 (size cap, storage quota)
        +-- HTTPUnsupportedMediaType 415 (disk_format does not match the data)
        +-- HTTPRequestedRangeNotSatisfiable 416
        +-- HTTPTooManyRequests    429 (retried for safe requests first)
        +-- HTTPServerError        any 5xx
            +-- HTTPInternalServerError 500
            +-- HTTPBadGateway          502
            +-- HTTPServiceUnavailable  503 (retried for safe requests first)
            +-- HTTPGatewayTimeout      504

Every one of them, and the errors of the layers above that mark themselves as a person's
mistake (``summary``), is put into words by :func:`describe`: the command line, the mount
helper and the mounted file system's log all say a failure the same way.

The names follow python-glanceclient's ``glanceclient.exc`` so code written
for it keeps working; ``NotFound``/``Forbidden``/... aliases are provided too.
"""
from __future__ import annotations

import html
import json
import re


class ClientException(Exception):
    """Base of every error raised by glancefs.api."""

    code: int | None = None

    def __init__(self, details: str = "", *, code: int | None = None,
                 request_id: str | None = None, method: str | None = None,
                 url: str | None = None) -> None:
        self.details = details
        if code is not None:
            self.code = code
        self.request_id = request_id
        self.method = method
        self.url = url
        super().__init__(details)

    def __str__(self) -> str:
        where = f"{self.method} {self.url}: " if self.method and self.url else ""
        status = f"HTTP {self.code} " if self.code else ""
        return f"{status}{where}{self.details}".strip()


class CommunicationError(ClientException):
    """The server could not be reached or the connection broke."""


class DeadlineExceeded(CommunicationError):
    """No answer within the overall deadline of a request, its retries and
    back-off included (``HTTPClient.deadline``)."""


class TransferBroken(CommunicationError):
    """The server was reached and answered, then the transfer broke and could
    not be resumed (as opposed to a server that could not be reached)."""


class InvalidResponse(ClientException):
    """The server answered, but not with something we can trust."""


class HashMismatch(InvalidResponse):
    """Downloaded data does not match the hash the server published."""


class ImportFailed(ClientException):
    """An import (stage + import, copy-image) that the server's task failed:
    ``details`` carries the task's message (``GET /v2/images/{id}/tasks``)."""


class NoUniqueMatch(ClientException):
    """A name given for an image matches several images."""


class UnsupportedVersion(ClientException):
    """Only Images API versions 1 and 2 exist."""


class HTTPException(ClientException):
    """An HTTP error status; ``code`` is the status."""


class HTTPMultipleChoices(HTTPException):
    code = 300


class HTTPBadRequest(HTTPException):
    code = 400


class HTTPUnauthorized(HTTPException):
    code = 401


class HTTPForbidden(HTTPException):
    code = 403


class HTTPNotFound(HTTPException):
    code = 404


class HTTPMethodNotAllowed(HTTPException):
    code = 405


class HTTPConflict(HTTPException):
    code = 409


class HTTPOverLimit(HTTPException):
    """413: over a storage quota, or over the server's image size cap. Glance
    tells them apart only in its message, so this is the one place that reads
    it: ``over_quota`` says which."""

    code = 413

    @property
    def over_quota(self) -> bool:
        """True for a quota (the project is full), False for a size cap (this
        image is too big)."""
        return "quota" in (self.details or "").lower()


class HTTPUnsupportedMediaType(HTTPException):
    code = 415


class HTTPRequestedRangeNotSatisfiable(HTTPException):
    code = 416


class HTTPTooManyRequests(HTTPException):
    code = 429


class HTTPServerError(HTTPException):
    code = 500


class HTTPInternalServerError(HTTPServerError):
    code = 500


class HTTPBadGateway(HTTPServerError):
    code = 502


class HTTPServiceUnavailable(HTTPServerError):
    code = 503


class HTTPGatewayTimeout(HTTPServerError):
    code = 504


# python-glanceclient's names for the same classes.
BadRequest = HTTPBadRequest
Unauthorized = HTTPUnauthorized
Forbidden = HTTPForbidden
NotFound = HTTPNotFound
Conflict = HTTPConflict
OverLimit = HTTPOverLimit
RequestEntityTooLarge = HTTPOverLimit
HTTPRequestEntityTooLarge = HTTPOverLimit
HTTPUnsupported = HTTPUnsupportedMediaType
ServiceUnavailable = HTTPServiceUnavailable
HTTPNotImplemented = HTTPServerError

_BY_STATUS: dict[int, type[HTTPException]] = {
    cls.code: cls for cls in (
        HTTPMultipleChoices, HTTPBadRequest, HTTPUnauthorized, HTTPForbidden,
        HTTPNotFound, HTTPMethodNotAllowed, HTTPConflict, HTTPOverLimit,
        HTTPUnsupportedMediaType, HTTPRequestedRangeNotSatisfiable,
        HTTPTooManyRequests, HTTPInternalServerError, HTTPBadGateway,
        HTTPServiceUnavailable, HTTPGatewayTimeout,
    )
}

_TAG = re.compile(r"<[^>]+>")
# Glance's HTML error pages repeat the status in <title> and <h1>; the
# message is what follows.
_HEADING = re.compile(r"<head\b.*?</head>|<h1\b.*?</h1>", re.I | re.S)


def server_message(body: bytes | str, content_type: str = "") -> str:
    """The human part of an error body: JSON ``message``/``title``, else text
    with HTML tags removed, on one line and cut to a readable length."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if "json" in content_type or text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            # Glance wraps errors as {"error": {...}} or {"badRequest": {...}} etc.
            inner = next(iter(doc.values()), None) if len(doc) == 1 else doc
            if isinstance(inner, dict):
                for key in ("message", "title", "explanation"):
                    if isinstance(inner.get(key), str):
                        return _one_line(inner[key])
            for key in ("message", "title", "explanation"):
                if isinstance(doc.get(key), str):
                    return _one_line(doc[key])
    stripped = _TAG.sub(" ", _HEADING.sub(" ", text))
    if not stripped.strip():
        stripped = _TAG.sub(" ", text)
    return _one_line(html.unescape(stripped))


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def from_status(status: int, details: str, *, request_id: str | None = None,
                method: str | None = None, url: str | None = None) -> HTTPException:
    """The exception for an HTTP error status, carrying the server's message."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = HTTPServerError if status >= 500 else HTTPException
    return cls(details, code=status, request_id=request_id, method=method, url=url)


ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def connection_cause(text: str) -> str | None:
    """The system's words for why a connection failed ('Connection refused'),
    found in a failed request's text, or None."""
    cause = ERRNO_TEXT.search(text)
    return cause.group(1).strip() if cause else None


def expected(error: BaseException) -> bool:
    """True for the failures a person can act on: the server's and the client's
    errors, the system's (``OSError``) and every error class that sets ``summary``
    (a refusal of what the user asked). Anything else is a bug in glancefs."""
    return (isinstance(error, (ClientException, OSError))
            or getattr(type(error), "summary", None) is not None)


def describe(error: BaseException) -> str:
    """The one line that says why ``error`` happened, for a person.

    The rules, in order:

    * Keystone's refusal of the credentials (401) names the options to check;
    * any other 401: ``authentication failed: HTTP 401: ...``;
    * 300 (a version the server does not offer) lists the versions it offers;
    * a connection that could not be made: ``cannot reach http://host:port
      (Connection refused)``, not urllib3's nested retry report;
    * any other API error: ``HTTP 409: the server's message (request req-...)``;
    * an error class with a ``summary`` (``AuthConfigError``: "cannot
      authenticate"; an empty summary for the mount's and the command line's own
      refusals): the summary, then the message;
    * ``OSError``: the system's words and the file name;
    * anything else: ``unexpected TypeName: message``.

    The caller adds where it happened (the command, the file and operation).
    """
    text = " ".join(str(error).split())
    if isinstance(error, HTTPException) and "Keystone refused" in text:
        if isinstance(error, HTTPUnauthorized):
            return ("authentication failed: Keystone refused the credentials (HTTP 401); "
                    "check the user (--os-username/OS_USERNAME), password (OS_PASSWORD), "
                    "project and domains")
        return f"authentication failed: {text}"
    if isinstance(error, HTTPUnauthorized):
        return f"authentication failed: {_status_text(error)}"
    if isinstance(error, HTTPMultipleChoices):
        offered = sorted({v.split(".")[0] for v in
                          re.findall(r'"id": "(v\d+(?:\.\d+)?)"', str(error.details))})
        return ("the server does not offer this Images API version (HTTP 300"
                + (f"; it offers {', '.join(offered)}" if offered else "")
                + "): set --os-image-api-version")
    if isinstance(error, CommunicationError):
        cause = connection_cause(text)
        if error.url and cause:
            from urllib.parse import urlsplit
            parts = urlsplit(error.url)
            return f"cannot reach {parts.scheme}://{parts.netloc} ({cause})"
        return text or type(error).__name__
    if isinstance(error, ClientException):
        return _status_text(error)
    summary = getattr(type(error), "summary", None)
    if summary is not None:
        return f"{summary}: {text}" if summary and text else (text or summary)
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return f"unexpected {type(error).__name__}: {text}".rstrip(": ")


def _status_text(error: ClientException) -> str:
    status = f"HTTP {error.code}: " if error.code else ""
    details = " ".join((error.details or "").split()) or type(error).__name__
    request = f" (request {error.request_id})" if error.request_id else ""
    return f"{status}{details}{request}"

"""A small, self-contained OpenStack Images (Glance) **v1** API server.

Glance removed the Images v1 API in 2018, so glancefs' v1 client is tested
against this stand-in, written from the Images v1 API reference
(``api-ref/source/v1``) and from the documented behaviour of the v1 server
and of python-glanceclient's v1 client.

Standard library only.  Image metadata lives in memory (guarded by a lock);
image data lives in files named ``<store_dir>/<image-id>`` so that tests can
tamper with stored bytes to exercise checksum verification.

Typical use in tests::

    with V1Server(store_dir=tmp_path) as srv:
        url = srv.endpoint            # http://127.0.0.1:PORT
        ...
        srv.request_log               # [(method, path, range_or_None, body_bytes_sent), ...]

From a shell::

    python -m glancefs.testing.v1server --port 9292 --store /tmp/store
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import urllib.parse
import uuid
from collections.abc import Iterable
from typing import Any, BinaryIO

__all__ = [
    "V1Server",
    "DISK_FORMATS",
    "CONTAINER_FORMATS",
    "main",
]

# --------------------------------------------------------------------------
# Constants from the v1 reference
# --------------------------------------------------------------------------

DISK_FORMATS: tuple[str, ...] = (
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso",
    "ploop",
)
CONTAINER_FORMATS: tuple[str, ...] = (
    "ami", "ari", "aki", "bare", "ovf", "ova", "docker",
)
_AMAZON_FORMATS = ("aki", "ari", "ami")

#: x-image-meta-<field> headers the v1 server accepts (others -> 400).
_IMAGE_META_HEADER_FIELDS = frozenset({
    "location", "size", "is_public", "disk_format", "container_format",
    "name", "status", "copy_from", "uri", "checksum", "created_at",
    "updated_at", "deleted_at", "min_ram", "min_disk", "owner", "store", "id",
    "protected", "deleted",
})
_INT_FIELDS = ("size", "min_disk", "min_ram")
_BOOL_FIELDS = ("is_public", "deleted", "protected")

#: Core fields an ordinary user may not change once the image is active.
_ACTIVE_IMMUTABLE = ("size", "checksum", "disk_format", "container_format")

#: Fields of the brief list (GET /v1/images).
_BRIEF_FIELDS = ("id", "name", "size", "disk_format", "container_format",
                 "checksum")
#: Field order of the detailed representation.
_DETAIL_FIELDS = ("id", "name", "size", "disk_format", "container_format",
                  "checksum", "status", "is_public", "protected", "min_disk",
                  "min_ram", "owner", "created_at", "updated_at", "deleted_at",
                  "deleted", "virtual_size", "properties")
#: Order of x-image-meta-* headers in HEAD/GET responses.
_HEADER_FIELDS = ("id", "name", "size", "disk_format", "container_format",
                  "checksum", "status", "is_public", "protected", "min_disk",
                  "min_ram", "owner", "created_at", "updated_at", "deleted_at",
                  "deleted", "virtual_size")

SORT_KEYS: tuple[str, ...] = ("name", "status", "container_format",
                              "disk_format", "size", "id", "created_at",
                              "updated_at")
SORT_DIRS: tuple[str, ...] = ("asc", "desc")

_INT_FILTERS = ("size_min", "size_max", "min_ram", "min_disk")
_BOOL_FILTERS = ("is_public", "protected")
_EQ_FILTERS = ("name", "status", "container_format", "disk_format")

CHUNK_SIZE = 256 * 1024
#: Unread request bodies up to this size are drained (keeping the connection
#: alive) before an early error answer; larger ones close the connection.
_DRAIN_LIMIT = 16 * 1024 * 1024

_TOKEN_CHARS = "!#$&'*+-.^_`|~"  # RFC 7230 tchar minus ALPHA/DIGIT and '%'

_TRUE_STRINGS = ("1", "t", "true", "on", "y", "yes")
_FALSE_STRINGS = ("0", "f", "false", "off", "n", "no")


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _address(server_address: Any) -> str:
    """``host:port`` of a listening socket's address (an IPv4 pair here)."""
    host, port = server_address[0], server_address[1]
    return f"{host.decode() if isinstance(host, bytes) else host}:{int(port)}"


class HTTPError(Exception):
    """An error answer: status code, message and optional extra headers."""

    def __init__(self, status: int, message: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class _ClientGone(Exception):
    """The peer closed the connection or sent a malformed body."""


def _bool_from_string(value: str) -> bool:
    return value.strip().lower() in _TRUE_STRINGS


def _is_uuid_like(value: str) -> bool:
    """Canonical (lower-case, hyphenated) UUID text, as v1 required."""
    try:
        return str(uuid.UUID(value)) == value
    except (TypeError, ValueError, AttributeError):
        return False


def _decode_header_text(raw: str) -> str:
    """Undo latin-1 decoding by http.client, then the client's URL-quoting.

    python-glanceclient %-quotes every header name and value (safe chars
    ``/:``) before sending; clients that send raw UTF-8 are tolerated too.
    """
    try:
        raw = raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    return urllib.parse.unquote(raw)


def _encode_header_value(value: str) -> str:
    """Quote a header value if it is not plain printable ASCII or has '%'.

    Plain ASCII values go out verbatim (like the real v1 server); anything
    else is %-quoted the way python-glanceclient quotes request headers, so a
    client that always URL-unquotes header values gets the exact value back.
    """
    if value.isascii() and value.isprintable() and "%" not in value:
        return value
    return urllib.parse.quote(value, safe="/: ")


def _encode_header_name(name: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9!#$&'*+\-.^_`|~]+", name):
        return name
    return urllib.parse.quote(name, safe=_TOKEN_CHARS)


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def _fmt_time(when: _dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _parse_isotime(text: str) -> _dt.datetime:
    value = _dt.datetime.fromisoformat(text.strip().replace(" ", "+"))
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return value


def _header_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------------
# Request bodies (Content-Length or chunked), read incrementally
# --------------------------------------------------------------------------

class _BodyReader:
    """Incremental reader of a request body, never buffering all of it."""

    def __init__(self, rfile: BinaryIO | io.BufferedIOBase, headers: Any) -> None:
        self._rfile = rfile
        te = (headers.get("Transfer-Encoding") or "").strip().lower()
        cl = headers.get("Content-Length")
        self.chunked = bool(te) and te.split(",")[-1].strip() == "chunked"
        if te and not self.chunked:
            raise HTTPError(501, "Unsupported Transfer-Encoding: %s" % te)
        self.length: int | None = None
        if not self.chunked and cl is not None:
            try:
                self.length = int(cl.strip())
            except ValueError:
                raise HTTPError(400, "Invalid Content-Length") from None
            if self.length < 0:
                raise HTTPError(400, "Invalid Content-Length")
        self._remaining = self.length or 0      # fixed-length bytes left
        self._chunk_left = 0                    # bytes left in current chunk
        self.done = not self.chunked and not self._remaining
        self.abandoned = False
        self.consumed = 0

    @property
    def has_body(self) -> bool:
        """True like webob's ``has_body``: chunked, or Content-Length > 0."""
        return self.chunked or bool(self.length)

    def _readline(self) -> bytes:
        line = self._rfile.readline(65537)
        if not line:
            raise _ClientGone("connection closed inside chunked body")
        if len(line) > 65536:
            raise _ClientGone("chunk header line too long")
        return line

    def read(self, size: int = CHUNK_SIZE) -> bytes:
        """Read up to ``size`` bytes; ``b""`` at the end of the body."""
        if self.done:
            return b""
        if not self.chunked:
            data = self._rfile.read(min(size, self._remaining))
            if not data:
                raise _ClientGone("connection closed inside request body")
            self._remaining -= len(data)
            self.consumed += len(data)
            if not self._remaining:
                self.done = True
            return data
        if not self._chunk_left:
            line = self._readline().split(b";", 1)[0].strip()
            try:
                self._chunk_left = int(line, 16)
            except ValueError:
                raise _ClientGone("bad chunk size line %r" % line) from None
            if self._chunk_left < 0:
                raise _ClientGone("negative chunk size")
            if self._chunk_left == 0:
                while self._readline() not in (b"\r\n", b"\n"):
                    pass  # trailers are ignored
                self.done = True
                return b""
        data = self._rfile.read(min(size, self._chunk_left))
        if not data:
            raise _ClientGone("connection closed inside chunk")
        self._chunk_left -= len(data)
        self.consumed += len(data)
        if not self._chunk_left:
            if self._readline() not in (b"\r\n", b"\n"):
                raise _ClientGone("missing CRLF after chunk data")
        return data

    def iter_chunks(self) -> Iterable[bytes]:
        while True:
            data = self.read(CHUNK_SIZE)
            if not data:
                return
            yield data

    def read_all(self, limit: int = 1024 * 1024) -> bytes:
        """Read a small (JSON) body completely; 413 beyond ``limit``."""
        parts: list[bytes] = []
        total = 0
        for data in self.iter_chunks():
            total += len(data)
            if total > limit:
                raise HTTPError(413, "Request body too large")
            parts.append(data)
        return b"".join(parts)

    def drain(self, limit: int) -> bool:
        """Discard the rest of the body; False (and ``abandoned``) if more
        than ``limit`` bytes are left or the body is broken."""
        if self.done:
            return True
        if self.abandoned:
            return False
        if not self.chunked and self._remaining > limit:
            self.abandoned = True
            return False
        seen = 0
        try:
            for data in self.iter_chunks():
                seen += len(data)
                if seen > limit:
                    self.abandoned = True
                    return False
        except _ClientGone:
            self.abandoned = True
            return False
        return True


# --------------------------------------------------------------------------
# State: images, members, data store
# --------------------------------------------------------------------------

class _State:
    """Everything one server instance stores; all access under ``lock``."""

    def __init__(self, store_dir: str, page_size: int, api_limit_max: int,
                 token: str | None, image_size_cap: int | None) -> None:
        self.store_dir = store_dir
        self.page_size = page_size
        self.api_limit_max = api_limit_max
        self.token = token
        self.image_size_cap = image_size_cap
        self.lock = threading.Lock()
        self.images: dict[str, dict[str, Any]] = {}
        # image id -> {member id -> can_share}
        self.members: dict[str, dict[str, bool]] = {}
        self.request_log: list[tuple[str, str, str | None, int]] = []
        self.log_lock = threading.Lock()
        self._last_time: _dt.datetime | None = None
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()

    def now(self) -> str:
        """A strictly increasing timestamp (callers hold ``lock``)."""
        when = _utcnow()
        if self._last_time is not None and when <= self._last_time:
            when = self._last_time + _dt.timedelta(microseconds=1)
        self._last_time = when
        return _fmt_time(when)

    def data_path(self, image_id: str) -> str:
        return os.path.join(self.store_dir, image_id)

    def get_visible(self, image_id: str) -> dict[str, Any]:
        """The (live) record of a non-deleted image, or 404 (hold lock)."""
        image = self.images.get(image_id)
        if image is None or image["status"] == "deleted":
            raise HTTPError(404, "Image with identifier %s not found"
                            % image_id)
        return image


def _new_image(image_id: str, now: str, owner: str | None) -> dict[str, Any]:
    return {
        "id": image_id,
        "name": None,
        "size": 0,
        "disk_format": None,
        "container_format": None,
        "checksum": None,
        "status": "queued",
        "is_public": False,
        "protected": False,
        "min_disk": 0,
        "min_ram": 0,
        "owner": owner,
        "created_at": now,
        "updated_at": now,
        "deleted_at": None,
        "deleted": False,
        "virtual_size": None,
        "properties": {},
    }


def _detail(image: dict[str, Any]) -> dict[str, Any]:
    out = {k: copy.deepcopy(image[k]) for k in _DETAIL_FIELDS}
    return out


def _brief(image: dict[str, Any]) -> dict[str, Any]:
    return {k: image[k] for k in _BRIEF_FIELDS}


def _meta_headers(image: dict[str, Any]) -> list[tuple[str, str]]:
    """x-image-meta-* response headers (None values are omitted)."""
    out: list[tuple[str, str]] = []
    for key in _HEADER_FIELDS:
        value = image.get(key)
        if value is None:
            continue
        out.append(("x-image-meta-%s" % key,
                    _encode_header_value(_header_str(value))))
    for key, value in sorted(image["properties"].items()):
        if value is None:
            continue
        out.append(("x-image-meta-property-%s" % _encode_header_name(key),
                    _encode_header_value(_header_str(value))))
    return out


def _parse_meta_headers(headers: Any) -> dict[str, Any]:
    """x-image-meta-* request headers -> image metadata (400 when invalid).

    Like the v1 server: names are case-insensitive and lower-cased, '-' in a
    field or property name becomes '_', empty values mean None, unknown
    x-image-meta-<field> headers are refused.
    """
    result: dict[str, Any] = {}
    properties: dict[str, str] = {}
    for raw_key, raw_value in headers.items():
        key = _decode_header_text(raw_key).lower()
        value = _decode_header_text(raw_value).strip()
        if key.startswith("x-image-meta-property-"):
            name = key[len("x-image-meta-property-"):].replace("-", "_")
            if not name:
                raise HTTPError(400, "Bad header: %s" % key)
            properties[name] = value
        elif key.startswith("x-image-meta-"):
            field = key[len("x-image-meta-"):].replace("-", "_")
            if field not in _IMAGE_META_HEADER_FIELDS:
                raise HTTPError(400, "Bad header: %s" % key)
            result[field] = value or None
    for key in _INT_FIELDS:
        if result.get(key) is not None:
            try:
                result[key] = int(result[key])
            except ValueError:
                raise HTTPError(400, "Cannot convert image %s '%s' to an "
                                "integer." % (key, result[key])) from None
            if result[key] < 0:
                raise HTTPError(400, "Image %s must be >= 0 ('%s' specified)."
                                % (key, result[key]))
    for key in _BOOL_FIELDS:
        if result.get(key) is not None:
            result[key] = _bool_from_string(result[key])
    result["properties"] = properties
    _validate_meta(result)
    return result


def _validate_meta(values: dict[str, Any]) -> None:
    disk_format = values.get("disk_format")
    container_format = values.get("container_format")
    if "disk_format" in values and disk_format not in DISK_FORMATS:
        raise HTTPError(400, "Invalid disk format '%s' for image."
                        % disk_format)
    if "container_format" in values and \
            container_format not in CONTAINER_FORMATS:
        raise HTTPError(400, "Invalid container format '%s' for image."
                        % container_format)
    if disk_format in _AMAZON_FORMATS or \
            container_format in _AMAZON_FORMATS:
        if disk_format is None:
            values["disk_format"] = container_format
        elif container_format is None:
            values["container_format"] = disk_format
        elif disk_format != container_format:
            raise HTTPError(400, "Invalid mix of disk and container formats. "
                            "When setting a disk or container format to one "
                            "of 'aki', 'ari', or 'ami', the container and "
                            "disk formats must match.")
    name = values.get("name")
    if name and len(name) > 255:
        raise HTTPError(400, "Image name too long: %d" % len(name))
    checksum = values.get("checksum")
    if checksum and len(checksum) > 32:
        raise HTTPError(400, "Invalid checksum '%s': can't exceed 32 "
                        "characters" % checksum)
    if values.get("location") or values.get("copy_from") \
            or values.get("uri"):
        raise HTTPError(400, "External sources are not supported: '%s'"
                        % (values.get("location") or values.get("copy_from")
                           or values.get("uri")))
    store = values.get("store")
    if store and store != "file":
        raise HTTPError(400, "Store for scheme %s not found" % store)


#: Metadata fields a request may set directly.
_SETTABLE = ("name", "disk_format", "container_format", "size", "checksum",
             "is_public", "protected", "min_disk", "min_ram", "owner")


# --------------------------------------------------------------------------
# The request handler
# --------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "glancefs-v1server/1.0"
    state: _State          # set on the per-server subclass
    quiet: bool = True

    # -- connection bookkeeping -------------------------------------------

    def setup(self) -> None:
        super().setup()
        with self.state.conn_lock:
            self.state.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.state.conn_lock:
                self.state.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        if not self.quiet:
            super().log_message(format, *args)

    # -- dispatch -----------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        self._method = method
        self._sent_body = 0
        self._body_len = 0
        self._log_entry: tuple[str, str, str | None, int] | None = None
        self._request_id = "req-" + str(uuid.uuid4())
        split = urllib.parse.urlsplit(self.path)
        self._query = urllib.parse.parse_qsl(split.query,
                                             keep_blank_values=True)
        parts = [urllib.parse.unquote(p) for p in split.path.split("/") if p]
        self._body: _BodyReader | None = None
        try:
            self._body = _BodyReader(self.rfile, self.headers)
            self._route(method, parts)
        except HTTPError as err:
            self._send_error(err)
        except (_ClientGone, BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if self._body is not None and not self._body.done:
                # Never parse leftover body bytes as the next request.
                self.close_connection = True
            self._log()

    def _log(self, sent: int | None = None) -> None:
        """Append this request's log entry (once), or correct its count.

        The entry is appended *before* the last byte of the answer goes out,
        so a client that has read the whole answer always finds it logged.
        """
        count = self._sent_body if sent is None else sent
        entry = (self._method, self.path, self.headers.get("Range"), count)
        with self.state.log_lock:
            log = self.state.request_log
            old = self._log_entry
            if old is None:
                log.append(entry)
            elif old[3] != count:
                for i in range(len(log) - 1, -1, -1):
                    if log[i] is old:
                        log[i] = entry
                        break
            else:
                return
            self._log_entry = entry

    def _write(self, data: bytes) -> None:
        """Write answer body bytes, logging the request before the last."""
        final = self._sent_body + len(data) >= self._body_len
        if final:
            self._log(self._sent_body + len(data))
        try:
            self.wfile.write(data)
        except BaseException:
            if final:
                self._log(self._sent_body)
            raise
        self._sent_body += len(data)

    def _check_auth(self) -> None:
        token = self.state.token
        if token is not None and self.headers.get("X-Auth-Token") != token:
            raise HTTPError(401, "This server could not verify that you are "
                            "authorized to access the document you "
                            "requested. Either you supplied the wrong "
                            "credentials (e.g., bad password), or your "
                            "browser does not understand how to supply the "
                            "credentials required.",
                            {"WWW-Authenticate": "Keystone uri=''"})

    def _route(self, method: str, parts: list[str]) -> None:
        if not parts or parts == ["versions"]:
            return self._versions(method, explicit=bool(parts))
        self._check_auth()
        if parts[0] != "v1" or len(parts) < 2:
            raise HTTPError(404, "The resource could not be found.")
        rest = parts[1:]
        if rest[0] == "images":
            if len(rest) == 1:
                if method == "GET":
                    return self._list(detail=False)
                if method == "POST":
                    return self._create()
                raise self._not_allowed("GET, POST")
            if len(rest) == 2 and rest[1] == "detail" and method in (
                    "GET", "HEAD"):
                if method == "HEAD":
                    raise HTTPError(405, "This operation is currently not "
                                    "permitted on Glance images details.",
                                    {"Allow": "GET"})
                return self._list(detail=True)
            image_id = rest[1]
            if len(rest) == 2:
                if method == "HEAD":
                    return self._meta(image_id)
                if method == "GET":
                    return self._show(image_id)
                if method == "PUT":
                    return self._update(image_id)
                if method == "DELETE":
                    return self._delete(image_id)
                raise self._not_allowed("GET, HEAD, PUT, DELETE")
            if rest[2] == "members":
                if len(rest) == 3:
                    if method == "GET":
                        return self._members_index(image_id)
                    if method == "PUT":
                        return self._members_replace(image_id)
                    raise self._not_allowed("GET, PUT")
                if len(rest) == 4:
                    if method == "PUT":
                        return self._member_add(image_id, rest[3])
                    if method == "DELETE":
                        return self._member_delete(image_id, rest[3])
                    raise self._not_allowed("PUT, DELETE")
        elif rest[0] == "shared-images" and len(rest) == 2:
            if method == "GET":
                return self._shared_images(rest[1])
            raise self._not_allowed("GET")
        raise HTTPError(404, "The resource could not be found.")

    @staticmethod
    def _not_allowed(allow: str) -> HTTPError:
        return HTTPError(405, "The method is not allowed for this resource.",
                         {"Allow": allow})

    # -- response helpers ---------------------------------------------------

    def _start(self, status: int, headers: Iterable[tuple[str, str]],
               length: int) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.send_header("X-Openstack-Request-Id", self._request_id)
        body = self._body
        if body is not None and not body.done:
            # Answering before the whole request body was read (an early
            # error): discard a small rest to keep the connection alive,
            # otherwise hang up after this answer.
            if not body.drain(_DRAIN_LIMIT):
                self.send_header("Connection", "close")
                self.close_connection = True
        self._body_len = 0 if self._method == "HEAD" else length
        if not self._body_len:
            self._log(0)
        self.end_headers()

    def _send(self, status: int, body: bytes = b"",
              content_type: str | None = None,
              headers: Iterable[tuple[str, str]] = ()) -> None:
        all_headers = list(headers)
        if content_type:
            all_headers.append(("Content-Type", content_type))
        self._start(status, all_headers, len(body))
        if body and self._method != "HEAD":
            self._write(body)

    def _send_json(self, status: int, payload: Any,
                   headers: Iterable[tuple[str, str]] = ()) -> None:
        body = json.dumps(payload).encode("utf-8")
        self._send(status, body, "application/json", headers)

    def _send_error(self, err: HTTPError) -> None:
        reason = http.server.BaseHTTPRequestHandler.responses.get(
            err.status, ("Error",))[0]
        text = "%d %s\n\n%s\n\n   " % (err.status, reason, err.message)
        headers = list(err.headers.items())
        if self._body is None:  # unusable framing: cannot keep the link
            headers.append(("Connection", "close"))
            self.close_connection = True
        try:
            self._send(err.status, text.encode("utf-8"),
                       "text/plain; charset=UTF-8", headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- versions -----------------------------------------------------------

    def _versions(self, method: str, explicit: bool) -> None:
        if method not in ("GET", "HEAD"):
            raise self._not_allowed("GET, HEAD")
        host = self.headers.get("Host") or _address(self.server.server_address)
        base = "http://%s" % host

        def version(vid: str, status: str) -> dict[str, Any]:
            return {"id": vid, "status": status,
                    "links": [{"rel": "self", "href": "%s/v1/" % base}]}

        doc = {"versions": [version("v1.1", "CURRENT"),
                            version("v1.0", "SUPPORTED")]}
        self._send_json(200 if explicit else 300, doc)

    # -- listing ------------------------------------------------------------

    def _list(self, detail: bool) -> None:
        state = self.state
        params: dict[str, str] = {}
        props: dict[str, str] = {}
        for key, value in self._query:
            if key.startswith("property-"):
                props[key[len("property-"):]] = value
            else:
                params[key] = value

        # limit / marker / sort
        try:
            limit = int(params.get("limit", state.page_size))
        except ValueError:
            raise HTTPError(400, "limit param must be an integer") from None
        if limit < 0:
            raise HTTPError(400, "limit param must be positive")
        limit = min(limit, state.api_limit_max)
        marker = params.get("marker") or None
        if marker is not None and not _is_uuid_like(marker):
            raise HTTPError(400, "Invalid marker format")
        sort_key = params.get("sort_key", "created_at")
        if sort_key not in SORT_KEYS:
            raise HTTPError(400, "Unsupported sort_key. Acceptable values: %s"
                            % ", ".join(SORT_KEYS))
        sort_dir = params.get("sort_dir", "desc")
        if sort_dir not in SORT_DIRS:
            raise HTTPError(400, "Unsupported sort_dir. Acceptable values: %s"
                            % ", ".join(SORT_DIRS))

        # filters
        int_filters: dict[str, int] = {}
        for key in _INT_FILTERS:
            if key in params:
                try:
                    int_filters[key] = int(params[key])
                except ValueError:
                    int_filters[key] = -1
                if int_filters[key] < 0:
                    raise HTTPError(400, "Bad value passed to filter %s got %s"
                                    % (key, params[key]))
        bool_filters: dict[str, bool] = {}
        for key in _BOOL_FILTERS:
            if key in params:
                low = params[key].strip().lower()
                if low == "none":
                    continue
                if low in ("true", "1"):
                    bool_filters[key] = True
                elif low in ("false", "0"):
                    bool_filters[key] = False
                else:
                    raise HTTPError(400, "Bad value passed to filter %s got %s"
                                    % (key, params[key]))
        since: _dt.datetime | None = None
        if "changes-since" in params:
            try:
                since = _parse_isotime(params["changes-since"])
            except ValueError:
                raise HTTPError(400, "Unrecognized changes-since value") \
                    from None

        def matches(image: dict[str, Any]) -> bool:
            if since is None:
                if image["status"] == "deleted":
                    return False
            elif _dt.datetime.fromisoformat(image["updated_at"]) <= since:
                return False
            for key in _EQ_FILTERS:
                if key in params and image[key] != params[key]:
                    return False
            if "size_min" in int_filters and \
                    (image["size"] or 0) < int_filters["size_min"]:
                return False
            if "size_max" in int_filters and \
                    (image["size"] or 0) > int_filters["size_max"]:
                return False
            for key in ("min_ram", "min_disk"):
                if key in int_filters and image[key] != int_filters[key]:
                    return False
            for key, want in bool_filters.items():
                if bool(image[key]) != want:
                    return False
            for key, wanted in props.items():
                if image["properties"].get(key) != wanted:
                    return False
            return True

        def sort_tuple(image: dict[str, Any]) -> tuple[Any, ...]:
            out: list[Any] = []
            for key in (sort_key, "created_at", "id"):
                value = image[key]
                out.append((0, "") if value is None else (1, value))
            return tuple(out)

        reverse = sort_dir == "desc"
        with state.lock:
            if marker is not None:
                marker_image = state.images.get(marker)
                if marker_image is None:
                    raise HTTPError(400, "Invalid marker. Image could not be "
                                    "found.")
                marker_key = sort_tuple(marker_image)
            selected = [img for img in state.images.values() if matches(img)]
            selected.sort(key=sort_tuple, reverse=reverse)
            if marker is not None:
                if reverse:
                    selected = [i for i in selected
                                if sort_tuple(i) < marker_key]
                else:
                    selected = [i for i in selected
                                if sort_tuple(i) > marker_key]
            page = selected[:limit]
            images = [(_detail(i) if detail else _brief(i)) for i in page]
        self._send_json(200, {"images": images})

    # -- single image: HEAD / GET -------------------------------------------

    def _meta(self, image_id: str) -> None:
        with self.state.lock:
            image = _detail(self.state.get_visible(image_id))
        headers = _meta_headers(image)
        if image["checksum"]:
            headers.append(("ETag", image["checksum"]))
        self._send(200, b"", None, headers)

    def _show(self, image_id: str) -> None:
        # Like v1: any Range header is ignored; the whole image comes back.
        state = self.state
        with state.lock:
            image = _detail(state.get_visible(image_id))
            if image["status"] != "active":
                raise HTTPError(404, "Image %s is not active" % image_id)
            fh: BinaryIO | None = None
            if image["size"]:
                try:
                    fh = open(state.data_path(image_id), "rb")  # noqa: SIM115 - closed after the body
                except FileNotFoundError:
                    raise HTTPError(404, "Data for image %s not found"
                                    % image_id) from None
        try:
            if fh is not None:
                size = os.fstat(fh.fileno()).st_size
                image["size"] = size
            else:
                size = 0
            headers = _meta_headers(image)
            headers.append(("Content-Type", "application/octet-stream"))
            if image["checksum"]:
                headers.append(("ETag", image["checksum"]))
            self._start(200, headers, size)
            left = size
            while fh is not None and left > 0:
                data = fh.read(min(CHUNK_SIZE, left))
                if not data:  # file shrank underneath us: break framing
                    self.close_connection = True
                    break
                self._write(data)
                left -= len(data)
        finally:
            if fh is not None:
                fh.close()

    # -- create / update ----------------------------------------------------

    def _owner_from_identity(self) -> str | None:
        for name in ("X-Tenant-Id", "X-Project-Id"):
            value = self.headers.get(name)
            if value:
                return value
        return None

    def _check_content_type(self) -> None:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0]
        ctype = ctype.strip().lower()
        if ctype and ctype != "application/octet-stream":
            raise HTTPError(400, "Content-Type must be "
                            "application/octet-stream")

    def _check_declared_size(self, meta: dict[str, Any]) -> None:
        cap = self.state.image_size_cap
        if cap is None:
            return
        body = self._body
        assert body is not None
        declared = body.length if body.length else meta.get("size")
        if declared is not None and declared > cap:
            raise HTTPError(413, "Denying attempt to upload image larger "
                            "than %d bytes." % cap)

    def _create(self) -> None:
        state = self.state
        body = self._body
        assert body is not None
        meta = _parse_meta_headers(self.headers)
        has_data = body.has_body
        if has_data:
            self._check_content_type()
            if not meta.get("disk_format"):
                raise HTTPError(400, "Disk format is not specified.")
            if not meta.get("container_format"):
                raise HTTPError(400, "Container format is not specified.")
            self._check_declared_size(meta)
        image_id = meta.get("id")
        if image_id is not None and not _is_uuid_like(image_id):
            raise HTTPError(400, "Invalid image id format")
        with state.lock:
            if image_id is None:
                image_id = str(uuid.uuid4())
            elif image_id in state.images:
                raise HTTPError(409, "An image with identifier %s already "
                                "exists" % image_id)
            owner = meta["owner"] if "owner" in meta else \
                self._owner_from_identity()
            image = _new_image(image_id, state.now(), owner)
            for key in _SETTABLE:
                if key in meta and key != "owner":
                    image[key] = meta[key]
            if image["size"] is None:
                image["size"] = 0
            for key in ("min_disk", "min_ram"):
                if image[key] is None:
                    image[key] = 0
            for key in ("is_public", "protected"):
                image[key] = bool(image[key])
            image["properties"] = dict(meta["properties"])
            if not has_data and meta.get("size") == 0:
                image["status"] = "active"  # v1: declared-empty image
            if has_data:
                image["status"] = "saving"
            state.images[image_id] = image
        if has_data:
            self._upload(image_id, meta)
        with state.lock:
            result = _detail(state.images[image_id])
        headers = [("Location", "%s/v1/images/%s" % (self._base_url(),
                                                     image_id))]
        if result["checksum"]:
            headers.append(("ETag", result["checksum"]))
        self._send_json(201, {"image": result}, headers)

    def _base_url(self) -> str:
        host = self.headers.get("Host")
        if not host:
            host = _address(self.server.server_address)
        return "http://%s" % host

    def _update(self, image_id: str) -> None:
        state = self.state
        body = self._body
        assert body is not None
        meta = _parse_meta_headers(self.headers)
        has_data = body.has_body
        purge_header = self.headers.get("x-glance-registry-purge-props")
        purge = (purge_header is None or _bool_from_string(purge_header)) \
            and not has_data
        with state.lock:
            image = state.get_visible(image_id)
            status = image["status"]
            # Real v1 refused data for a non-queued image before looking
            # at the metadata that came with it.
            if has_data and status != "queued":
                raise HTTPError(409, "Cannot upload to an unqueued image")
            for key in _ACTIVE_IMMUTABLE:
                if status == "active" and meta.get(key) is not None and \
                        meta[key] != image[key]:
                    raise HTTPError(403, "Forbidden to modify '%s' of active "
                                    "image." % key)
            for key in ("status", "id"):
                if meta.get(key) is not None and meta[key] != image[key]:
                    raise HTTPError(403, "Forbidden to modify '%s' of image."
                                    % key)
            if has_data:
                if status != "queued":
                    raise HTTPError(409, "Cannot upload to an unqueued image")
                self._check_content_type()
                for key, label in (("disk_format", "Disk"),
                                   ("container_format", "Container")):
                    if not (meta.get(key) or image[key]):
                        raise HTTPError(400, "%s format is not specified."
                                        % label)
                self._check_declared_size(meta)
            for key in _SETTABLE:
                if key in meta:
                    value = meta[key]
                    if key in ("size", "min_disk", "min_ram") and value is None:
                        value = 0
                    if key in ("is_public", "protected"):
                        value = bool(value)
                    image[key] = value
            if purge:
                image["properties"] = dict(meta["properties"])
            else:
                image["properties"].update(meta["properties"])
            image["updated_at"] = state.now()
            if has_data:
                image["status"] = "saving"
        if has_data:
            self._upload(image_id, meta)
        with state.lock:
            result = _detail(state.images[image_id])
        headers = [("ETag", result["checksum"])] if result["checksum"] else []
        self._send_json(200, {"image": result}, headers)

    def _kill(self, image_id: str, tmp_path: str | None) -> None:
        if tmp_path is not None:
            try:
                os.unlink(tmp_path)
            except FileNotFoundError:
                pass
        with self.state.lock:
            image = self.state.images.get(image_id)
            if image is not None and image["status"] == "saving":
                image["status"] = "killed"
                image["updated_at"] = self.state.now()

    def _upload(self, image_id: str, meta: dict[str, Any]) -> None:
        """Stream the request body into the store (image must be 'saving')."""
        state = self.state
        body = self._body
        assert body is not None
        cap = state.image_size_cap
        final_path = state.data_path(image_id)
        tmp_path = "%s.upload-%s" % (final_path, uuid.uuid4().hex)
        md5 = hashlib.md5()
        size = 0
        try:
            with open(tmp_path, "wb") as out:
                while True:
                    data = body.read(CHUNK_SIZE)
                    if not data:
                        break
                    size += len(data)
                    if cap is not None and size > cap:
                        raise HTTPError(413, "Denying attempt to upload image "
                                        "larger than %d bytes." % cap)
                    md5.update(data)
                    out.write(data)
        except (HTTPError, _ClientGone, OSError):
            self._kill(image_id, tmp_path)
            raise
        checksum = md5.hexdigest()
        supplied_size = meta.get("size")
        if supplied_size and supplied_size != size:
            self._kill(image_id, tmp_path)
            raise HTTPError(400, "Supplied size (%d) and size generated from "
                            "uploaded image (%d) did not match. Setting image "
                            "status to 'killed'." % (supplied_size, size))
        supplied_checksum = meta.get("checksum")
        if supplied_checksum and supplied_checksum != checksum:
            self._kill(image_id, tmp_path)
            raise HTTPError(400, "Supplied checksum (%s) and checksum "
                            "generated from uploaded image (%s) did not "
                            "match. Setting image status to 'killed'."
                            % (supplied_checksum, checksum))
        with state.lock:
            image = state.images.get(image_id)
            if image is None or image["status"] != "saving":
                try:
                    os.unlink(tmp_path)
                except FileNotFoundError:
                    pass
                raise HTTPError(409, "Image operation conflicts")
            os.replace(tmp_path, final_path)
            image["size"] = size
            image["checksum"] = checksum
            image["status"] = "active"
            image["updated_at"] = state.now()

    # -- delete ---------------------------------------------------------------

    def _delete(self, image_id: str) -> None:
        state = self.state
        with state.lock:
            image = state.get_visible(image_id)
            if image["protected"]:
                raise HTTPError(403, "Image is protected")
            if image["status"] == "pending_delete":
                raise HTTPError(403, "Forbidden to delete a pending_delete "
                                "image.")
            now = state.now()
            image["status"] = "deleted"
            image["deleted"] = True
            image["deleted_at"] = now
            image["updated_at"] = now
            state.members.pop(image_id, None)
            try:
                os.unlink(state.data_path(image_id))
            except FileNotFoundError:
                pass
        # The v1 server answered 200 with an empty body.
        self._send(200, b"", "text/html; charset=UTF-8")

    # -- members ------------------------------------------------------------

    def _json_body(self) -> Any:
        body = self._body
        assert body is not None
        if not body.has_body:
            return None
        raw = body.read_all()
        if not raw.strip():
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise HTTPError(400, "Malformed JSON in request body.") from None

    def _members_index(self, image_id: str) -> None:
        with self.state.lock:
            self.state.get_visible(image_id)
            members = self.state.members.get(image_id, {})
            out = [{"member_id": m, "can_share": c}
                   for m, c in sorted(members.items())]
        self._send_json(200, {"members": out})

    def _members_replace(self, image_id: str) -> None:
        payload = self._json_body()
        if not isinstance(payload, dict) or \
                not isinstance(payload.get("memberships"), list):
            raise HTTPError(400, "Invalid membership association: %s"
                            % json.dumps(payload))
        wanted: list[tuple[str, bool | None]] = []
        for entry in payload["memberships"]:
            if not isinstance(entry, dict) or \
                    not isinstance(entry.get("member_id"), str) or \
                    not entry["member_id"] or \
                    ("can_share" in entry and
                     not isinstance(entry["can_share"], bool)):
                raise HTTPError(400, "Invalid membership association: %s"
                                % json.dumps(entry))
            wanted.append((entry["member_id"], entry.get("can_share")))
        with self.state.lock:
            self.state.get_visible(image_id)
            old = self.state.members.get(image_id, {})
            new: dict[str, bool] = {}
            for member_id, can_share in wanted:
                if can_share is None:
                    can_share = old.get(member_id, False)
                new[member_id] = can_share
            self.state.members[image_id] = new
        self._send(204)

    def _member_add(self, image_id: str, member_id: str) -> None:
        payload = self._json_body()
        can_share: bool | None = None
        if payload is not None:
            if not isinstance(payload, dict) or ("member" in payload and
                                                 not isinstance(
                                                     payload["member"], dict)):
                raise HTTPError(400, "Invalid membership association: %s"
                                % json.dumps(payload))
            member = payload.get("member") or {}
            if "can_share" in member:
                can_share = bool(member["can_share"])
        with self.state.lock:
            self.state.get_visible(image_id)
            members = self.state.members.setdefault(image_id, {})
            if can_share is None:
                can_share = members.get(member_id, False)
            members[member_id] = can_share
        self._send(204)

    def _member_delete(self, image_id: str, member_id: str) -> None:
        with self.state.lock:
            self.state.get_visible(image_id)
            members = self.state.members.get(image_id, {})
            if member_id not in members:
                raise HTTPError(404, "%s is not a member of image %s"
                                % (member_id, image_id))
            del members[member_id]
        self._send(204)

    def _shared_images(self, member_id: str) -> None:
        with self.state.lock:
            out = []
            for image_id, members in sorted(self.state.members.items()):
                image = self.state.images.get(image_id)
                if image is None or image["status"] == "deleted":
                    continue
                if member_id in members:
                    out.append({"image_id": image_id,
                                "can_share": members[member_id]})
        self._send_json(200, {"shared_images": out})


# --------------------------------------------------------------------------
# Public server object
# --------------------------------------------------------------------------

class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class V1Server:
    """An in-process Images v1 server.

    :param host: address to bind (default 127.0.0.1)
    :param port: port to bind; 0 picks a free port (see :attr:`endpoint`)
    :param store_dir: directory for image data files ``<store_dir>/<id>``;
        ``None`` uses a fresh temporary directory removed by :meth:`stop`
    :param page_size: images per list page when the request has no ``limit``
    :param token: if set, requests must carry ``X-Auth-Token: <token>``
        (401 otherwise); ``/`` and ``/versions`` stay open
    :param image_size_cap: if set, uploads larger than this many bytes get
        413
    :param api_limit_max: largest ``limit`` honoured in list requests
    :param quiet: suppress per-request logging on stderr
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 store_dir: str | os.PathLike[str] | None = None,
                 page_size: int = 25, token: str | None = None,
                 image_size_cap: int | None = None,
                 api_limit_max: int = 1000, quiet: bool = True) -> None:
        self._own_store = store_dir is None
        if store_dir is None:
            store_dir = tempfile.mkdtemp(prefix="glance-v1-store-")
        store = os.fspath(store_dir)
        os.makedirs(store, exist_ok=True)
        self.host = host
        self.port = port
        self.store_dir = store
        self._state = _State(store, page_size, api_limit_max, token,
                             image_size_cap)
        self._quiet = quiet
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- state exposed to tests --------------------------------------------

    @property
    def request_log(self) -> list[tuple[str, str, str | None, int]]:
        """One ``(method, path, range_header_or_None, body_bytes_sent)`` per
        request; ``path`` is the request target as sent (with query)."""
        return self._state.request_log

    @property
    def images(self) -> dict[str, dict[str, Any]]:
        """Live metadata records keyed by image id (hold :attr:`lock`)."""
        return self._state.images

    @property
    def lock(self) -> threading.Lock:
        return self._state.lock

    def data_path(self, image_id: str) -> str:
        """Path of the stored data file of an image."""
        return self._state.data_path(image_id)

    @property
    def endpoint(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return "http://" + _address(self._httpd.server_address)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> V1Server:
        if self._httpd is not None:
            return self
        handler = type("V1Handler", (_Handler,),
                       {"state": self._state, "quiet": self._quiet})
        self._httpd = _HTTPServer((self.host, self.port), handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
            name="glance-v1-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd = self._httpd
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._state.conn_lock:
            conns = list(self._state.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def serve_forever(self) -> None:
        """Start and block until SIGTERM/SIGINT, then stop."""
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        old = {s: signal.signal(s, on_signal)
               for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            print("glance v1 server listening on %s (store %s)"
                  % (self.endpoint, self.store_dir), flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            self.stop()
            for s, handler in old.items():
                signal.signal(s, handler)

    def __enter__(self) -> V1Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m glancefs.testing.v1server",
        description="Serve a small OpenStack Images v1 API for testing.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9292,
                        help="port to listen on (0: pick a free one)")
    parser.add_argument("--store", default=None,
                        help="directory for image data (default: a "
                        "temporary directory removed on exit)")
    parser.add_argument("--page-size", type=int, default=25)
    parser.add_argument("--token", default=None,
                        help="require this X-Auth-Token")
    parser.add_argument("--image-size-cap", type=int, default=None)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every request on stderr")
    args = parser.parse_args(argv)
    server = V1Server(host=args.host, port=args.port, store_dir=args.store,
                      page_size=args.page_size, token=args.token,
                      image_size_cap=args.image_size_cap,
                      quiet=not args.verbose)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())


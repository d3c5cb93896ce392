"""Tests of glancefs.testing.v1server against the Images v1 API reference.

Where python-glanceclient still ships its v1 client (4.13 does), it is used as
the reference client; wire-level details (chunked bodies, Range, error codes,
raw headers) are checked with plain ``requests`` / ``http.client``.
"""

from __future__ import annotations

import ast
import hashlib
import http.client as httpclient
import io
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from glancefs.testing.v1server import V1Server

REPO = pathlib.Path(__file__).resolve().parents[1]
MODULE = REPO / "glancefs" / "testing" / "v1server.py"

try:  # python-glanceclient may have dropped v1 in some release
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from glanceclient import exc as gc_exc
        from glanceclient.v1 import client as gc_v1
except Exception:  # noqa: BLE001 - any failure to import means no v1 client  # pragma: no cover
    gc_v1 = None
    gc_exc = None

needs_glanceclient = pytest.mark.skipif(
    gc_v1 is None, reason="python-glanceclient without the v1 client")


# --------------------------------------------------------------------------
# fixtures / helpers
# --------------------------------------------------------------------------

@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[V1Server]:
    with V1Server(store_dir=tmp_path / "store") as srv:
        yield srv


@pytest.fixture
def gc(server: V1Server) -> Any:
    if gc_v1 is None:
        pytest.skip("python-glanceclient without the v1 client")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gc_v1.Client(server.endpoint)


@pytest.fixture
def http(server: V1Server) -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def url(server: V1Server, path: str) -> str:
    return server.endpoint + path


def create(session: requests.Session, server: V1Server,
           data: bytes | None = None, **meta: Any) -> dict[str, Any]:
    headers = {"x-image-meta-%s" % k: str(v) for k, v in meta.items()
               if k != "properties"}
    for k, v in meta.get("properties", {}).items():
        headers["x-image-meta-property-%s" % k] = v
    if data is not None:
        headers["Content-Type"] = "application/octet-stream"
    r = session.post(url(server, "/v1/images"), headers=headers, data=data)
    assert r.status_code == 201, r.text
    return r.json()["image"]


def gen(data: bytes, piece: int = 1000) -> Iterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i:i + piece]


# --------------------------------------------------------------------------
# the module itself
# --------------------------------------------------------------------------

def test_module_imports_only_stdlib() -> None:
    tree = ast.parse(MODULE.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add((node.module or "").split(".")[0])
    names.discard("__future__")
    assert names <= set(sys.stdlib_module_names), names - set(
        sys.stdlib_module_names)


def test_versions_document(server: V1Server, http: requests.Session) -> None:
    r = http.get(url(server, "/"))
    assert r.status_code == 300
    versions = {v["id"]: v for v in r.json()["versions"]}
    assert versions["v1.1"]["status"] == "CURRENT"
    assert "v1.0" in versions
    assert versions["v1.1"]["links"][0]["href"].endswith("/v1/")
    r = http.get(url(server, "/versions"))
    assert r.status_code == 200
    assert r.json()["versions"][0]["id"] == "v1.1"


# --------------------------------------------------------------------------
# create / download / checksum (python-glanceclient as reference client)
# --------------------------------------------------------------------------

@needs_glanceclient
def test_create_with_data_and_download(gc: Any, server: V1Server) -> None:
    data = os.urandom(300_000)
    img = gc.images.create(name="cirros", disk_format="qcow2",
                           container_format="bare", data=io.BytesIO(data),
                           properties={"distro": "cirros"})
    assert img.status == "active"
    assert img.size == len(data)
    assert img.checksum == hashlib.md5(data).hexdigest()
    assert img.properties == {"distro": "cirros"}
    assert img.owner is None
    # the data is stored as a file named after the image id
    assert pathlib.Path(server.store_dir, img.id).read_bytes() == data
    # download goes through glanceclient's checksum verification
    got = b"".join(gc.images.data(img.id))
    assert got == data
    # HEAD metadata
    meta = gc.images.get(img.id)
    assert meta.name == "cirros"
    assert meta.size == len(data)
    assert meta.checksum == img.checksum
    assert meta.is_public is False and meta.protected is False
    assert meta.properties == {"distro": "cirros"}


@needs_glanceclient
def test_tampered_data_fails_client_checksum(gc: Any,
                                             server: V1Server) -> None:
    data = b"A" * 10_000
    img = gc.images.create(name="t", disk_format="raw",
                           container_format="bare", data=io.BytesIO(data))
    path = pathlib.Path(server.data_path(img.id))
    path.write_bytes(b"B" + data[1:])
    with pytest.raises(IOError, match="Corrupt image download"):
        b"".join(gc.images.data(img.id))
    assert b"".join(gc.images.data(img.id, do_checksum=False))[:1] == b"B"


@needs_glanceclient
def test_reserve_then_upload(gc: Any, server: V1Server) -> None:
    img = gc.images.create(name="later")
    assert img.status == "queued" and img.size == 0 and img.checksum is None
    data = b"x" * 5000
    img = gc.images.update(img.id, disk_format="raw",
                           container_format="bare", data=io.BytesIO(data))
    meta = gc.images.get(img.id)
    assert meta.status == "active"
    assert meta.size == 5000
    assert meta.checksum == hashlib.md5(data).hexdigest()


def test_create_reserve_response_fields(server: V1Server,
                                        http: requests.Session) -> None:
    r = http.post(url(server, "/v1/images"))
    assert r.status_code == 201
    img = r.json()["image"]
    # every field of the reference sample, with the reference defaults
    assert set(img) >= {
        "checksum", "container_format", "created_at", "deleted",
        "deleted_at", "disk_format", "id", "is_public", "min_disk", "min_ram",
        "name", "owner", "properties", "protected", "size", "status",
        "updated_at", "virtual_size"}
    assert img["status"] == "queued" and img["size"] == 0
    assert img["deleted"] is False and img["properties"] == {}
    assert r.headers["Location"].endswith("/v1/images/" + img["id"])
    assert img["created_at"][10] == "T"


def test_owner_from_identity_headers(server: V1Server,
                                     http: requests.Session) -> None:
    r = http.post(url(server, "/v1/images"), headers={"X-Tenant-Id": "t1"})
    assert r.json()["image"]["owner"] == "t1"
    r = http.post(url(server, "/v1/images"), headers={"X-Project-Id": "p2"})
    assert r.json()["image"]["owner"] == "p2"


def test_create_with_explicit_id_and_duplicate(server: V1Server,
                                               http: requests.Session) -> None:
    image_id = str(uuid.uuid4())
    assert create(http, server, id=image_id)["id"] == image_id
    r = http.post(url(server, "/v1/images"),
                  headers={"x-image-meta-id": image_id})
    assert r.status_code == 409
    r = http.post(url(server, "/v1/images"),
                  headers={"x-image-meta-id": "not-a-uuid"})
    assert r.status_code == 400


# --------------------------------------------------------------------------
# chunked uploads, size / checksum verification, size cap
# --------------------------------------------------------------------------

def test_chunked_upload(server: V1Server, http: requests.Session) -> None:
    data = os.urandom(123_457)
    r = http.post(url(server, "/v1/images"), data=gen(data, 4096), headers={
        "x-image-meta-name": "chunky", "x-image-meta-disk_format": "raw",
        "x-image-meta-container_format": "bare",
        "Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    img = r.json()["image"]
    assert img["size"] == len(data)
    assert img["checksum"] == hashlib.md5(data).hexdigest()
    assert r.headers["ETag"] == img["checksum"]
    got = http.get(url(server, "/v1/images/" + img["id"]))
    assert got.content == data


def test_raw_chunked_with_extensions_and_trailers(server: V1Server) -> None:
    host, port = server.endpoint[len("http://"):].split(":")
    body = (b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")
    req = (b"POST /v1/images HTTP/1.1\r\nHost: x\r\n"
           b"Transfer-Encoding: chunked\r\n"
           b"x-image-meta-disk_format: raw\r\n"
           b"x-image-meta-container_format: bare\r\n\r\n" + body)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(req)
        resp = httpclient.HTTPResponse(sock)
        resp.begin()
        img = json.loads(resp.read())["image"]
    assert resp.status == 201
    assert img["size"] == 11
    assert img["checksum"] == hashlib.md5(b"hello world").hexdigest()


def test_size_mismatch_kills_image(server: V1Server,
                                   http: requests.Session) -> None:
    r = http.post(url(server, "/v1/images"), data=b"x" * 100, headers={
        "x-image-meta-disk_format": "raw",
        "x-image-meta-container_format": "bare",
        "x-image-meta-size": "99", "x-image-meta-name": "bad-size"})
    assert r.status_code == 400
    assert r.text.startswith("400 Bad Request")
    r = http.get(url(server, "/v1/images/detail?name=bad-size&status=killed"))
    [img] = r.json()["images"]
    assert img["status"] == "killed"
    assert not os.path.exists(server.data_path(img["id"]))


def test_checksum_mismatch_kills_image(server: V1Server,
                                       http: requests.Session) -> None:
    r = http.post(url(server, "/v1/images"), data=gen(b"y" * 100), headers={
        "x-image-meta-disk_format": "raw",
        "x-image-meta-container_format": "bare",
        "x-image-meta-checksum": "0" * 32, "x-image-meta-name": "bad-sum"})
    assert r.status_code == 400
    assert "checksum" in r.text
    r = http.get(url(server, "/v1/images/detail?name=bad-sum&status=killed"))
    assert len(r.json()["images"]) == 1
    # a matching checksum is accepted
    good = hashlib.md5(b"y" * 100).hexdigest()
    img = create(http, server, data=b"y" * 100, disk_format="raw",
                 container_format="bare", checksum=good)
    assert img["status"] == "active" and img["checksum"] == good


def test_upload_requires_formats(server: V1Server,
                                 http: requests.Session) -> None:
    r = http.post(url(server, "/v1/images"), data=b"abc")
    assert r.status_code == 400
    # the connection survives the early error (small body drained)
    assert http.get(url(server, "/v1/images")).status_code == 200


def test_invalid_formats_400(server: V1Server,
                             http: requests.Session) -> None:
    for hdr, value in (("disk_format", "floppy"),
                       ("container_format", "zip")):
        r = http.post(url(server, "/v1/images"),
                      headers={"x-image-meta-" + hdr: value})
        assert r.status_code == 400, (hdr, value)
    for fmt in ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2",
                "vdi", "iso", "ploop"):
        img = create(http, server, disk_format=fmt)
        assert img["disk_format"] == fmt
    for fmt in ("ami", "ari", "aki", "bare", "ovf", "ova", "docker"):
        assert create(http, server, container_format=fmt)[
            "container_format"] == fmt
    r = http.post(url(server, "/v1/images"),
                  headers={"x-image-meta-disk_format": "ami",
                           "x-image-meta-container_format": "bare"})
    assert r.status_code == 400
    r = http.post(url(server, "/v1/images"),
                  headers={"x-image-meta-bogus": "1"})
    assert r.status_code == 400
    r = http.post(url(server, "/v1/images"),
                  headers={"x-image-meta-min_ram": "lots"})
    assert r.status_code == 400


def test_image_size_cap_413(tmp_path: pathlib.Path) -> None:
    with V1Server(store_dir=tmp_path, image_size_cap=1000) as srv, \
            requests.Session() as http:
        hdrs = {"x-image-meta-disk_format": "raw",
                "x-image-meta-container_format": "bare",
                "x-image-meta-name": "big"}
        # declared (Content-Length) too large
        r = http.post(srv.endpoint + "/v1/images", data=b"z" * 5000,
                      headers=hdrs)
        assert r.status_code == 413
        # streamed (chunked, no size known up front) too large
        r = http.post(srv.endpoint + "/v1/images", data=gen(b"z" * 5000, 512),
                      headers=hdrs)
        assert r.status_code == 413
        killed = http.get(srv.endpoint + "/v1/images/detail?status=killed")
        assert [i["name"] for i in killed.json()["images"]] == ["big"]
        assert os.listdir(tmp_path) == []
        # at the cap is fine
        r = http.post(srv.endpoint + "/v1/images", data=b"z" * 1000,
                      headers=hdrs)
        assert r.status_code == 201


def test_put_data_on_active_image_409(server: V1Server,
                                      http: requests.Session) -> None:
    img = create(http, server, data=b"abc", disk_format="raw",
                 container_format="bare")
    r = http.put(url(server, "/v1/images/" + img["id"]), data=b"def",
                 headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 409
    assert http.get(url(server, "/v1/images/" + img["id"])).content == b"abc"


def test_active_image_core_fields_403(server: V1Server,
                                      http: requests.Session) -> None:
    img = create(http, server, data=b"abc", disk_format="raw",
                 container_format="bare")
    target = url(server, "/v1/images/" + img["id"])
    for key, value in (("disk_format", "qcow2"), ("container_format", "ovf"),
                       ("size", "10")):
        r = http.put(target, headers={"x-image-meta-" + key: value})
        assert r.status_code == 403, key
    # unchanged values and other fields are fine
    r = http.put(target, headers={"x-image-meta-disk_format": "raw",
                                  "x-image-meta-name": "renamed",
                                  "x-image-meta-min_ram": "512"})
    assert r.status_code == 200
    assert r.json()["image"]["name"] == "renamed"
    assert r.json()["image"]["min_ram"] == 512


def test_memory_stays_flat_for_large_upload(tmp_path: pathlib.Path) -> None:
    """A 256 MiB chunked upload must not grow the server process much."""
    size = 256 * 1024 * 1024
    proc, endpoint = _spawn_server(tmp_path)
    try:
        piece = os.urandom(1024 * 1024)

        def body() -> Iterator[bytes]:
            for _ in range(size // len(piece)):
                yield piece

        r = requests.post(endpoint + "/v1/images", data=body(), headers={
            "x-image-meta-disk_format": "raw",
            "x-image-meta-container_format": "bare"})
        assert r.status_code == 201
        assert r.json()["image"]["size"] == size
        hwm_kib = _vm_hwm_kib(proc.pid)
        assert hwm_kib < 96 * 1024, "server peak RSS %d KiB" % hwm_kib
        # and the download streams too
        got = 0
        with requests.get(endpoint + "/v1/images/" + r.json()["image"]["id"],
                          stream=True) as d:
            for chunk in d.iter_content(1024 * 1024):
                got += len(chunk)
        assert got == size
        assert _vm_hwm_kib(proc.pid) < 96 * 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def _vm_hwm_kib(pid: int) -> int:
    for line in pathlib.Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _spawn_server(tmp_path: pathlib.Path,
                  *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [str(REPO / "scripts" / "glance-v1-server"), "--port", "0",
         "--store", str(tmp_path / "store"), *extra],
        stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHON=sys.executable))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line, line
    endpoint = line.split("listening on ")[1].split()[0]
    return proc, endpoint


def test_script_serves_until_sigterm(tmp_path: pathlib.Path) -> None:
    proc, endpoint = _spawn_server(tmp_path, "--token", "s3cret")
    try:
        assert requests.get(endpoint + "/v1/images").status_code == 401
        r = requests.get(endpoint + "/v1/images",
                         headers={"X-Auth-Token": "s3cret"})
        assert r.status_code == 200 and r.json() == {"images": []}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


# --------------------------------------------------------------------------
# GET data: Range ignored, 404s, request log
# --------------------------------------------------------------------------

def test_range_is_ignored(server: V1Server, http: requests.Session) -> None:
    data = bytes(range(256)) * 40
    img = create(http, server, data=data, disk_format="raw",
                 container_format="bare")
    server.request_log.clear()
    r = http.get(url(server, "/v1/images/" + img["id"]),
                 headers={"Range": "bytes=100-199"})
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["x-image-meta-checksum"] == hashlib.md5(data).hexdigest()
    assert "Content-Range" not in r.headers
    assert server.request_log == [
        ("GET", "/v1/images/" + img["id"], "bytes=100-199", len(data))]


def test_get_unknown_and_not_active_404(server: V1Server,
                                        http: requests.Session) -> None:
    missing = str(uuid.uuid4())
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        r = http.request(method, url(server, "/v1/images/" + missing))
        assert r.status_code == 404, method
    r = http.get(url(server, "/v1/images/" + missing))
    assert r.text.startswith("404 Not Found\n\n")
    assert r.headers["Content-Type"].startswith("text/plain")
    queued = create(http, server, name="q")
    assert http.get(url(server, "/v1/images/" + queued["id"])) \
        .status_code == 404
    assert http.head(url(server, "/v1/images/" + queued["id"])) \
        .status_code == 200


def test_head_headers(server: V1Server, http: requests.Session) -> None:
    img = create(http, server, data=b"12345", name="hd", disk_format="raw",
                 container_format="bare", is_public="True", min_disk="3",
                 properties={"os_distro": "ubuntu"})
    r = http.head(url(server, "/v1/images/" + img["id"]))
    assert r.status_code == 200 and r.content == b""
    h = r.headers
    assert h["x-image-meta-id"] == img["id"]
    assert h["x-image-meta-name"] == "hd"
    assert h["x-image-meta-size"] == "5"
    assert h["x-image-meta-status"] == "active"
    assert h["x-image-meta-is_public"] == "true"
    assert h["x-image-meta-protected"] == "false"
    assert h["x-image-meta-deleted"] == "false"
    assert h["x-image-meta-min_disk"] == "3"
    assert h["x-image-meta-disk_format"] == "raw"
    assert h["x-image-meta-checksum"] == hashlib.md5(b"12345").hexdigest()
    assert h["ETag"] == h["x-image-meta-checksum"]
    assert h["x-image-meta-property-os_distro"] == "ubuntu"
    assert "x-image-meta-owner" not in h        # None values are left out
    assert "x-image-meta-deleted_at" not in h


def test_header_quoting_round_trip(server: V1Server,
                                   http: requests.Session) -> None:
    # python-glanceclient %-quotes header values; the server unquotes them
    name = "caf\u00e9 100% ok"
    quoted = urllib.parse.quote(name, safe="/:")
    r = http.post(url(server, "/v1/images"), headers={
        "x-image-meta-name": quoted,
        "x-image-meta-property-note": urllib.parse.quote("\u00fcber")})
    img = r.json()["image"]
    assert img["name"] == name
    assert img["properties"] == {"note": "\u00fcber"}
    # on output, non-ASCII (or '%') values are quoted; plain ASCII is not
    h = http.head(url(server, "/v1/images/" + img["id"])).headers
    assert urllib.parse.unquote(h["x-image-meta-name"]) == name
    assert h["x-image-meta-name"].isascii()
    assert urllib.parse.unquote(h["x-image-meta-property-note"]) == "\u00fcber"
    assert h["x-image-meta-status"] == "queued"


@needs_glanceclient
def test_glanceclient_non_ascii_name(gc: Any) -> None:
    img = gc.images.create(name="\u00e9t\u00e9", properties={"k": "v w"})
    assert img.name == "\u00e9t\u00e9"
    meta = gc.images.get(img.id)
    assert urllib.parse.unquote(meta.name) == "\u00e9t\u00e9"
    assert meta.properties == {"k": "v w"}


# --------------------------------------------------------------------------
# listing: paging, sorting, filters
# --------------------------------------------------------------------------

def test_list_brief_and_detail_fields(server: V1Server,
                                      http: requests.Session) -> None:
    create(http, server, name="one", properties={"a": "b"})
    brief = http.get(url(server, "/v1/images")).json()["images"]
    assert set(brief[0]) == {"id", "name", "size", "disk_format",
                             "container_format", "checksum"}
    detail = http.get(url(server, "/v1/images/detail")).json()["images"]
    assert detail[0]["properties"] == {"a": "b"}
    assert {"status", "created_at", "updated_at", "deleted", "deleted_at",
            "is_public", "protected", "owner", "min_ram",
            "min_disk"} <= set(detail[0])


def test_paging_default_cap_and_marker(tmp_path: pathlib.Path) -> None:
    with V1Server(store_dir=tmp_path, page_size=4) as srv, \
            requests.Session() as http:
        ids = [create(http, srv, name="img%02d" % i)["id"] for i in range(10)]
        newest_first = list(reversed(ids))
        page = http.get(srv.endpoint + "/v1/images").json()["images"]
        assert [i["id"] for i in page] == newest_first[:4]   # default 4
        page = http.get(srv.endpoint + "/v1/images?limit=7").json()["images"]
        assert len(page) == 7                                # limit honoured
        seen: list[str] = []
        marker = None
        while True:
            q = "?limit=3" + ("&marker=" + marker if marker else "")
            page = http.get(srv.endpoint + "/v1/images/detail" + q) \
                .json()["images"]
            seen += [i["id"] for i in page]
            if len(page) < 3:
                break
            marker = page[-1]["id"]
        assert seen == newest_first
        assert http.get(srv.endpoint + "/v1/images?marker=" +
                        str(uuid.uuid4())).status_code == 400
        assert http.get(srv.endpoint + "/v1/images?marker=junk") \
            .status_code == 400
        assert http.get(srv.endpoint + "/v1/images?limit=-1") \
            .status_code == 400
        assert http.get(srv.endpoint + "/v1/images?limit=x") \
            .status_code == 400


def test_limit_capped_at_1000(tmp_path: pathlib.Path) -> None:
    with V1Server(store_dir=tmp_path, api_limit_max=5) as srv, \
            requests.Session() as http:
        for i in range(8):
            create(http, srv, name=str(i))
        page = http.get(srv.endpoint + "/v1/images?limit=100").json()
        assert len(page["images"]) == 5


@needs_glanceclient
def test_glanceclient_pagination(gc: Any, server: V1Server) -> None:
    for i in range(7):
        gc.images.create(name="p%d" % i)
    server.request_log.clear()
    names = [i.name for i in gc.images.list(page_size=3)]
    assert names == ["p6", "p5", "p4", "p3", "p2", "p1", "p0"]
    assert [m for m, *_ in server.request_log] == ["GET"] * 3
    assert "marker=" in server.request_log[1][1]
    assert [i.name for i in gc.images.list(page_size=2, limit=3)] == [
        "p6", "p5", "p4"]


def test_sorting(server: V1Server, http: requests.Session) -> None:
    create(http, server, name="b", data=b"12", disk_format="raw",
           container_format="bare")
    create(http, server, name="c", data=b"1", disk_format="qcow2",
           container_format="bare")
    create(http, server, name="a", data=b"123", disk_format="vmdk",
           container_format="ovf")

    def names(q: str) -> list[str]:
        r = http.get(url(server, "/v1/images/detail?" + q))
        assert r.status_code == 200, r.text
        return [i["name"] for i in r.json()["images"]]

    assert names("") == ["a", "c", "b"]                 # created_at desc
    assert names("sort_dir=asc") == ["b", "c", "a"]
    assert names("sort_key=name&sort_dir=asc") == ["a", "b", "c"]
    assert names("sort_key=name") == ["c", "b", "a"]
    assert names("sort_key=size&sort_dir=asc") == ["c", "b", "a"]
    assert names("sort_key=disk_format&sort_dir=asc") == ["c", "b", "a"]
    # marker paging keeps the sort order
    first = http.get(url(server, "/v1/images/detail?sort_key=name&"
                          "sort_dir=asc&limit=1")).json()["images"][0]
    assert names("sort_key=name&sort_dir=asc&marker=" + first["id"]) == [
        "b", "c"]
    assert http.get(url(server, "/v1/images?sort_key=owner")) \
        .status_code == 400
    assert http.get(url(server, "/v1/images?sort_dir=up")).status_code == 400


def test_filters(server: V1Server, http: requests.Session) -> None:
    create(http, server, name="small", data=b"1" * 10, disk_format="raw",
           container_format="bare", is_public="true",
           properties={"os": "linux"})
    create(http, server, name="big", data=b"1" * 1000, disk_format="qcow2",
           container_format="bare", properties={"os": "bsd"})
    create(http, server, name="empty", container_format="ovf")

    def names(q: str) -> set[str]:
        r = http.get(url(server, "/v1/images?" + q))
        assert r.status_code == 200, r.text
        return {i["name"] for i in r.json()["images"]}

    assert names("name=big") == {"big"}
    assert names("status=queued") == {"empty"}
    assert names("status=active") == {"small", "big"}
    assert names("disk_format=qcow2") == {"big"}
    assert names("container_format=ovf") == {"empty"}
    assert names("size_min=10") == {"small", "big"}
    assert names("size_max=10") == {"small", "empty"}
    assert names("size_min=11&size_max=1000") == {"big"}
    assert names("is_public=true") == {"small"}
    assert names("is_public=false") == {"big", "empty"}
    assert names("is_public=none") == {"small", "big", "empty"}
    assert names("property-os=linux") == {"small"}
    assert names("property-os=bsd&disk_format=qcow2") == {"big"}
    assert http.get(url(server, "/v1/images?size_min=abc")).status_code == 400
    assert http.get(url(server, "/v1/images?is_public=maybe")) \
        .status_code == 400


@needs_glanceclient
def test_glanceclient_filters(gc: Any) -> None:
    gc.images.create(name="f1", properties={"role": "db"})
    gc.images.create(name="f2", properties={"role": "web"})
    found = list(gc.images.list(filters={"properties": {"role": "web"}}))
    assert [i.name for i in found] == ["f2"]
    found = list(gc.images.list(filters={"name": "f1"}))
    assert [i.name for i in found] == ["f1"]


# --------------------------------------------------------------------------
# update / purge_props / delete
# --------------------------------------------------------------------------

@needs_glanceclient
def test_update_properties_with_and_without_purge(gc: Any) -> None:
    img = gc.images.create(name="u", properties={"a": "1", "b": "2"})
    gc.images.update(img.id, properties={"c": "3"})       # purge false
    assert gc.images.get(img.id).properties == {"a": "1", "b": "2", "c": "3"}
    gc.images.update(img.id, properties={"b": "20"}, purge_props=True)
    assert gc.images.get(img.id).properties == {"b": "20"}
    gc.images.update(img.id, name="renamed", min_ram=256)
    meta = gc.images.get(img.id)
    assert meta.name == "renamed" and meta.min_ram == 256
    assert meta.properties == {"b": "20"}


def test_update_purge_header_absent_purges(server: V1Server,
                                           http: requests.Session) -> None:
    # like v1: without x-glance-registry-purge-props, properties are replaced
    img = create(http, server, properties={"a": "1"})
    r = http.put(url(server, "/v1/images/" + img["id"]),
                 headers={"x-image-meta-property-b": "2"})
    assert r.status_code == 200
    assert r.json()["image"]["properties"] == {"b": "2"}


def test_property_names_lowercased_dash_to_underscore(
        server: V1Server, http: requests.Session) -> None:
    img = create(http, server, properties={"Hw-Disk-Bus": "virtio"})
    assert img["properties"] == {"hw_disk_bus": "virtio"}


@needs_glanceclient
def test_delete_and_protected(gc: Any, server: V1Server) -> None:
    keep = gc.images.create(name="keep", protected=True)
    gone = gc.images.create(name="gone", disk_format="raw",
                            container_format="bare", data=io.BytesIO(b"d"))
    assert os.path.exists(server.data_path(gone.id))
    gc.images.delete(gone.id)
    assert not os.path.exists(server.data_path(gone.id))
    assert [i.name for i in gc.images.list()] == ["keep"]
    with pytest.raises(gc_exc.HTTPNotFound):
        gc.images.get(gone.id)
    with pytest.raises(gc_exc.HTTPNotFound):
        gc.images.delete(gone.id)
    with pytest.raises(gc_exc.HTTPForbidden):
        gc.images.delete(keep.id)
    gc.images.update(keep.id, protected=False)
    gc.images.delete(keep.id)
    assert list(gc.images.list()) == []


def test_deleted_visible_with_changes_since(server: V1Server,
                                            http: requests.Session) -> None:
    img = create(http, server, name="old")
    assert http.delete(url(server, "/v1/images/" + img["id"])) \
        .status_code == 200
    r = http.get(url(server, "/v1/images/detail?changes-since=2000-01-01T00:"
                     "00:00Z"))
    [rec] = r.json()["images"]
    assert rec["status"] == "deleted" and rec["deleted"] is True
    assert rec["deleted_at"] is not None


# --------------------------------------------------------------------------
# members
# --------------------------------------------------------------------------

@needs_glanceclient
def test_members_with_glanceclient(gc: Any) -> None:
    img = gc.images.create(name="shared")
    other = gc.images.create(name="other")
    gc.image_members.create(img, "tenantA")
    gc.image_members.create(img, "tenantB", can_share=True)
    gc.image_members.create(other, "tenantA", can_share=True)
    members = {m.member_id: m.can_share
               for m in gc.image_members.list(image=img)}
    assert members == {"tenantA": False, "tenantB": True}
    shared = {m.image_id: m.can_share
              for m in gc.image_members.list(member="tenantA")}
    assert shared == {img.id: False, other.id: True}
    gc.image_members.delete(img.id, "tenantA")
    assert [m.member_id for m in gc.image_members.list(image=img)] == [
        "tenantB"]
    gc.image_members.replace(img, [{"member_id": "tenantB"},
                                   {"member_id": "tenantC",
                                    "can_share": True}])
    members = {m.member_id: m.can_share
               for m in gc.image_members.list(image=img)}
    assert members == {"tenantB": True, "tenantC": True}


def test_members_raw(server: V1Server, http: requests.Session) -> None:
    img = create(http, server, name="m")
    base = url(server, "/v1/images/%s/members" % img["id"])
    assert http.get(base).json() == {"members": []}
    assert http.put(base + "/t1").status_code == 204     # no body
    assert http.put(base + "/t1", json={"member": {"can_share": True}}) \
        .status_code == 204
    assert http.put(base + "/t1").status_code == 204     # unchanged
    assert http.get(base).json() == {
        "members": [{"member_id": "t1", "can_share": True}]}
    r = http.put(base, json={"memberships": [{"member_id": "t2",
                                              "can_share": False}]})
    assert r.status_code == 204
    assert http.get(base).json()["members"] == [
        {"member_id": "t2", "can_share": False}]
    assert http.delete(base + "/t1").status_code == 404
    assert http.put(base, json={"wrong": []}).status_code == 400
    assert http.get(url(server, "/v1/shared-images/t2")).json() == {
        "shared_images": [{"image_id": img["id"], "can_share": False}]}
    missing = url(server, "/v1/images/%s/members" % uuid.uuid4())
    assert http.get(missing).status_code == 404
    assert http.put(missing + "/t1").status_code == 404
    # members of a deleted image are gone with it
    http.delete(url(server, "/v1/images/" + img["id"]))
    assert http.get(url(server, "/v1/shared-images/t2")).json() == {
        "shared_images": []}


# --------------------------------------------------------------------------
# auth, keep-alive, lifecycle
# --------------------------------------------------------------------------

def test_token_auth(tmp_path: pathlib.Path) -> None:
    with V1Server(store_dir=tmp_path, token="tok") as srv:
        assert requests.get(srv.endpoint + "/v1/images").status_code == 401
        assert requests.get(srv.endpoint + "/v1/images", headers={
            "X-Auth-Token": "nope"}).status_code == 401
        assert requests.get(srv.endpoint + "/v1/images", headers={
            "X-Auth-Token": "tok"}).status_code == 200
        assert requests.get(srv.endpoint + "/").status_code == 300
        if gc_v1 is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                client = gc_v1.Client(srv.endpoint, token="tok")
            assert client.images.create(name="a").name == "a"


def test_keep_alive_reuses_connection(server: V1Server) -> None:
    host, port = server.endpoint[len("http://"):].split(":")
    conn = httpclient.HTTPConnection(host, int(port))
    conn.request("POST", "/v1/images", body=b"abc", headers={
        "x-image-meta-disk_format": "raw",
        "x-image-meta-container_format": "bare"})
    resp = conn.getresponse()
    img = json.loads(resp.read())["image"]
    sock = conn.sock
    for _ in range(3):
        conn.request("GET", "/v1/images/" + img["id"])
        resp = conn.getresponse()
        assert resp.read() == b"abc"
        conn.request("HEAD", "/v1/images/" + img["id"])
        resp = conn.getresponse()
        assert resp.read() == b""
    # an early error with a small body keeps the connection usable too
    conn.request("PUT", "/v1/images/" + img["id"], body=b"more")
    resp = conn.getresponse()
    assert resp.status == 409
    resp.read()
    conn.request("GET", "/v1/images")
    assert conn.getresponse().status == 200
    assert conn.sock is sock
    conn.close()


def test_stop_and_default_store(tmp_path: pathlib.Path) -> None:
    srv = V1Server().start()
    store = srv.store_dir
    endpoint = srv.endpoint
    assert requests.get(endpoint + "/v1/images").status_code == 200
    srv.stop()
    assert not os.path.exists(store)                 # temp store removed
    with pytest.raises(requests.ConnectionError):
        requests.get(endpoint + "/v1/images", timeout=2)


def test_concurrent_uploads(server: V1Server) -> None:
    import concurrent.futures

    def one(i: int) -> str:
        data = bytes([i]) * (50_000 + i)
        r = requests.post(server.endpoint + "/v1/images", data=gen(data),
                          headers={"x-image-meta-disk_format": "raw",
                                   "x-image-meta-container_format": "bare"})
        assert r.status_code == 201
        assert r.json()["image"]["checksum"] == hashlib.md5(data).hexdigest()
        return r.json()["image"]["id"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(one, range(16)))
    assert len(set(ids)) == 16
    time.sleep(0)

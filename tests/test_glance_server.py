"""The real Glance that the other tests run against behaves as shared/notes/real-glance.md says.

These tests start glance-api from PyPI (through glancefs.testing.glance_server), so a failure
here means the test server is broken, not glancefs.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from glancefs.testing.glance_server import GlanceServer, free_port, identity_headers

REPO = Path(__file__).resolve().parent.parent
OCTET = {"Content-Type": "application/octet-stream"}


def _create(endpoint: str, headers: dict[str, str] | None = None, **fields: Any) -> dict:
    body = {"name": "img", "disk_format": "raw", "container_format": "bare", **fields}
    r = requests.post(f"{endpoint}/v2/images", json=body, headers=headers, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def _upload(endpoint: str, image_id: str, data: bytes,
            headers: dict[str, str] | None = None) -> requests.Response:
    return requests.put(f"{endpoint}/v2/images/{image_id}/file", data=data,
                        headers={**(headers or {}), **OCTET}, timeout=60)


def _get(endpoint: str, image_id: str, headers: dict[str, str] | None = None) -> dict:
    r = requests.get(f"{endpoint}/v2/images/{image_id}", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def glance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    with GlanceServer(tmp_path_factory.mktemp("glance"), free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def glance_headers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    server = GlanceServer(tmp_path_factory.mktemp("glance-headers"), free_port(),
                          auth="headers", image_size_cap=1024 * 1024)
    with server:
        yield server


def test_create_upload_and_hashes(glance: GlanceServer) -> None:
    image = _create(glance.endpoint, name="hashes")
    assert image["status"] == "queued"
    data = os.urandom(3 * 1024 * 1024 + 17)
    assert _upload(glance.endpoint, image["id"], data).status_code == 204

    got = _get(glance.endpoint, image["id"])
    assert got["status"] == "active"
    assert got["size"] == len(data)
    assert got["checksum"] == hashlib.md5(data).hexdigest()
    assert got["os_hash_algo"] == "sha512"
    assert got["os_hash_value"] == hashlib.sha512(data).hexdigest()
    # The file store holds the bytes under the image id, so tests can tamper with them.
    assert (glance.images_dir / image["id"]).read_bytes() == data

    r = requests.get(f"{glance.endpoint}/v2/images/{image['id']}/file",
                     headers={"Range": "bytes=10-19"}, timeout=30)
    assert r.status_code == 206 and r.content == data[10:20]


def test_upload_needs_octet_stream(glance: GlanceServer) -> None:
    image = _create(glance.endpoint, name="wrong-type")
    r = requests.put(f"{glance.endpoint}/v2/images/{image['id']}/file", data=b"abc",
                     headers={"Content-Type": "text/plain"}, timeout=30)
    assert r.status_code == 415


def test_list_is_allowed_without_auth(glance: GlanceServer) -> None:
    _create(glance.endpoint, name="listed")
    r = requests.get(f"{glance.endpoint}/v2/images", timeout=30)
    assert r.status_code == 200, r.text
    assert "listed" in {i["name"] for i in r.json()["images"]}


def test_concurrent_creates_and_uploads(glance: GlanceServer) -> None:
    """Without the BEGIN IMMEDIATE listener most of these fail with 'database is locked'."""
    def one(i: int) -> str:
        with requests.Session() as s:
            r = s.post(f"{glance.endpoint}/v2/images", timeout=60,
                       json={"name": f"conc-{i}", "disk_format": "raw",
                             "container_format": "bare"})
            if r.status_code != 201:
                return f"create {r.status_code}: {r.text[:200]}"
            r2 = s.put(f"{glance.endpoint}/v2/images/{r.json()['id']}/file",
                       data=b"%d" % i * 1000, headers=OCTET, timeout=60)
            return "ok" if r2.status_code == 204 else f"upload {r2.status_code}: {r2.text[:200]}"

    with concurrent.futures.ThreadPoolExecutor(25) as pool:
        results = Counter(pool.map(one, range(25)))
    assert results == {"ok": 25}, results
    assert "database is locked" not in glance.log_file.read_text(errors="replace")


def test_headers_mode_ownership(glance_headers: GlanceServer) -> None:
    ep = glance_headers.endpoint
    a, b = identity_headers("project-a"), identity_headers("project-b")
    admin = identity_headers("project-admin", roles=("admin", "member", "reader"))

    assert requests.get(f"{ep}/v2/images", timeout=30).status_code == 401

    image = _create(ep, headers=a, name="a-private", visibility="private")
    assert image["owner"] == "project-a"
    assert _upload(ep, image["id"], b"private data", headers=a).status_code == 204
    assert _get(ep, image["id"], headers=a)["status"] == "active"

    assert requests.get(f"{ep}/v2/images/{image['id']}", headers=b,
                        timeout=30).status_code == 404
    listed_b = requests.get(f"{ep}/v2/images", headers=b, timeout=30)
    assert listed_b.status_code == 200
    assert image["id"] not in {i["id"] for i in listed_b.json()["images"]}
    # Only the admin role is admin: B may not delete A's image, the admin sees it.
    assert requests.delete(f"{ep}/v2/images/{image['id']}", headers=b,
                           timeout=30).status_code in (403, 404)
    assert _get(ep, image["id"], headers=admin)["owner"] == "project-a"


def test_image_size_cap(glance_headers: GlanceServer) -> None:
    a = identity_headers("project-a")
    image = _create(glance_headers.endpoint, headers=a, name="too-big")
    r = _upload(glance_headers.endpoint, image["id"], b"\0" * (1024 * 1024 + 1), headers=a)
    assert r.status_code == 413, r.text


def test_kill_and_restart_keep_data(tmp_path: Path) -> None:
    server = GlanceServer(tmp_path / "g", free_port())
    try:
        server.start()
        image = _create(server.endpoint, name="survivor")
        assert _upload(server.endpoint, image["id"], b"kept").status_code == 204
        pid = server.pid
        server.kill()
        assert not server.is_running() and not server.pid_file.exists()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{server.endpoint}/versions", timeout=5)
        assert pid is not None and not Path(f"/proc/{pid}").exists()
        server.restart()
        assert _get(server.endpoint, image["id"])["checksum"] == hashlib.md5(b"kept").hexdigest()
    finally:
        server.stop()
        server.stop()  # idempotent
    assert not server.is_running()


def test_cli_wrapper(tmp_path: Path) -> None:
    script = REPO / "scripts" / "glance-server"
    port = free_port()
    data = tmp_path / "cli"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = lambda *args: subprocess.run(  # noqa: E731
        [str(script), *args], cwd="/", env=env, capture_output=True, text=True, timeout=120)
    try:
        started = run("start", str(data), str(port))
        assert started.returncode == 0, started.stderr
        assert requests.get(f"http://127.0.0.1:{port}/versions", timeout=10).status_code == 200
        status = run("status", str(data))
        assert status.returncode == 0 and f":{port}" in status.stdout
    finally:
        stopped = run("stop", str(data))
    assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/versions", timeout=2)
        except requests.ConnectionError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("server still answers after stop")
    assert run("status", str(data)).returncode == 3

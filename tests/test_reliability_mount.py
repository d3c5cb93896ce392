"""Reliability through the kernel mount: faults between the mount and Glance,
malformed answers, the server going away, odd names, and secrets.

The mount talks to Glance through the fault-injecting proxy
(``OS_IMAGE_URL=proxy.endpoint``); a test queues faults for the data requests
of one fresh image (so no cache hides them) and checks what a reader of the
file gets: the right bytes (hash) or an errno, in bounded time, with a log line.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from glancefs.api import Client, v2
from glancefs.api.service import ImageService
from glancefs.fs import names
from glancefs.testing.faultproxy import Fault, FaultProxy, http_response
from glancefs.testing.glance_server import GlanceServer
from tests.conftest import fresh_glance
from tests.mount_support import (
    Image,
    Mounted,
    is_mounted,
    make_image,
    mount_env,
    mounted,
    sha256_file,
)

pytestmark = [pytest.mark.mount, pytest.mark.slow]

MiB = 1024 * 1024
TOKEN = "SeCrEtToKeN123"


@pytest.fixture(scope="module")
def proxy(glance_v2: GlanceServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", glance_v2.port) as p:
        yield p


@pytest.fixture(scope="module")
def mount(proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounted]:
    with mounted(proxy.endpoint, tmp_path_factory.mktemp("rel") / "mnt",
                 options="ttl=1") as m:
        yield m


@pytest.fixture(autouse=True)
def no_leftover_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "proxy" in request.fixturenames:
        request.getfixturevalue("proxy").clear()


def fresh(client: v2.Client, size: int = 6 * MiB, name: str | None = None) -> Image:
    """A new image nobody has read, so neither the block cache nor the page
    cache of the mount can answer for it."""
    data = os.urandom(size)
    return make_image(client, name or f"rel-{hashlib.md5(data).hexdigest()[:8]}", data)


def data_path(image: Image) -> str:
    return f"/v2/images/{image.id}/file "


def read_with_timeout(path: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """sha256sum in a child, so a hung read fails the test instead of hanging it."""
    return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True,
                          timeout=timeout, check=False)


def log_after(m: Mounted, mark: int) -> str:
    return m.log_text()[mark:]


# -- faults -----------------------------------------------------------------------------


@pytest.mark.parametrize("cuts", [1, 6])
def test_reset_mid_download_reader_gets_right_bytes(mount, proxy, client, cuts: int) -> None:
    image = fresh(client)
    proxy.add(Fault(match=data_path(image), cut_after=400_000, times=cuts))
    done = read_with_timeout(mount.path / ".by-id" / image.id, 120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == image.sha256
    assert sum(1 for r in proxy.stats.requests if data_path(image) in r) >= cuts + 1


def test_reset_mid_download_random_reads(mount, proxy, client) -> None:
    image = fresh(client)
    proxy.add(Fault(match=data_path(image), cut_after=100_000, times=4))
    with open(mount.path / ".by-id" / image.id, "rb") as f:
        for offset in (5 * MiB + 7, 123, 3 * MiB - 1, 4 * MiB + 999_999):
            f.seek(offset)
            assert f.read(200_000) == image.data[offset:offset + 200_000]


@pytest.mark.parametrize("status,reason", [(503, "Service Unavailable"),
                                           (429, "Too Many Requests")])
@pytest.mark.parametrize("retry_after", [None, "1"])
def test_503_and_429_reader_gets_right_bytes(mount, proxy, client, status: int, reason: str,
                                             retry_after: str | None) -> None:
    image = fresh(client, 3 * MiB)
    headers = {"Retry-After": retry_after} if retry_after else {}
    proxy.add(Fault(match=data_path(image), respond=http_response(status, reason, b"busy",
                                                                  headers), times=2))
    start = time.monotonic()
    done = read_with_timeout(mount.path / ".by-id" / image.id, 60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == image.sha256
    assert time.monotonic() - start < 30


def test_persistent_503_is_an_errno_in_bounded_time(mount, proxy, client) -> None:
    """A 503 that outlasts the client's retries fails the read with EIO (not
    EAGAIN, which Python's f.read() would turn into a silent None) and one log
    line with the status and the server's message."""
    image = fresh(client, 2 * MiB)
    proxy.add(Fault(match=data_path(image), respond=http_response(
        503, "Service Unavailable", b"down for maintenance", {"Retry-After": "1"}), times=10_000))
    mark = len(mount.log_text())
    start = time.monotonic()
    done = subprocess.run(["cat", str(mount.path / ".by-id" / image.id)],
                          capture_output=True, text=True, timeout=90, check=False)
    assert time.monotonic() - start < 60
    assert done.returncode != 0 and not done.stdout
    assert "Input/output error" in done.stderr, done.stderr
    # Python sees an error too, not an empty or None read.
    with open(mount.path / ".by-id" / image.id, "rb") as f, pytest.raises(OSError) as failed:
        f.read()
    assert failed.value.errno == errno.EIO
    log = log_after(mount, mark)
    refusals = [ln for ln in log.splitlines() if ln.endswith("-> EIO") and image.id in ln]
    assert refusals and "HTTP 503" in refusals[0] and "down for maintenance" in refusals[0], log
    proxy.clear()
    # Once the server answers again the same file reads fine, no remount.
    assert sha256_file(mount.path / ".by-id" / image.id) == image.sha256


def test_stall_shorter_than_timeout_is_waited_for(mount, proxy, client) -> None:
    image = fresh(client, 2 * MiB)
    proxy.add(Fault(match=data_path(image), stall=3))
    done = read_with_timeout(mount.path / ".by-id" / image.id, 60)
    assert done.returncode == 0 and done.stdout.split()[0] == image.sha256


def test_stall_longer_than_read_timeout_is_eio_in_bounded_time(proxy, client,
                                                               tmp_path: Path) -> None:
    image = fresh(client, 2 * MiB)
    proxy.add(Fault(match=data_path(image), stall=300, times=10_000))
    with mounted(proxy.endpoint, tmp_path / "mnt", options="ttl=1,timeout=2") as m:
        start = time.monotonic()
        with pytest.raises(subprocess.CalledProcessError):
            subprocess.run(["cat", str(m.path / ".by-id" / image.id)], check=True,
                           capture_output=True, timeout=60)
        # The read's deadline is the timeout (2 s), its retries inside it.
        assert time.monotonic() - start < 30


# -- malformed answers ------------------------------------------------------------------


def raw_answer(status: str, headers: dict[str, str], body: bytes) -> bytes:
    head = [f"HTTP/1.1 {status}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


MALFORMED = {
    "truncated-body": lambda size: raw_answer(
        "206 Partial Content", {"Content-Length": str(size),
                                "Content-Range": f"bytes 0-{size - 1}/{size}"}, b"\0" * 1000),
    "wrong-content-length": lambda size: raw_answer(
        "200 OK", {"Content-Length": str(size + 5000)}, b"\xee" * 100),
    "content-range-mismatch": lambda size: raw_answer(
        "206 Partial Content", {"Content-Length": "100",
                                "Content-Range": f"bytes 5000-5099/{size}"}, b"\xaa" * 100),
    "html-error-page": lambda size: http_response(
        500, "Internal Server Error",
        b"<html><head><title>500</title></head><body><h1>500</h1>glance exploded</body></html>",
        {"Content-Type": "text/html"}),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_data_answer_is_eio_never_wrong_bytes(mount, proxy, client,
                                                        kind: str) -> None:
    image = fresh(client, 2 * MiB)
    proxy.add(Fault(match=data_path(image), respond=MALFORMED[kind](len(image.data)),
                    times=10_000))
    mark = len(mount.log_text())
    start = time.monotonic()
    done = subprocess.run(["cat", str(mount.path / ".by-id" / image.id)], capture_output=True,
                          timeout=120, check=False)
    assert time.monotonic() - start < 90
    assert done.returncode != 0
    assert b"Input/output error" in done.stderr, done.stderr
    # Whatever came out before the error is a prefix of the image: never wrong bytes.
    assert image.data.startswith(done.stdout)
    log = log_after(mount, mark)
    assert image.id in log and "EIO" in log, log
    proxy.clear()
    assert sha256_file(mount.path / ".by-id" / image.id) == image.sha256


def test_invalid_json_on_list_keeps_ls_bounded_and_recovers(mount, proxy, client) -> None:
    image = fresh(client, 1000)
    proxy.add(Fault(match="GET /v2/images?", respond=raw_answer(
        "200 OK", {"Content-Type": "application/json", "Content-Length": "9"}, b"{not json"),
        times=10_000))
    mark = len(mount.log_text())
    time.sleep(1.5)   # past the ttl: the next ls asks the server
    start = time.monotonic()
    done = subprocess.run(["ls", str(mount.path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert time.monotonic() - start < 30
    # Either the last good listing or an I/O error; never garbage.
    assert done.returncode == 0 or "Input/output error" in done.stderr
    assert "expected JSON" in log_after(mount, mark) or done.returncode == 0
    proxy.clear()
    deadline = time.monotonic() + 30     # the next refresh after the back-off lists it
    while image.name not in os.listdir(mount.path):
        assert time.monotonic() < deadline, "the listing did not recover"
        time.sleep(0.2)


# -- the server away and back -----------------------------------------------------------


@pytest.fixture(scope="module")
def own_glance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    with fresh_glance(tmp_path_factory, "glance-restart") as server:
        yield server


def timed(cmd: list[str], timeout: float = 90) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    return time.monotonic() - start, done


def test_server_stopped_and_started_while_a_file_is_open(own_glance, tmp_path: Path) -> None:
    glance = Client("2", endpoint=own_glance.endpoint)
    image = make_image(glance, "restart.raw", os.urandom(24 * MiB))
    other = make_image(glance, "other.raw", os.urandom(1000))
    timings: dict[str, float] = {}
    with mounted(own_glance.endpoint, tmp_path / "mnt", options="ttl=1") as m:
        path = m.path / "restart.raw"
        with open(path, "rb") as f:
            assert f.read(MiB) == image.data[:MiB]
            own_glance.stop()
            time.sleep(1.5)   # listing and attributes expire
            timings["ls"], ls = timed(["ls", "-l", str(m.path)])
            timings["stat"], st = timed(["stat", str(m.path / "other.raw")])
            f.seek(20 * MiB)
            start = time.monotonic()
            try:
                f.read(MiB)   # not cached: fails, bounded (or served if prefetched)
            except OSError as error:
                assert error.errno in (errno.EIO, errno.EHOSTUNREACH, errno.ECONNREFUSED,
                                       errno.EAGAIN, errno.ETIMEDOUT)
            timings["read-down"] = time.monotonic() - start
            own_glance.start()
            f.seek(0)
            assert hashlib.sha256(f.read()).hexdigest() == image.sha256
        assert sha256_file(m.path / "other.raw") == other.sha256
        assert "restart.raw" in os.listdir(m.path)
    print("timings while Glance was down:", timings)
    assert max(timings.values()) < 60, timings
    assert ls.returncode in (0, 1, 2) and st.returncode in (0, 1)


def test_unmount_while_server_is_down_does_not_hang(own_glance, tmp_path: Path) -> None:
    glance = Client("2", endpoint=own_glance.endpoint)
    make_image(glance, "down.raw", os.urandom(3 * MiB))
    with mounted(own_glance.endpoint, tmp_path / "mnt", options="ttl=1") as m:
        with open(m.path / "down.raw", "rb") as f:
            f.read(4096)
            own_glance.stop()
            elapsed, done = timed(["fusermount3", "-u", str(m.path)], timeout=30)
            # Busy (a file is open) or done, but answered at once.
            assert elapsed < 10
        elapsed, done = timed(["fusermount3", "-u", str(m.path)], timeout=30)
        assert elapsed < 10 and not is_mounted(m.path), done.stderr
        assert m.proc.wait(timeout=30) is not None
    own_glance.start()


# -- names ------------------------------------------------------------------------------


NAMED = ["", ".", "..", "a" * 255, "é" * 127 + "a", "é" * 128, "b" * 256, "x/y", "x%2Fy",
         "%", "%25", "rel-dup", "rel-dup", "rel-dup~", ".by-id", "%2E"]


def test_odd_names_created_through_the_api_are_listed_and_read_back(
        own_glance: GlanceServer, tmp_path: Path) -> None:
    glance = Client("2", endpoint=own_glance.endpoint)
    made: list[Image] = []
    for n, name in enumerate(NAMED):
        try:
            made.append(make_image(glance, name, os.urandom(100 + n)))
        except Exception as error:  # noqa: BLE001 - Glance may refuse > 255 characters
            assert len(name) > 255, (name, error)
        time.sleep(0.01)
    records = ImageService(glance).list_images()
    expected = names.assign_names([names.NameEntry(r.id, r.name, r.created_at)
                                   for r in records])
    with mounted(own_glance.endpoint, tmp_path / "mnt", options="ttl=1") as m:
        shown = set(os.listdir(os.fsencode(m.path)))
        assert shown == set(expected) | {b".by-id", b".shared", b".community", b".hidden",
                                         b".by-tag", b".by-owner"}
        by_id = {v: k for k, v in expected.items()}
        for image in made:
            listed = by_id[image.id]
            assert len(listed) <= 255 and b"/" not in listed and listed not in (b".", b"..")
            assert (Path(os.fsdecode(m.path)) / os.fsdecode(listed)).read_bytes() == image.data
            if listed != b"%" and b"~" not in listed:
                assert names.unescape(listed) == image.name
        # Names that differ only by the escape are different files.
        assert by_id[made[NAMED.index("x/y")].id] != by_id[made[NAMED.index("x%2Fy")].id]
        assert len({by_id[i.id] for i in made}) == len(made)


# -- security ---------------------------------------------------------------------------


def test_mount_defaults_no_allow_other_and_read_only_modes(mount, client) -> None:
    image = fresh(client, 1000)
    with open("/proc/mounts") as f:
        line = next(ln for ln in f if ln.split()[1] == str(mount.path))
    options = line.split()[3].split(",")
    assert "allow_other" not in options, line
    assert "default_permissions" in options, line
    st = os.stat(mount.path / ".by-id" / image.id)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444
    assert st.st_uid == os.getuid()


def test_token_absent_from_debug_log_and_ps(proxy, client, tmp_path: Path) -> None:
    image = fresh(client, 2 * MiB)
    env = mount_env(proxy.endpoint, OS_AUTH_TOKEN=TOKEN)
    proxy.add(Fault(match=data_path(image), cut_after=300_000))
    proxy.add(Fault(match=data_path(image), respond=http_response(503, "busy", b"busy")))
    with mounted(proxy.endpoint, tmp_path / "mnt", options="ttl=1,debug", env=env) as m:
        assert sha256_file(m.path / ".by-id" / image.id) == image.sha256
        os.listdir(m.path)
        subprocess.run(["getfattr", "-d", str(m.path / ".by-id" / image.id)],
                       capture_output=True, check=False)
        with pytest.raises(OSError):
            os.stat(m.path / "no-such-image")
        ps = subprocess.run(["ps", "auxww"], capture_output=True, text=True, check=False).stdout
        cmdline = Path(f"/proc/{m.proc.pid}/cmdline").read_bytes()
        log = m.log_text()
    assert re.search(r"DEBUG", log), "the debug log was expected to be on"
    assert TOKEN not in log
    assert TOKEN not in ps
    assert TOKEN.encode() not in cmdline

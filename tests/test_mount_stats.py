"""The mount's own counters (user.glancefs.stats on its root), through the real kernel."""
from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from glancefs.api import v2
from glancefs.testing.glance_server import GlanceServer
from tests.mount_support import Mounted, make_image, mounted

pytestmark = [pytest.mark.mount, pytest.mark.slow]

MiB = 1024 * 1024
STATS = "user.glancefs.stats"


@pytest.fixture
def mount(glance_v2: GlanceServer, tmp_path: Path) -> Iterator[Mounted]:
    with mounted(glance_v2.endpoint, tmp_path / "mnt", options="ttl=1") as m:
        yield m
        log = m.log_text()
    assert "Traceback" not in log, log


def counters(mnt: Path) -> dict[str, Any]:
    return json.loads(os.getxattr(mnt, STATS))


def wait_listed(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} not listed after {timeout}s"
        time.sleep(0.1)


def test_a_whole_read_is_counted(mount: Mounted, client: v2.Client) -> None:
    data = os.urandom(5 * MiB + 1234)
    image = make_image(client, "stats-read.raw", data)
    assert STATS.encode() in [n.encode() for n in os.listxattr(mount.path)]
    before = counters(mount.path)
    assert before["version"] == 1 and image.id not in before["images"]
    path = mount.path / ".by-id" / image.id
    wait_listed(path)
    started = time.perf_counter()
    assert path.read_bytes() == data
    elapsed = time.perf_counter() - started

    # What a user runs; the value is JSON.
    shown = subprocess.run(["getfattr", "--only-values", "-n", STATS, str(mount.path)],
                           capture_output=True, check=True).stdout
    after = json.loads(shown)
    mine = after["images"][image.id]
    assert mine["name"] == "stats-read.raw"
    # A fresh mount: every byte fetched once (and again only what the kernel lost).
    assert mine["bytes"] - mine["reread_bytes"] == len(data)
    assert mine["gets"] >= 1
    assert (mine["verified"], mine["mismatches"]) == (1, 0)
    assert mine["hash_bytes"] == len(data)
    assert mine["hash_cpu_seconds"] > 0          # full precision: never rounded to zero
    assert 0 < mine["hash_busy_seconds"] <= elapsed   # wall time, within the read's own
    assert 0 <= mine["hash_core_wait_seconds"] <= elapsed
    assert mine["misses"] + mine["cache_hits"] + mine["disk_hits"] >= 1
    assert after["totals"]["bytes"] >= before["totals"]["bytes"] + len(data)
    assert after["totals"]["verified"] == before["totals"]["verified"] + 1
    assert after["retries"] == 0

    # Read again: the kernel's page cache or the mount's cache answers, nothing is fetched.
    assert path.read_bytes() == data
    assert counters(mount.path)["images"][image.id]["bytes"] == len(data)


def test_pages_the_kernel_lost_and_asks_for_again_are_counted(mount: Mounted,
                                                               client: v2.Client) -> None:
    """The kernel's page cache loses what it was served (here posix_fadvise; memory
    pressure or a reclaimer alike) and the same open file reads it again: the mount
    fetches it again and says so, apart from a fetch it made twice on its own."""
    data = os.urandom(6 * MiB + 99)
    image = make_image(client, "stats-reread.raw", data)
    path = mount.path / ".by-id" / image.id
    wait_listed(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        first = b"".join(iter(lambda: os.read(fd, MiB), b""))
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.lseek(fd, 0, os.SEEK_SET)
        again = b"".join(iter(lambda: os.read(fd, MiB), b""))
        mine = counters(mount.path)["images"][image.id]
    finally:
        os.close(fd)
    assert first == again == data
    # Not every block: the last blocks read may still be in the mount's memory
    # (hashed and served, dropped only as the reader moves on).
    assert 0 < mine["reread_bytes"] <= len(data)
    assert mine["bytes"] - mine["reread_bytes"] == len(data)    # nothing fetched twice else
    assert counters(mount.path)["totals"]["reread_bytes"] >= mine["reread_bytes"]


def test_an_upload_is_counted(mount: Mounted, client: v2.Client, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 77)
    source = tmp_path / "up.raw"
    source.write_bytes(data)
    subprocess.run(["cp", str(source), str(mount.path / "stats-up.raw")], check=True)
    after = counters(mount.path)
    uploaded = [(image_id, c) for image_id, c in after["images"].items()
                if c["name"] == "stats-up.raw"]
    assert len(uploaded) == 1, after["images"]
    image_id, mine = uploaded[0]
    assert (mine["uploads"], mine["upload_bytes"], mine["upload_failures"]) == (1, len(data), 0)
    assert client.images.get(image_id)["size"] == len(data)
    assert after["totals"]["uploads"] >= 1 and after["totals"]["upload_failures"] == 0


def test_other_directories_have_no_counters(mount: Mounted) -> None:
    with pytest.raises(OSError):
        os.getxattr(mount.path / ".by-id", STATS)
    assert os.listxattr(mount.path / ".by-id") == []

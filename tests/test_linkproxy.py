"""The far-link emulator (glancefs.testing.linkproxy) in front of the real Glance.

Only lower bounds on time are asserted: what the link must cost whatever the machine's
speed. How fast things go through it is the benchmark's business (scripts/bench)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from glancefs.api import Client, v2
from glancefs.testing.glance_server import GlanceServer
from glancefs.testing.linkproxy import BURST, LinkProxy, TokenBucket, parse_rate
from tests.mount_support import make_image, mounted

MiB = 1024 * 1024
DELAY = 0.02
RATE = 8 * MiB


@pytest.fixture(scope="module")
def image(client: v2.Client) -> tuple[str, bytes]:
    data = os.urandom(4 * MiB + 321)
    return make_image(client, "link-4MiB.raw", data).id, data


@pytest.fixture
def link(glance_v2: GlanceServer) -> Iterator[LinkProxy]:
    with LinkProxy("127.0.0.1", glance_v2.port, delay=DELAY, rate=RATE) as proxy:
        yield proxy


def download(endpoint: str, image_id: str) -> tuple[float, bytes]:
    client = Client("2", endpoint=endpoint)
    meta = client.images.get(image_id)       # not timed: the data alone
    start = time.monotonic()
    data = b"".join(client.images.data(meta))
    return time.monotonic() - start, data


def test_parse_rate() -> None:
    assert parse_rate("40M") == 40 * MiB
    assert parse_rate("400MiB/s") == 400 * MiB
    assert parse_rate("1.5G") == 1.5 * 1024 * MiB
    assert parse_rate("64k") == 64 * 1024
    assert parse_rate("12345") == 12345
    assert parse_rate("none") is None and parse_rate("0") is None
    with pytest.raises(ValueError):
        parse_rate("fast")


def test_a_bucket_holds_takers_to_its_rate() -> None:
    bucket = TokenBucket(4 * MiB)
    start = time.monotonic()

    def take() -> None:
        for _ in range(16):
            bucket.take(BURST)

    threads = [threading.Thread(target=take) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 2 MiB at 4 MiB/s, less the burst the bucket starts with.
    assert time.monotonic() - start >= (2 * MiB - BURST) / (4 * MiB)


def test_a_download_is_bounded_by_the_link_rate(link: LinkProxy, image: tuple[str, bytes]
                                                ) -> None:
    image_id, data = image
    seconds, got = download(link.endpoint, image_id)
    assert got == data
    # Every byte passed the 8 MiB/s bucket (less its first burst), and the answer came
    # a one-way delay after the request went out a one-way delay late.
    assert seconds >= (len(data) - BURST) / RATE + 2 * DELAY
    assert link.stats.bytes_down >= len(data)


def test_a_small_request_costs_a_round_trip(link: LinkProxy) -> None:
    with requests.Session() as session:
        start = time.monotonic()
        assert session.get(f"{link.endpoint}/versions", timeout=30).ok
        first = time.monotonic() - start
        start = time.monotonic()
        assert session.get(f"{link.endpoint}/versions", timeout=30).ok
        again = time.monotonic() - start
    # A new connection pays the handshake's round trip too.
    assert first >= 4 * DELAY
    assert again >= 2 * DELAY
    assert link.stats.connections == 1


def test_connections_share_the_total_rate(glance_v2: GlanceServer,
                                          image: tuple[str, bytes]) -> None:
    image_id, data = image
    results: list[bytes] = []
    with LinkProxy("127.0.0.1", glance_v2.port, delay=DELAY, total_rate=RATE) as link:
        clients = [threading.Thread(target=lambda: results.append(
            download(link.endpoint, image_id)[1])) for _ in range(2)]
        start = time.monotonic()
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        seconds = time.monotonic() - start
    assert results == [data, data]
    assert seconds >= (2 * len(data) - BURST) / RATE


def test_an_upload_is_capped_on_the_way_up(link: LinkProxy) -> None:
    client = Client("2", endpoint=link.endpoint)
    data = os.urandom(2 * MiB)
    image = client.images.create(name="link-up.raw", disk_format="raw",
                                 container_format="bare")
    start = time.monotonic()
    client.images.upload(image["id"], data)
    seconds = time.monotonic() - start
    assert seconds >= (len(data) - BURST) / RATE
    assert client.images.get(image["id"])["size"] == len(data)


def test_the_command_line(glance_v2: GlanceServer) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "glancefs.testing.linkproxy", "--listen", "0", "--upstream",
         f"127.0.0.1:{glance_v2.port}", "--delay-ms", "20", "--rate", "40M",
         "--total-rate", "400M"], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "20 ms each way, 40 MiB/s per connection, 400 MiB/s in all" in line, line
        port = int(line.split(" -> ")[0].rsplit(":", 1)[1])
        with requests.Session() as session:
            session.get(f"http://127.0.0.1:{port}/versions", timeout=30)
            start = time.monotonic()
            assert session.get(f"http://127.0.0.1:{port}/versions", timeout=30).ok
            assert time.monotonic() - start >= 2 * DELAY
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


@pytest.mark.mount
@pytest.mark.slow
def test_a_mount_read_through_the_link(glance_v2: GlanceServer, image: tuple[str, bytes],
                                       tmp_path: Path) -> None:
    image_id, data = image
    # A cap on all connections: the bound holds however many GETs the mount has in flight.
    with LinkProxy("127.0.0.1", glance_v2.port, delay=DELAY, rate=RATE,
                   total_rate=RATE) as link, mounted(link.endpoint, tmp_path / "mnt") as m:
        path = m.path / ".by-id" / image_id
        start = time.monotonic()
        with open(path, "rb") as f:
            got = f.read()
        seconds = time.monotonic() - start
    assert got == data
    assert seconds >= (len(data) - BURST) / RATE + 2 * DELAY

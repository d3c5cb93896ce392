"""glancefs mounted through the real kernel against an Images v1 server,
which ignores Range: reads must still be right, and must not turn into one
whole download per block."""
from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from glancefs.api import Client
from glancefs.api.service import ImageService
from glancefs.fs import names
from glancefs.testing.v1server import V1Server
from tests.mount_support import Image, make_image, mounted, sha256_file

pytestmark = [pytest.mark.mount, pytest.mark.slow]

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V1Server]:
    # A server of its own: a page limit of 7 makes the listing take several pages.
    srv = V1Server(store_dir=tmp_path_factory.mktemp("v1store"), page_size=7, api_limit_max=7)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def images(server: V1Server) -> dict[str, Image]:
    client = Client("1", endpoint=server.endpoint)
    rng = random.Random(1)
    made = {f"p{n}": make_image(client, f"v1-{n:02d}", rng.randbytes(64 + n)) for n in range(20)}
    made["dup-a"] = make_image(client, "v1-dup", b"first")
    made["dup-b"] = make_image(client, "v1-dup", b"second")
    made["slash"] = make_image(client, "v1/slash", b"slashed")
    made["big"] = make_image(client, "v1-big.raw", rng.randbytes(12 * MiB + 5),
                             properties={"os_distro": "cirros"})
    return made


@pytest.fixture(scope="module")
def mnt(server: V1Server, images: dict[str, Image],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with mounted(server.endpoint, tmp_path_factory.mktemp("v1") / "mnt",
                 api_version="1") as mount:
        yield mount.path


def test_listing_matches_api(mnt: Path, server: V1Server, images: dict[str, Image]) -> None:
    records = ImageService(Client("1", endpoint=server.endpoint)).list_images()
    assert len(records) > 7
    expected = names.assign_names([names.NameEntry(r.id, r.name, r.created_at)
                                   for r in records])
    assert set(os.listdir(os.fsencode(mnt))) == set(expected) | {b".by-id"}
    assert (mnt / "v1%2Fslash").read_bytes() == b"slashed"


def test_whole_read_and_xattrs(mnt: Path, images: dict[str, Image]) -> None:
    big = images["big"]
    assert sha256_file(mnt / "v1-big.raw") == big.sha256
    assert os.getxattr(mnt / "v1-big.raw", "user.os_distro") == b"cirros"
    assert os.getxattr(mnt / "v1-big.raw", "user.glance.checksum").decode() == \
        __import__("hashlib").md5(big.data).hexdigest()


def test_random_reads_one_stream_per_file(mnt: Path, server: V1Server,
                                          images: dict[str, Image], tmp_path: Path) -> None:
    big = images["big"]
    # A fresh mount: nothing cached yet.
    with mounted(server.endpoint, tmp_path / "m", api_version="1") as mount:
        before = len(server.request_log)
        rng = random.Random(2)
        fd = os.open(mount.path / ".by-id" / big.id, os.O_RDONLY)
        try:
            offsets = sorted(rng.randrange(0, len(big.data)) for _ in range(40))
            for off in offsets:   # forward random reads: one stream serves them all
                assert os.pread(fd, 4096, off) == big.data[off:off + 4096]
        finally:
            os.close(fd)
        gets = [e for e in server.request_log[before:]
                if e[0] == "GET" and e[1].startswith(f"/v1/images/{big.id}")]
        assert 1 <= len(gets) <= 2, gets
        assert sum(e[3] for e in gets) <= 2 * len(big.data)


def test_concurrent_readers(mnt: Path, images: dict[str, Image]) -> None:
    paths = [mnt / ".by-id" / images["big"].id] * 4 + \
        [mnt / ".by-id" / images[f"p{n}"].id for n in range(4)]
    procs = [subprocess.Popen(["sha256sum", str(p)], stdout=subprocess.PIPE) for p in paths]
    want = [images["big"].sha256] * 4 + [images[f"p{n}"].sha256 for n in range(4)]
    got = [p.communicate(timeout=120)[0].split()[0].decode() for p in procs]
    assert got == want

"""Uploads tell the size (x-openstack-image-size) whenever it is known, as
python-glanceclient does: seen on the wire, through a proxy, by a real Glance."""
from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from glancefs.api import Client, v2
from glancefs.testing.faultproxy import FaultProxy
from glancefs.testing.glance_server import GlanceServer
from tests.cli_support import cli_env, glancefs_cmd
from tests.mount_support import mounted

MiB = 1024 * 1024
SIZE_HEADER = "x-openstack-image-size"


@pytest.fixture
def proxy(glance_v2: GlanceServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", glance_v2.port) as p:
        yield p


def put_headers(proxy: FaultProxy, image_id: str, target: str = "file") -> dict[str, str]:
    found = proxy.stats.headers_of(f"PUT /v2/images/{image_id}/{target} ")
    assert len(found) == 1, proxy.stats.heads
    return found[0]


def new_image(client: v2.Client, name: str) -> str:
    return client.images.create(name=name, disk_format="raw", container_format="bare")["id"]


@pytest.mark.parametrize("size", [0, 1, 3 * MiB + 5])
def test_a_file_object_sends_its_size(proxy: FaultProxy, tmp_path: Path, size: int) -> None:
    client = Client("2", endpoint=proxy.endpoint)
    path = tmp_path / "data.raw"
    data = os.urandom(size)
    path.write_bytes(data)
    image_id = new_image(client, "size-file")
    with open(path, "rb") as f:
        client.images.upload(image_id, f)
    assert put_headers(proxy, image_id)[SIZE_HEADER] == str(size)
    assert client.images.get(image_id)["size"] == size


def test_the_rest_of_a_file_object_is_its_size(proxy: FaultProxy, tmp_path: Path) -> None:
    client = Client("2", endpoint=proxy.endpoint)
    path = tmp_path / "data.raw"
    path.write_bytes(os.urandom(100_000))
    image_id = new_image(client, "size-rest")
    with open(path, "rb") as f:
        f.seek(40_000)              # what is sent is what is left
        client.images.upload(image_id, f)
    assert put_headers(proxy, image_id)[SIZE_HEADER] == "60000"
    assert client.images.get(image_id)["size"] == 60_000


def test_bytes_and_a_given_size_are_sent_an_iterator_is_not(proxy: FaultProxy) -> None:
    client = Client("2", endpoint=proxy.endpoint)
    sized = new_image(client, "size-bytes")
    client.images.upload(sized, b"x" * 5000)
    told = new_image(client, "size-told")
    client.images.upload(told, iter([b"a" * 3000, b"b" * 2000]), image_size=5000)
    unknown = new_image(client, "size-unknown")
    client.images.upload(unknown, iter([b"a" * 3000, b"b" * 2000]))
    assert put_headers(proxy, sized)[SIZE_HEADER] == "5000"
    assert put_headers(proxy, told)[SIZE_HEADER] == "5000"
    headers = put_headers(proxy, unknown)
    assert SIZE_HEADER not in headers and headers.get("transfer-encoding") == "chunked"
    staged = new_image(client, "size-staged")
    client.images.stage(staged, io.BytesIO(b"s" * 1234))
    assert put_headers(proxy, staged, "stage")[SIZE_HEADER] == "1234"


def test_the_cli_sends_the_size_of_its_file(proxy: FaultProxy, tmp_path: Path) -> None:
    path = tmp_path / "cli.raw"
    path.write_bytes(os.urandom(2 * MiB + 3))
    done = subprocess.run(
        glancefs_cmd("-f", "json", "image-create", "--name", "size-cli", "--disk-format", "raw",
                     "--container-format", "bare", "--file", str(path)),
        env=cli_env(OS_IMAGE_URL=proxy.endpoint, OS_AUTH_TOKEN="t"), capture_output=True,
        text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    puts = [h for h in proxy.stats.heads if h.startswith("PUT /v2/images/")]
    assert len(puts) == 1, proxy.stats.heads
    image_id = puts[0].split()[1].split("/")[3]
    assert put_headers(proxy, image_id)[SIZE_HEADER] == str(2 * MiB + 3)


@pytest.mark.mount
@pytest.mark.slow
def test_the_mount_sends_the_size_when_the_file_is_complete(
        proxy: FaultProxy, glance_v2: GlanceServer, tmp_path: Path) -> None:
    small = os.urandom(20_000)                     # under the 64 KiB the create waits for
    big = os.urandom(4 * MiB + 11)
    (tmp_path / "small.raw").write_bytes(small)
    (tmp_path / "big.raw").write_bytes(big)
    client = Client("2", endpoint=glance_v2.endpoint)
    # A small write_buffer: cp cannot run far ahead of the upload, so the big file is still
    # being written when its upload starts.
    with mounted(proxy.endpoint, tmp_path / "mnt", options="write_buffer=256K") as mount:
        mnt = mount.path
        subprocess.run(["cp", str(tmp_path / "small.raw"), str(mnt / "size-small.raw")],
                       check=True)
        subprocess.run(["cp", str(tmp_path / "big.raw"), str(mnt / "size-big.raw")],
                       check=True)
        # A writer that goes back: the upload starts again from the spool at close.
        fd = os.open(mnt / "size-back.raw", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, big)
            os.pwrite(fd, b"\0" * 512, 0)
        finally:
            os.close(fd)

    def sent(name: str) -> list[dict[str, str]]:
        (image,) = client.images.list(filters={"name": name, "status": "active"})
        return proxy.stats.headers_of(f"PUT /v2/images/{image['id']}/file ")

    assert [h.get(SIZE_HEADER) for h in sent("size-small.raw")] == [str(len(small))]
    # Streamed while cp was still writing: the size was not known when it started.
    assert [h.get(SIZE_HEADER) for h in sent("size-big.raw")] == [None]
    # From the spool: the whole file is there, so its size is.
    assert [h.get(SIZE_HEADER) for h in sent("size-back.raw")] == [str(len(big))]

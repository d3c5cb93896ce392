"""Several clouds in one mount (issue 14), through the kernel mount against
two real Glance servers named in a clouds.yaml (``auth_type: none`` with an
endpoint, as openstacksdk reads such entries): a folder per cloud and per
region, a cloud that cannot be reached beside those that work, ``cp -a``
from one cloud to the other checked through the target's API, and a copy
whose source server dies leaving nothing in the target."""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from glancefs.api import Client, v2
from glancefs.testing.glance_server import GlanceServer, free_port
from glancefs.testing.linkproxy import LinkProxy
from tests.cli_support import glanceclient_for
from tests.conftest import fresh_glance
from tests.mount_support import make_image, mount_env, mounted

pytestmark = [pytest.mark.mount, pytest.mark.slow]

MiB = 1024 * 1024
DEADLINE = 60.0
ERROR_XATTR = "user.glancefs.error"


@dataclass
class Two:
    a: GlanceServer
    b: GlanceServer
    ca: v2.Client
    cb: v2.Client


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory, glance_v2: GlanceServer) -> Iterator[Two]:
    with fresh_glance(tmp_path_factory, "glance-cloud-b") as b:
        yield Two(glance_v2, b, Client("2", endpoint=glance_v2.endpoint),
                  Client("2", endpoint=b.endpoint))


def clouds_yaml(where: Path, clouds: dict[str, dict[str, object]]) -> dict[str, str]:
    """The environment of a mount that reads this clouds.yaml (and no OS_*)."""
    config = where / "clouds.yaml"
    config.write_text(yaml.safe_dump({"clouds": clouds}))
    env = mount_env("")
    env.pop("OS_IMAGE_URL", None)
    env["OS_CLIENT_CONFIG_FILE"] = str(config)
    return env


def no_auth(endpoint: str, **more: object) -> dict[str, object]:
    return {"auth_type": "none", "image_endpoint_override": endpoint, **more}


def images_named(client: v2.Client, name: str) -> list[dict]:
    """The images named ``name``, as python-glanceclient lists them at the
    endpoint of ``client``: the target is checked by another client."""
    peer = glanceclient_for(client.http.endpoint)
    return [dict(i) for i in peer.images.list(filters={"name": name})]


def wait_for(condition: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline:.0f}s")
        time.sleep(0.1)


def test_each_cloud_and_region_is_a_folder_and_a_cloud_that_is_down_says_why(
        two: Two, tmp_path: Path) -> None:
    in_a = make_image(two.ca, "only-in-a.raw", b"a" * 1000)
    in_b = make_image(two.cb, "only-in-b.raw", b"b" * 2000)
    env = clouds_yaml(tmp_path, {
        "a": no_auth(two.a.endpoint),
        # openstacksdk's other spelling: the endpoint in the auth section.
        "b": {"auth_type": "none", "auth": {"endpoint": two.b.endpoint}},
        "down": no_auth(f"http://127.0.0.1:{free_port()}"),
        "multi": no_auth(two.b.endpoint, regions=["r1", {"name": "r2"}]),
    })
    try:
        with mounted("", tmp_path / "mnt", options="clouds=a,b,down,multi",
                     env=env) as mnt:
            root = mnt.path
            assert sorted(os.listdir(root)) == ["a", "b", "down", "multi"]
            assert "only-in-a.raw" in os.listdir(root / "a")
            assert "only-in-a.raw" not in os.listdir(root / "b")
            assert (root / "b" / "only-in-b.raw").read_bytes() == b"b" * 2000
            assert sorted(os.listdir(root / "multi")) == ["r1", "r2"]
            for region in ("r1", "r2"):
                assert (root / "multi" / region / "only-in-b.raw").stat().st_size == 2000
            # The cloud that cannot be reached: an empty folder that says why.
            assert os.listdir(root / "down") == []
            why = os.getxattr(root / "down", ERROR_XATTR).decode()
            assert "cannot reach" in why and "Connection refused" in why, why
            assert "cloud down:" in mnt.log_text()
            # Creating beside the clouds is refused: images live in a cloud's folder.
            with pytest.raises(PermissionError):
                (root / "stray.raw").write_bytes(b"x")
    finally:
        two.ca.images.delete(in_a.id)
        two.cb.images.delete(in_b.id)


def test_mv_between_clouds_copies_and_deletes(two: Two, tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 7)
    source = make_image(two.ca, "moving.raw", data)
    env = clouds_yaml(tmp_path, {"a": no_auth(two.a.endpoint), "b": no_auth(two.b.endpoint)})
    with mounted("", tmp_path / "mnt", options="clouds=a,b", env=env) as mnt:
        done = subprocess.run(["mv", str(mnt.path / "a" / "moving.raw"), str(mnt.path / "b")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert (mnt.path / "b" / "moving.raw").read_bytes() == data
    moved = images_named(two.cb, "moving.raw")
    assert len(moved) == 1 and moved[0]["status"] == "active"
    assert moved[0]["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert images_named(two.ca, "moving.raw") == []
    assert source.id not in {i["id"] for i in two.ca.images.list()}
    two.cb.images.delete(moved[0]["id"])


@pytest.mark.slow
def test_cp_a_between_clouds_copies_data_and_properties(two: Two, tmp_path: Path) -> None:
    """256 MiB with formats, min_disk, min_ram and user properties; what Glance
    sets (id, hashes, size, status, dates, owner, stores) is skipped, so cp -a
    succeeds; the target's hashes are the source's."""
    size = 256 * MiB
    src_file = tmp_path / "source.raw"
    digest = hashlib.sha512()
    with open(src_file, "wb") as out:
        for _ in range(size // (16 * MiB)):
            chunk = os.urandom(16 * MiB)
            digest.update(chunk)
            out.write(chunk)
    image = two.ca.images.create(name="big-copy.raw", disk_format="raw",
                                 container_format="bare", min_disk=2, min_ram=512,
                                 os_distro="debian", hw_disk_bus="virtio")
    with open(src_file, "rb") as data:
        two.ca.images.upload(image["id"], data, image_size=size)
    src_file.unlink()
    source = two.ca.images.get(image["id"])
    assert source["os_hash_value"] == digest.hexdigest()
    env = clouds_yaml(tmp_path, {"a": no_auth(two.a.endpoint), "b": no_auth(two.b.endpoint)})
    try:
        with mounted("", tmp_path / "mnt", options="clouds=a,b", env=env) as mnt:
            done = subprocess.run(["cp", "-a", str(mnt.path / "a" / "big-copy.raw"),
                                   str(mnt.path / "b")], capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0 and done.stderr == "", done.stderr
        copies = images_named(two.cb, "big-copy.raw")
        assert len(copies) == 1
        copy = copies[0]
        assert copy["status"] == "active" and copy["size"] == size
        assert copy["os_hash_value"] == source["os_hash_value"]
        assert copy["checksum"] == source["checksum"]
        assert copy["id"] != source["id"]
        for key in ("disk_format", "container_format", "min_disk", "min_ram", "os_distro",
                    "hw_disk_bus"):
            assert copy[key] == source[key], key
        two.cb.images.delete(copy["id"])
    finally:
        two.ca.images.delete(image["id"])


@pytest.mark.slow
def test_a_copy_whose_source_dies_leaves_nothing_in_the_target(
        two: Two, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """The source Glance is killed mid-copy (its data comes through a slow
    link, so the copy is surely under way): cp fails, and the target has no
    image of that name, although cp leaves its partial file behind."""
    size = 64 * MiB
    with fresh_glance(tmp_path_factory, "glance-dies") as dying, \
            LinkProxy("127.0.0.1", dying.port, delay=0.001, total_rate=8 * MiB) as link:
        client = Client("2", endpoint=dying.endpoint)
        make_image(client, "doomed.raw", os.urandom(size))
        env = clouds_yaml(tmp_path, {"src": no_auth(link.endpoint),
                                     "b": no_auth(two.b.endpoint)})
        with mounted("", tmp_path / "mnt", options="clouds=src,b,timeout=5",
                     env=env) as mnt:
            cp = subprocess.Popen(["cp", str(mnt.path / "src" / "doomed.raw"),
                                   str(mnt.path / "b")], stderr=subprocess.PIPE, text=True)
            wait_for(lambda: images_named(two.cb, "doomed.raw"),
                     "the target image is being written")
            dying.kill()
            _, err = cp.communicate(timeout=120)
            assert cp.returncode != 0, err
            assert "Input/output error" in err, err
            wait_for(lambda: images_named(two.cb, "doomed.raw") == [],
                     "the half-made target image is deleted")
            assert "not made into an image" in mnt.log_text()
    assert images_named(two.cb, "doomed.raw") == []


def test_a_read_only_folder_of_clouds_refuses_a_rename_across_clouds_with_exdev(
        two: Two, tmp_path: Path) -> None:
    """rename(2) between clouds is EXDEV (mv copies instead): never a silent success."""
    image = make_image(two.ca, "stay.raw", b"s" * 100)
    env = clouds_yaml(tmp_path, {"a": no_auth(two.a.endpoint), "b": no_auth(two.b.endpoint)})
    try:
        with mounted("", tmp_path / "mnt", options="clouds=a,b", env=env) as mnt:
            with pytest.raises(OSError) as caught:
                os.rename(mnt.path / "a" / "stay.raw", mnt.path / "b" / "stay.raw")
            assert caught.value.errno == errno.EXDEV
            assert [i["id"] for i in images_named(two.ca, "stay.raw")] == [image.id]
    finally:
        two.ca.images.delete(image.id)

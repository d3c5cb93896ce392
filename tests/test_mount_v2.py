"""glancefs mounted through the real kernel, against a real Glance (v2)."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from glancefs.api import v2
from glancefs.api.service import ImageService
from glancefs.fs import names, xattrs
from glancefs.testing.faultproxy import FaultProxy
from glancefs.testing.glance_server import GlanceServer
from tests.mount_support import (
    Image,
    is_mounted,
    make_image,
    mount_env,
    mounted,
    require_fuse,
    sha256_file,
)

pytestmark = [pytest.mark.mount, pytest.mark.slow]

MiB = 1024 * 1024
ODD_NAMES = ["a/b", "..", ".", "", None, "%", "50%", "%" * 100, "ünïcödé ñame", "with space",
             "tab\tname", "é" * 140]


@pytest.fixture(scope="module")
def images(client: v2.Client) -> dict[str, Image]:
    rng = random.Random(3)
    made: dict[str, Image] = {}
    for n in range(30):   # more than Glance's default page of 25
        made[f"page-{n:02d}"] = make_image(client, f"mnt-page-{n:02d}", rng.randbytes(100 + n))
    for n in range(3):
        made[f"dup-{n}"] = make_image(client, "mnt-dup", rng.randbytes(1000 + n))
        time.sleep(1.1)   # distinct created_at: the oldest keeps the bare name
    for n, name in enumerate(ODD_NAMES):
        made[f"odd-{n}"] = make_image(client, name, rng.randbytes(50 + n))
    made["medium"] = make_image(client, "mnt-medium.raw", rng.randbytes(20 * MiB + 12345),
                                properties={"os_distro": "ubuntu", "hw_disk_bus": "virtio",
                                            "note": "comma, separated; ünïcode"})
    client.image_tags.update(made["medium"].id, "tag,with,comma")
    client.image_tags.update(made["medium"].id, "plain")
    for n in range(8):
        made[f"multi-{n}"] = make_image(client, f"mnt-multi-{n}", rng.randbytes(3 * MiB + n))
    return made


@pytest.fixture(scope="module")
def mnt(glance_v2: GlanceServer, images: dict[str, Image],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with mounted(glance_v2.endpoint, tmp_path_factory.mktemp("v2") / "mnt",
                 options="ttl=2") as mount:
        yield mount.path
        log = mount.log_text()
    assert "Traceback" not in log, log


def by_id(mnt: Path, image: Image) -> Path:
    return mnt / ".by-id" / image.id


def test_listing_matches_api(mnt: Path, client: v2.Client, images: dict[str, Image]) -> None:
    records = ImageService(client).list_images()
    expected = names.assign_names([names.NameEntry(r.id, r.name, r.created_at)
                                   for r in records])
    shown = set(os.listdir(os.fsencode(mnt)))
    assert shown == set(expected) | {b".by-id", b".shared", b".community", b".hidden",
                                     b".by-tag", b".by-owner"}
    assert set(os.listdir(mnt / ".by-id")) == {r.id for r in records}
    # Every odd name is shown under its escape and leads to its image.
    for n, name in enumerate(ODD_NAMES):
        image = images[f"odd-{n}"]
        entry = next(k for k, v in expected.items() if v == image.id)
        assert names.is_valid_entry(entry)
        path = os.path.join(os.fsencode(mnt), entry)
        assert os.getxattr(path, "user.glance.id").decode() == image.id
        with open(path, "rb") as f:
            assert f.read() == image.data
        if entry == names.escape(name):   # not suffixed as a duplicate ("" and None)
            assert names.unescape(entry) == (name or None)
        else:
            assert entry.startswith(names.escape(name)[:200])
    # Duplicates: the oldest keeps the bare name, the others carry an id suffix.
    dups = [images[f"dup-{n}"] for n in range(3)]
    assert os.getxattr(mnt / "mnt-dup", "user.glance.id").decode() == dups[0].id
    for dup in dups[1:]:
        assert (mnt / f"mnt-dup~{dup.id[:8]}").read_bytes() == dup.data


def test_attributes(mnt: Path, client: v2.Client, images: dict[str, Image]) -> None:
    image = images["medium"]
    record = ImageService(client).get(image.id)
    st = os.stat(mnt / "mnt-medium.raw")
    assert st.st_size == len(image.data)
    assert st.st_mode & 0o777 == 0o444
    assert abs(st.st_mtime - record.updated) < 1
    assert abs(st.st_ctime - record.created) < 1
    assert os.stat(by_id(mnt, image)).st_ino == st.st_ino


def test_whole_and_random_reads(mnt: Path, images: dict[str, Image]) -> None:
    image = images["medium"]
    assert sha256_file(mnt / "mnt-medium.raw") == image.sha256
    rng = random.Random(7)
    fd = os.open(by_id(mnt, image), os.O_RDONLY)
    try:
        for _ in range(200):
            off = rng.randrange(0, len(image.data) + 10)
            size = rng.choice([1, 512, 4096, 65536, 1 << 20, 3 * (1 << 20) + 7])
            assert os.pread(fd, size, off) == image.data[off:off + size], (off, size)
    finally:
        os.close(fd)


def test_xattrs_match_api(mnt: Path, client: v2.Client, images: dict[str, Image]) -> None:
    image = images["medium"]
    record = ImageService(client).get(image.id)
    out = subprocess.run(["getfattr", "-d", "-m", "-", "--absolute-names", "-e", "hex",
                          str(mnt / "mnt-medium.raw")], capture_output=True, check=True).stdout
    got = {}
    for line in out.decode().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            got[key] = bytes.fromhex(value.removeprefix("0x")).decode()
    core = {f"user.glance.{k}": xattrs.text_value(v) for k, v in record.core_fields().items()
            if v is not None}
    props = {f"user.{k}": v for k, v in record.properties.items()}
    assert got == {**core, **props}
    assert got["user.os_distro"] == "ubuntu"
    tags = json.loads(os.getxattr(mnt / "mnt-medium.raw", "user.glance.tags"))
    assert sorted(tags) == ["plain", "tag,with,comma"]
    assert os.getxattr(mnt / "mnt-medium.raw", "user.glance.os_hash_value").decode() == \
        hashlib.sha512(image.data).hexdigest()
    with pytest.raises(OSError) as missing:
        os.getxattr(mnt / "mnt-medium.raw", "user.no_such_property")
    assert missing.value.errno == errno.ENODATA


def test_qemu_img_info_and_file(mnt: Path, client: v2.Client, tmp_path: Path) -> None:
    source = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(source), "1G"], check=True)
    image = make_image(client, "mnt-disk.qcow2", source.read_bytes(), disk_format="qcow2")
    path = by_id(mnt, image)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)],
                                     capture_output=True, check=True, timeout=60).stdout)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 1 << 30
    kind = subprocess.run(["file", "-b", str(path)], capture_output=True, check=True).stdout
    assert b"QEMU QCOW" in kind


def test_small_read_transfers_little(glance_v2: GlanceServer, client: v2.Client,
                                     tmp_path: Path) -> None:
    data = random.Random(5).randbytes(96 * MiB)
    image = make_image(client, "mnt-large.raw", data)
    with FaultProxy("127.0.0.1", glance_v2.port) as proxy, \
            mounted(proxy.endpoint, tmp_path / "mnt", env=mount_env(proxy.endpoint)) as mount:
        path = by_id(mount.path, image)
        proxy.reset_stats()
        fd = os.open(path, os.O_RDONLY)
        try:
            assert os.pread(fd, MiB, 48 * MiB) == data[48 * MiB:49 * MiB]
        finally:
            os.close(fd)
        # 1 MiB asked: a block or two plus the first prefetch window, never the image.
        time.sleep(0.5)   # let the prefetch of the next block land
        assert proxy.stats.bytes_from_server < 5 * MiB, proxy.stats.bytes_from_server
        proxy.reset_stats()
        qcow_like = os.open(path, os.O_RDONLY)
        try:
            for off in (0, 30 * MiB, 90 * MiB):
                assert os.pread(qcow_like, 4096, off) == data[off:off + 4096]
        finally:
            os.close(qcow_like)
        # One aligned 1 MiB block per isolated small read.
        assert proxy.stats.bytes_from_server < 3.5 * MiB, proxy.stats.bytes_from_server


def _hash_in_processes(paths: list[Path]) -> list[str]:
    procs = [subprocess.Popen(["sha256sum", str(p)], stdout=subprocess.PIPE) for p in paths]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        out.append(stdout.split()[0].decode())
    return out


def test_eight_readers_one_image(glance_v2: GlanceServer, client: v2.Client,
                                 tmp_path: Path) -> None:
    image = make_image(client, "mnt-shared.raw", random.Random(11).randbytes(24 * MiB + 1))
    # A fresh mount so the readers race on a cold cache.
    with mounted(glance_v2.endpoint, tmp_path / "mnt") as mount:
        assert _hash_in_processes([by_id(mount.path, image)] * 8) == [image.sha256] * 8


def test_eight_readers_different_images(mnt: Path, images: dict[str, Image]) -> None:
    multi = [images[f"multi-{n}"] for n in range(8)]
    assert _hash_in_processes([by_id(mnt, i) for i in multi]) == [i.sha256 for i in multi]


def test_queued_image_is_listed_but_not_readable(mnt: Path, client: v2.Client) -> None:
    queued = client.images.create(name="mnt-queued", disk_format="raw",
                                  container_format="bare")
    path = mnt / ".by-id" / queued["id"]
    assert os.stat(path).st_size == 0
    with pytest.raises(OSError) as refused:
        open(path, "rb").close()
    assert refused.value.errno == errno.EAGAIN
    # Listed once the listing's ttl has run out and a refresh has seen it.
    deadline = time.monotonic() + 30
    while "mnt-queued" not in os.listdir(mnt):
        assert time.monotonic() < deadline, "the queued image is not listed"
        time.sleep(0.2)


def test_deactivated_image_is_eacces(mnt: Path, client: v2.Client) -> None:
    image = make_image(client, "mnt-deactivated", b"secret data")
    client.http.request("POST", f"/v2/images/{image.id}/actions/deactivate").close()
    with pytest.raises(OSError) as refused:
        open(by_id(mnt, image), "rb").close()
    assert refused.value.errno == errno.EACCES


def test_tampered_store_fails_the_last_read(mnt: Path, client: v2.Client,
                                            glance_v2: GlanceServer) -> None:
    data = random.Random(13).randbytes(5 * MiB + 3)
    image = make_image(client, "mnt-tampered", data)
    stored = Path(glance_v2.images_dir) / image.id
    with open(stored, "r+b") as f:
        f.seek(2 * MiB)
        f.write(b"\xff" * 16)
    path = by_id(mnt, image)
    with open(path, "rb") as f:
        assert len(f.read(MiB)) == MiB            # reads before the end are served
    with pytest.raises(OSError) as failed:
        with open(path, "rb") as f:
            while f.read(128 * 1024):
                pass
    assert failed.value.errno == errno.EIO
    # Untampered images read fine after that.
    other = make_image(client, "mnt-fine", data)
    assert sha256_file(by_id(mnt, other)) == hashlib.sha256(data).hexdigest()


def test_refusals(mnt: Path, images: dict[str, Image]) -> None:
    # Writing is tested in test_mount_write.py; here what stays refused.
    image = images["medium"]
    with pytest.raises(OSError) as refused:
        open(by_id(mnt, image), "r+b").close()
    assert refused.value.errno in (errno.EPERM, errno.EACCES)
    with pytest.raises(OSError) as mkdir:
        os.mkdir(mnt / "dir")
    assert mkdir.value.errno in (errno.EPERM, errno.EROFS)
    with pytest.raises(OSError) as read_only_field:
        os.setxattr(by_id(mnt, image), "user.glance.checksum", b"0")
    assert read_only_field.value.errno == errno.EPERM


def test_statfs(mnt: Path) -> None:
    st = os.statvfs(mnt)
    assert st.f_namemax == 255
    assert st.f_blocks >= st.f_bfree > 0


def test_sigterm_while_reading_unmounts(glance_v2: GlanceServer, client: v2.Client,
                                        tmp_path: Path) -> None:
    # Larger than what the reader gets through before the signal (with the
    # read-ahead): what the page cache already holds is served even unmounted.
    image = make_image(client, "mnt-term.raw", random.Random(17).randbytes(32 * MiB))
    with mounted(glance_v2.endpoint, tmp_path / "mnt") as mount:
        reader = subprocess.Popen(
            [sys.executable, "-c",
             "import sys,time\nf=open(sys.argv[1],'rb')\n"
             "while True:\n  b=f.read(65536)\n  time.sleep(0.01)\n  f.seek(0) if not b else 0\n",
             str(by_id(mount.path, image))], stderr=subprocess.PIPE)
        time.sleep(1.0)
        assert reader.poll() is None
        mount.proc.send_signal(signal.SIGTERM)
        assert mount.proc.wait(timeout=15) == 0
        assert not is_mounted(mount.path)
        reader.wait(timeout=15)   # it sees an error (ENOTCONN) instead of hanging
        assert reader.returncode != 0


def test_umount_ends_the_process(glance_v2: GlanceServer, tmp_path: Path) -> None:
    with mounted(glance_v2.endpoint, tmp_path / "mnt") as mount:
        os.listdir(mount.path)
        subprocess.run(["fusermount3", "-u", str(mount.path)], check=True)
        assert mount.proc.wait(timeout=15) == 0


# -- the command line: daemon, failures --------------------------------------------------


def _helper(args: list[str], env: dict[str, str], timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "glancefs.cli.mount_helper", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_daemon_returns_when_ready(glance_v2: GlanceServer, tmp_path: Path) -> None:
    require_fuse()
    target = tmp_path / "mnt"
    target.mkdir()
    done = _helper(["glance", str(target), "-o", f"ttl=5,log={tmp_path / 'log'}"],
                   mount_env(glance_v2.endpoint))
    try:
        assert done.returncode == 0, done.stderr
        assert is_mounted(target)
        assert ".by-id" in os.listdir(target)
    finally:
        subprocess.run(["fusermount3", "-u", str(target)])
    deadline = time.monotonic() + 10
    while "unmounted" not in (tmp_path / "log").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "unmounted" in (tmp_path / "log").read_text()


def test_unreachable_server_fails_before_mounting(tmp_path: Path) -> None:
    require_fuse()
    target = tmp_path / "mnt"
    target.mkdir()
    started = time.monotonic()
    done = _helper(["glance", str(target)], mount_env("http://127.0.0.1:9"))
    assert done.returncode == 1
    assert time.monotonic() - started < 20
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach" in lines[0], done.stderr
    assert not is_mounted(target)


def test_bad_mount_point_and_secret_options(glance_v2: GlanceServer, tmp_path: Path) -> None:
    done = _helper(["glance", str(tmp_path / "missing")], mount_env(glance_v2.endpoint))
    assert done.returncode == 1 and "does not exist" in done.stderr
    (tmp_path / "m").mkdir()
    done = _helper(["glance", str(tmp_path / "m"), "-o", "os_password=hunter2"],
                   mount_env(glance_v2.endpoint))
    assert done.returncode != 0 and "secret" in done.stderr
    assert "hunter2" not in done.stderr


def test_disk_cache_serves_a_second_mount(glance_v2: GlanceServer, client: v2.Client,
                                          tmp_path: Path) -> None:
    data = random.Random(19).randbytes(6 * MiB + 100)
    image = make_image(client, "mnt-cached.raw", data)
    cache = tmp_path / "cache"
    with FaultProxy("127.0.0.1", glance_v2.port) as proxy:
        for round_ in range(2):
            with mounted(proxy.endpoint, tmp_path / f"mnt{round_}", env=mount_env(
                    proxy.endpoint), options=f"cache_dir={cache},cache_size=64M") as mount:
                proxy.reset_stats()
                assert sha256_file(by_id(mount.path, image)) == hashlib.sha256(data).hexdigest()
                if round_ == 0:
                    assert proxy.stats.bytes_from_server >= len(data)
                else:
                    # Only the image's metadata (GET of the one image) went over the wire.
                    assert proxy.stats.bytes_from_server < 64 * 1024, \
                        proxy.stats.bytes_from_server
    assert sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) >= len(data)


def test_owner_and_mode_options(glance_v2: GlanceServer, images: dict[str, Image],
                                tmp_path: Path) -> None:
    with mounted(glance_v2.endpoint, tmp_path / "mnt",
                 options="uid=1234,gid=4321,umask=027,ro") as mount:
        st = os.stat(by_id(mount.path, images["medium"]))
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1234, 4321, 0o440)
        root = os.stat(mount.path)
        assert root.st_mode & 0o777 == 0o550
        with pytest.raises(OSError) as refused:
            (mount.path / "x").write_bytes(b"")
        assert refused.value.errno in (errno.EROFS, errno.EACCES)


def test_the_kernel_reads_ahead_as_the_readahead_option_says(mnt: Path) -> None:
    """2M by default: 1 MiB reads instead of the kernel's 128 KiB offer (set after
    FUSE INIT, which would otherwise lower it again)."""
    from glancefs.fs.session import mount_device
    device = mount_device(str(mnt))
    assert device is not None
    knob = Path(f"/sys/class/bdi/{device}/read_ahead_kb")
    deadline = time.monotonic() + 10
    while knob.read_text().strip() != "2048":
        assert time.monotonic() < deadline, knob.read_text()
        time.sleep(0.05)

"""Writing through a real kernel mount: cp in, rm, mv, setfattr, nothing lost.

Every result is checked through python-glanceclient, a second client that
shares no code with glancefs: the bytes and hashes the server holds, the
names, the properties, and that nothing half-made is left behind.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import shutil
import signal
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from glancefs.testing.faultproxy import Fault, FaultProxy
from glancefs.testing.glance_server import GlanceServer, free_port
from tests.conftest import fresh_glance
from tests.mount_support import held_fifo, mounted, status_kib
from tests.waiting import wait_until

pytestmark = [pytest.mark.mount, pytest.mark.slow]

MiB = 1024 * 1024


def glanceclient_for(version: str, endpoint: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import glanceclient
        return glanceclient.Client(version, endpoint=endpoint)


def named(gc: Any, name: str) -> list[Any]:
    return [i for i in gc.images.list() if getattr(i, "name", None) == name]


def wait_status(gc: Any, name: str, status: str, timeout: float,
                why: Callable[[], str] = lambda: "") -> Any:
    """The image called ``name`` once it has ``status`` (saving: its upload is streaming)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = named(gc, name)
        if found and found[0].status == status:
            return found[0]
        time.sleep(0.05)
    pytest.fail(f"no image {name!r} became {status}\n{why()}")


def wait_listed(mnt: Path, name: str, timeout: float = 30) -> None:
    """Until the mount's listing shows ``name`` (a refresh after the ttl)."""
    deadline = time.monotonic() + timeout
    while name not in os.listdir(mnt):
        assert time.monotonic() < deadline, f"{name} is not listed after {timeout} s"
        time.sleep(0.2)


def wait_gone(gc: Any, name: str, timeout: float) -> None:
    """Until no image is called ``name`` (the caller asserts what is left)."""
    deadline = time.monotonic() + timeout
    while named(gc, name) and time.monotonic() < deadline:
        time.sleep(0.5)


def the_image(gc: Any, name: str) -> Any:
    found = named(gc, name)
    assert len(found) == 1, [(i.id, i.status) for i in found]
    return gc.images.get(found[0].id)


def check_server_has(gc: Any, version: str, name: str, data: bytes) -> Any:
    image = the_image(gc, name)
    assert image.status == "active"
    assert image.size == len(data)
    assert image.checksum == hashlib.md5(data).hexdigest()
    if version == "2":
        assert image.os_hash_value == hashlib.sha512(data).hexdigest()
    got = hashlib.sha256()
    for chunk in gc.images.data(image.id):
        got.update(chunk)
    assert got.hexdigest() == hashlib.sha256(data).hexdigest()
    return image


def delete_all(gc: Any, name: str) -> None:
    for image in named(gc, name):
        if getattr(image, "protected", False):
            gc.images.update(image.id, protected=False)
        gc.images.delete(image.id)


def write_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def run(*cmd: str | Path, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=check,
                          timeout=600, **kwargs)


def sparse_file(path: Path) -> bytes:
    """64 MiB with 1 MiB of data at 10 MiB and at 40 MiB, holes elsewhere."""
    rng = random.Random(7)
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
        for at in (10 * MiB, 40 * MiB):
            f.seek(at)
            f.write(rng.randbytes(MiB))
    return path.read_bytes()


class Setup:
    def __init__(self, version: str, endpoint: str, mnt: Path, log: Any, local: Path) -> None:
        self.version = version
        self.endpoint = endpoint
        self.mnt = mnt
        self.log = log
        self.local = local
        self.gc = glanceclient_for(version, endpoint)


@pytest.fixture(scope="module", params=["2", "1"], ids=["v2", "v1"])
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Setup]:
    version = request.param
    server = request.getfixturevalue("glance_v2" if version == "2" else "glance_v1")
    base = tmp_path_factory.mktemp(f"write-v{version}")
    spool = base / "spool"
    spool.mkdir()
    local = base / "local"
    local.mkdir()
    with mounted(server.endpoint, base / "mnt", api_version=version,
                 options=f"ttl=1,spool_dir={spool}") as mount:
        yield Setup(version, server.endpoint, mount.path, mount.log_text, local)
        log = mount.log_text()
    assert "Traceback" not in log, log
    assert list(spool.iterdir()) == []      # spool files are unlinked at once


# -- copying in ----------------------------------------------------------------------------


def test_cp_random_data_is_byte_exact(setup: Setup) -> None:
    data = os.urandom(9 * MiB + 4321)
    src = write_file(setup.local / "random.bin", data)
    run("cp", src, setup.mnt / "w-random.raw")
    # Visible through the mount at once, with the right size and content.
    assert (setup.mnt / "w-random.raw").stat().st_size == len(data)
    assert hashlib.sha256((setup.mnt / "w-random.raw").read_bytes()).digest() == \
        hashlib.sha256(data).digest()
    image = check_server_has(setup.gc, setup.version, "w-random.raw", data)
    assert (image.disk_format, image.container_format) == ("raw", "bare")
    assert os.getxattr(setup.mnt / "w-random.raw", "user.glance.id").decode() == image.id
    delete_all(setup.gc, "w-random.raw")


@pytest.mark.parametrize("sparse", ["always", "auto", "never"])
def test_cp_of_a_sparse_file(setup: Setup, sparse: str) -> None:
    src = setup.local / f"sparse-{sparse}.raw"
    data = sparse_file(src)
    name = f"w-sparse-{sparse}.raw"
    run("cp", f"--sparse={sparse}", src, setup.mnt / name)
    check_server_has(setup.gc, setup.version, name, data)
    delete_all(setup.gc, name)


def test_truncate_then_dd_notrunc(setup: Setup) -> None:
    data = os.urandom(3 * MiB + 17)
    src = write_file(setup.local / "dd.bin", data)
    target = setup.mnt / "w-dd.raw"
    run("truncate", "-s", str(8 * MiB), target)
    assert target.stat().st_size == 8 * MiB and named(setup.gc, "w-dd.raw") == []
    run("dd", f"if={src}", f"of={target}", "bs=64K", "conv=notrunc", "status=none")
    check_server_has(setup.gc, setup.version, "w-dd.raw", data + bytes(8 * MiB - len(data)))
    delete_all(setup.gc, "w-dd.raw")


def test_qemu_img_convert_to_qcow2(setup: Setup) -> None:
    src = setup.local / "guest.raw"
    rng = random.Random(11)
    with open(src, "wb") as f:       # some data, some zeros, some holes
        f.truncate(24 * MiB)
        for at in (0, 3 * MiB, 17 * MiB):
            f.seek(at)
            f.write(rng.randbytes(2 * MiB))
    target = setup.mnt / "w-guest.qcow2"
    run("qemu-img", "convert", "-O", "qcow2", src, target)
    image = the_image(setup.gc, "w-guest.qcow2")
    assert image.status == "active"
    if setup.version == "2":
        assert image.disk_format == "qcow2"
    # Through the mount, and through the API on its own.
    run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", src, target)
    fetched = setup.local / "fetched.qcow2"
    with open(fetched, "wb") as f:
        for chunk in setup.gc.images.data(image.id):
            f.write(chunk)
    assert hashlib.md5(fetched.read_bytes()).hexdigest() == image.checksum
    run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", src, fetched)
    wait_until(lambda: len(named(setup.gc, "w-guest.qcow2")) == 1, 30,
               "the earlier versions of w-guest.qcow2 are deleted")
    delete_all(setup.gc, "w-guest.qcow2")


def test_cat_from_a_pipe(setup: Setup) -> None:
    data = os.urandom(5 * MiB + 3)
    done = subprocess.run(["sh", "-c", f"cat > '{setup.mnt}/w-piped.raw'"], input=data,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    check_server_has(setup.gc, setup.version, "w-piped.raw", data)
    delete_all(setup.gc, "w-piped.raw")


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_rsync_writes_a_temp_file_and_renames_it(setup: Setup) -> None:
    data = os.urandom(4 * MiB + 99)
    src = write_file(setup.local / "w-rsync.raw", data)
    run("rsync", "-t", src, f"{setup.mnt}/")
    check_server_has(setup.gc, setup.version, "w-rsync.raw", data)
    assert [i for i in setup.gc.images.list() if (i.name or "").startswith(".w-rsync")] == []
    delete_all(setup.gc, "w-rsync.raw")


def test_cp_preserving_mode_owner_and_times(setup: Setup) -> None:
    data = os.urandom(MiB + 5)
    src = write_file(setup.local / "keep.bin", data)
    os.chmod(src, 0o600)
    os.utime(src, (1_000_000_000, 1_000_000_000))
    run("cp", "-p", src, setup.mnt / "w-kept.raw")
    check_server_has(setup.gc, setup.version, "w-kept.raw", data)
    delete_all(setup.gc, "w-kept.raw")


def test_disk_format_from_signature_and_from_the_user(setup: Setup) -> None:
    qcow2 = setup.local / "tiny.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", qcow2, "16M")
    run("cp", qcow2, setup.mnt / "w-sig.img")           # the signature beats .img
    assert the_image(setup.gc, "w-sig.img").disk_format == "qcow2"
    # A disk_format set before any data wins over the signature and the extension.
    target = setup.mnt / "w-chosen.qcow2"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.setxattr(target, "user.glance.disk_format", b"raw")
        os.setxattr(target, "user.os_distro", b"cirros")
        assert os.getxattr(target, "user.glance.disk_format") == b"raw"
        os.write(fd, os.urandom(100_000))
    finally:
        os.close(fd)
    image = the_image(setup.gc, "w-chosen.qcow2")
    assert image.disk_format == "raw"
    props = image.properties if setup.version == "1" else image
    assert props["os_distro"] == "cirros"
    delete_all(setup.gc, "w-sig.img")
    delete_all(setup.gc, "w-chosen.qcow2")


def test_concurrent_copies(setup: Setup) -> None:
    files = {f"w-conc-{n}.raw": os.urandom(6 * MiB + n) for n in range(4)}
    procs = []
    for name, data in files.items():
        src = write_file(setup.local / name, data)
        procs.append(subprocess.Popen(["cp", str(src), str(setup.mnt / name)],
                                      stderr=subprocess.PIPE))
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""
    for name, data in files.items():
        check_server_has(setup.gc, setup.version, name, data)
        delete_all(setup.gc, name)


@pytest.mark.parametrize("shown,name", [
    ("w-a%2Fb.raw", "w-a/b.raw"), ("w-with space.raw", "w-with space.raw"),
    ("w-ünïcödé.raw", "w-ünïcödé.raw"), ("w-x%2F..%2Fy", "w-x/../y"),
    ("w-50%25.raw", "w-50%.raw"), ("w-100%.raw", "w-100%.raw"),
])
def test_names_that_need_escaping(setup: Setup, shown: str, name: str) -> None:
    # (".", ".." and no name at all are images the read tests already list.)
    data = os.urandom(1000)
    write_file(setup.mnt / shown, data)
    check_server_has(setup.gc, setup.version, name, data)
    assert (setup.mnt / shown).read_bytes() == data
    os.unlink(setup.mnt / shown)
    assert named(setup.gc, name) == []


def test_an_active_image_cannot_be_overwritten(setup: Setup) -> None:
    import io
    image = setup.gc.images.create(name="w-final.raw", disk_format="raw",
                                   container_format="bare")
    if setup.version == "2":
        setup.gc.images.upload(image.id, io.BytesIO(b"first"))
    else:
        setup.gc.images.update(image.id, data=io.BytesIO(b"first"))
    wait_listed(setup.mnt, "w-final.raw")   # the mount's listing (ttl=1) sees it
    with pytest.raises(PermissionError):     # O_TRUNC over an active image
        write_file(setup.mnt / "w-final.raw", b"second")
    with pytest.raises(PermissionError):     # and in place
        with open(setup.mnt / "w-final.raw", "r+b") as f:
            f.write(b"more")
    check_server_has(setup.gc, setup.version, "w-final.raw", b"first")
    assert (setup.mnt / "w-final.raw").read_bytes() == b"first"
    delete_all(setup.gc, "w-final.raw")


# -- failures ---------------------------------------------------------------------------------


def test_mislabelled_qcow2_fails_with_nothing_left(setup: Setup) -> None:
    if setup.version == "1":
        pytest.skip("Images v1 does not inspect the data's format")
    src = write_file(setup.local / "liar.bin", os.urandom(3 * MiB))
    done = run("cp", src, setup.mnt / "w-liar.qcow2", check=False)
    assert done.returncode != 0
    assert "w-liar.qcow2" in done.stderr
    wait_until(lambda: named(setup.gc, "w-liar.qcow2") == [], 30,
               "the half-made w-liar.qcow2 is deleted")
    assert not (setup.mnt / "w-liar.qcow2").exists()
    assert "415" in setup.log()


# -- delete, rename, properties -----------------------------------------------------------


def test_rm_and_protected_images(setup: Setup) -> None:
    write_file(setup.mnt / "w-rm.raw", b"bye")
    image = the_image(setup.gc, "w-rm.raw")
    os.setxattr(setup.mnt / "w-rm.raw", "user.glance.protected", b"true")
    assert setup.gc.images.get(image.id).protected is True
    with pytest.raises(PermissionError):
        os.unlink(setup.mnt / "w-rm.raw")
    assert the_image(setup.gc, "w-rm.raw").id == image.id
    os.setxattr(setup.mnt / "w-rm.raw", "user.glance.protected", b"false")
    os.unlink(setup.mnt / "w-rm.raw")
    assert named(setup.gc, "w-rm.raw") == []
    assert not (setup.mnt / "w-rm.raw").exists()


def test_mv_renames_and_mv_over_replaces(setup: Setup) -> None:
    write_file(setup.mnt / "w-mv-a.raw", b"aaa")
    write_file(setup.mnt / "w-mv-b.raw", b"bbb")
    a = the_image(setup.gc, "w-mv-a.raw")
    b = the_image(setup.gc, "w-mv-b.raw")
    os.rename(setup.mnt / "w-mv-a.raw", setup.mnt / "w-mv-c.raw")
    assert the_image(setup.gc, "w-mv-c.raw").id == a.id and named(setup.gc, "w-mv-a.raw") == []
    assert (setup.mnt / "w-mv-c.raw").read_bytes() == b"aaa"
    assert not (setup.mnt / "w-mv-a.raw").exists()
    os.rename(setup.mnt / "w-mv-c.raw", setup.mnt / "w-mv-b.raw")   # over an existing file
    assert the_image(setup.gc, "w-mv-b.raw").id == a.id
    try:
        status = setup.gc.images.get(b.id).status
    except Exception:   # noqa: BLE001 - v2 answers 404 for a deleted image
        status = "gone"
    assert status in ("gone", "deleted")
    assert (setup.mnt / "w-mv-b.raw").read_bytes() == b"aaa"
    delete_all(setup.gc, "w-mv-b.raw")


def test_setfattr_properties_and_fields(setup: Setup) -> None:
    path = setup.mnt / "w-attrs.raw"
    write_file(path, b"attrs")
    image = the_image(setup.gc, "w-attrs.raw")

    def props() -> Any:
        got = setup.gc.images.get(image.id)
        return got.properties if setup.version == "1" else got

    run("setfattr", "-n", "user.os_distro", "-v", "ubuntu", path)
    assert props()["os_distro"] == "ubuntu"
    assert os.getxattr(path, "user.os_distro") == b"ubuntu"      # visible at once
    run("setfattr", "-n", "user.os_distro", "-v", "debian", path)
    assert props()["os_distro"] == "debian"
    run("setfattr", "-x", "user.os_distro", path)
    assert "os_distro" not in props()
    with pytest.raises(OSError) as missing:
        os.getxattr(path, "user.os_distro")
    assert missing.value.errno == errno.ENODATA
    with pytest.raises(OSError) as gone:
        os.removexattr(path, "user.os_distro")
    assert gone.value.errno == errno.ENODATA
    os.setxattr(path, "user.glance.min_disk", b"3")
    os.setxattr(path, "user.glance.min_ram", b"256")
    got = setup.gc.images.get(image.id)
    assert (got.min_disk, got.min_ram) == (3, 256)
    assert os.getxattr(path, "user.glance.min_disk") == b"3"
    if setup.version == "2":
        os.setxattr(path, "user.glance.tags", b'["x", "y,z"]')
        assert sorted(setup.gc.images.get(image.id).tags) == ["x", "y,z"]
        os.setxattr(path, "user.glance.visibility", b"shared")
        assert setup.gc.images.get(image.id).visibility == "shared"
    else:
        os.setxattr(path, "user.glance.visibility", b"public")
        assert setup.gc.images.get(image.id).is_public is True
    for field in ("id", "status", "checksum", "size", "created_at"):
        with pytest.raises(PermissionError):
            os.setxattr(path, f"user.glance.{field}", b"x")
    with pytest.raises(OSError) as bad:
        os.setxattr(path, "user.glance.min_disk", b"lots")
    assert bad.value.errno == errno.EINVAL
    delete_all(setup.gc, "w-attrs.raw")


def test_mkdir_symlink_and_link_are_refused(setup: Setup) -> None:
    write_file(setup.mnt / "w-link.raw", b"x")
    with pytest.raises(PermissionError):
        os.mkdir(setup.mnt / "w-dir")
    with pytest.raises(PermissionError):
        os.symlink("w-link.raw", setup.mnt / "w-sym")
    with pytest.raises(PermissionError):
        os.link(setup.mnt / "w-link.raw", setup.mnt / "w-hard")
    delete_all(setup.gc, "w-link.raw")


# -- mounts of their own -----------------------------------------------------------------------


def test_replace_on_close(glance_v2: GlanceServer, tmp_path: Path) -> None:
    gc = glanceclient_for("2", glance_v2.endpoint)
    with mounted(glance_v2.endpoint, tmp_path / "mnt",
                 options=f"ttl=1,replace_on_close,spool_dir={tmp_path}") as mount:
        path = mount.path / "w-replace.raw"
        write_file(path, b"version one")
        old = the_image(gc, "w-replace.raw")
        gc.images.update(old.id, os_distro="kept")
        time.sleep(1.5)
        write_file(path, b"version two")
        new = check_server_has(gc, "2", "w-replace.raw", b"version two")
        assert new.id != old.id and new["os_distro"] == "kept"
        with open(path, "r+b") as f:      # in place: the old data comes along
            f.seek(8)
            f.write(b"TWO")
        check_server_has(gc, "2", "w-replace.raw", b"version TWO")
        assert path.read_bytes() == b"version TWO"
    delete_all(gc, "w-replace.raw")


def test_without_spool_going_back_is_refused(glance_v2: GlanceServer, tmp_path: Path) -> None:
    gc = glanceclient_for("2", glance_v2.endpoint)
    with mounted(glance_v2.endpoint, tmp_path / "mnt", options="ttl=1,spool_dir=none") as mount:
        data = os.urandom(2 * MiB)
        run("cp", write_file(tmp_path / "seq.bin", data), mount.path / "w-nospool.raw")
        check_server_has(gc, "2", "w-nospool.raw", data)
        fd = os.open(mount.path / "w-back.raw", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, os.urandom(MiB))
            with pytest.raises(OSError) as refused:
                os.pwrite(fd, b"back", 0)
            assert refused.value.errno == errno.ESPIPE
        finally:
            os.close(fd)
    delete_all(gc, "w-nospool.raw")
    delete_all(gc, "w-back.raw")


def memory_bytes(pid: int, field: str) -> int:
    kib = status_kib(pid, field)
    assert kib is not None, f"no {field} for pid {pid}"
    return kib * 1024


def test_two_gib_copy_keeps_memory_flat(glance_v2: GlanceServer, tmp_path: Path) -> None:
    gc = glanceclient_for("2", glance_v2.endpoint)
    src = tmp_path / "two.gib"
    digest = hashlib.md5()
    block = bytearray(os.urandom(MiB))
    with open(src, "wb") as f:
        for i in range(2048):
            block[:8] = i.to_bytes(8, "little")
            digest.update(block)
            f.write(block)
    budget = 64 * MiB
    with mounted(glance_v2.endpoint, tmp_path / "mnt",
                 options=f"ttl=1,memory={budget},spool_dir={tmp_path}") as mount:
        baseline = memory_bytes(mount.proc.pid, "VmRSS")
        run("cp", src, mount.path / "w-two.gib")
        growth = memory_bytes(mount.proc.pid, "VmHWM") - baseline
    src.unlink()
    image = the_image(gc, "w-two.gib")
    assert image.size == 2048 * MiB and image.checksum == digest.hexdigest()
    print(f"\nmount RSS: baseline {baseline / MiB:.1f} MiB, growth {growth / MiB:.1f} MiB")
    assert growth < budget
    delete_all(gc, "w-two.gib")


def test_server_killed_mid_cp(tmp_path: Path) -> None:
    server = GlanceServer(tmp_path / "mortal", free_port())
    server.start()
    try:
        gc = glanceclient_for("2", server.endpoint)
        src = tmp_path / "big.bin"
        with open(src, "wb") as f:
            for _ in range(256):
                f.write(os.urandom(MiB))
        with mounted(server.endpoint, tmp_path / "mnt",
                     options=f"ttl=1,spool_dir={tmp_path}") as mount:
            cp = subprocess.Popen(["cp", str(src), str(mount.path / "w-doomed.raw")],
                                  stderr=subprocess.PIPE, text=True)
            wait_status(gc, "w-doomed.raw", "saving", 30)
            server.kill()
            assert cp.wait(timeout=120) != 0
            err = cp.stderr.read() if cp.stderr else ""
            assert "w-doomed.raw" in err
            server.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                left = [(i.name, i.status) for i in gc.images.list()]
                if not left:
                    break
                time.sleep(0.5)
            assert left == []
            assert not (mount.path / "w-doomed.raw").exists()
    finally:
        server.stop()


def test_mount_killed_mid_cp_its_leftover_goes_at_the_next_mount(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """The mount process is SIGKILLed (an OOM kill, a crash) while ``cp``
    streams into it: the image it was writing stays queued or saving, and its
    Janitor died with it. The next mount of the endpoint deletes that image
    (from the write journal) and leaves every other image alone; a mount
    started while another one is still writing leaves that upload alone.

    ``cp`` reads from a FIFO, so the test decides when the mount dies: in the
    middle of the copy, whatever the machine's speed."""
    with fresh_glance(tmp_path_factory, "glance-mount-crash") as server:
        gc = glanceclient_for("2", server.endpoint)
        before_data = os.urandom(MiB)
        before = gc.images.create(name="w-before.raw", disk_format="raw",
                                  container_format="bare")
        gc.images.upload(before.id, io.BytesIO(before_data))
        by_hand = gc.images.create(name="w-queued-by-hand", disk_format="raw",
                                   container_format="bare")
        opts = f"ttl=1,spool_dir={tmp_path},journal_dir={tmp_path / 'journal'}"
        source = tmp_path / "source"
        # 32 MiB, then the FIFO held open: cp waits for more until told to stop.
        with held_fifo(source, 32) as stop:
            with mounted(server.endpoint, tmp_path / "mnt", options=opts) as mount:
                cp = subprocess.Popen(["cp", str(source), str(mount.path / "w-crash.raw")],
                                      stderr=subprocess.PIPE, text=True)
                leftover = wait_status(gc, "w-crash.raw", "saving", 60, mount.log_text).id

                # Another mount of the endpoint starts while this one writes.
                with mounted(server.endpoint, tmp_path / "mnt-other", options=opts) as other:
                    assert gc.images.get(leftover).status == "saving"
                    other_log = other.log_text()
                assert leftover not in other_log

                os.kill(mount.proc.pid, signal.SIGKILL)
                mount.proc.wait(timeout=10)
                stop.set()
                assert cp.wait(timeout=60) != 0
                assert gc.images.get(leftover).status in ("queued", "saving")
                run("fusermount3", "-uz", mount.path)

            with mounted(server.endpoint, tmp_path / "mnt-next", options=opts) as again:
                # Deleted before the mount was ready: never shown.
                assert "w-crash.raw" not in os.listdir(again.path)
                assert "w-before.raw" in os.listdir(again.path)
                wait_gone(gc, "w-crash.raw", 60)
                ids = {i.id: i.status for i in gc.images.list()}
                assert leftover not in ids, ids
                log = again.log_text()
            assert len([line for line in log.splitlines() if leftover in line]) == 1, log
            assert "Traceback" not in log, log
            kept = gc.images.get(before.id)
            assert kept.status == "active"
            assert kept.checksum == hashlib.md5(before_data).hexdigest()
            assert gc.images.get(by_hand.id).status == "queued"


def test_mount_killed_before_the_create_was_answered_its_image_goes_at_the_next_mount(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Glance made the image but the mount died before the answer reached it (held in a
    proxy here; a crash or an OOM kill at that moment in life). The mount journals the id
    it chose before asking, so the next mount still finds and deletes that image."""
    with fresh_glance(tmp_path_factory, "glance-mount-create") as server, \
            FaultProxy("127.0.0.1", server.port) as proxy:
        gc = glanceclient_for("2", server.endpoint)
        opts = f"ttl=1,spool_dir={tmp_path},journal_dir={tmp_path / 'journal'}"
        source = write_file(tmp_path / "source.raw", os.urandom(MiB))
        proxy.add(Fault(match="POST /v2/images", stall=120))
        with mounted(proxy.endpoint, tmp_path / "mnt", options=opts) as mount:
            cp = subprocess.Popen(["cp", str(source), str(mount.path / "w-unanswered.raw")],
                                  stderr=subprocess.PIPE, text=True)
            made = wait_status(gc, "w-unanswered.raw", "queued", 60, mount.log_text)
            os.kill(mount.proc.pid, signal.SIGKILL)
            mount.proc.wait(timeout=10)
            assert cp.wait(timeout=60) != 0
            run("fusermount3", "-uz", mount.path)
        proxy.clear()
        with mounted(proxy.endpoint, tmp_path / "mnt-next", options=opts) as again:
            assert "w-unanswered.raw" not in os.listdir(again.path)
            wait_gone(gc, "w-unanswered.raw", 60)
            log = again.log_text()
        with pytest.raises(Exception, match="404|not found|NotFound"):
            gc.images.get(made.id)
        assert made.id in log, log


@pytest.mark.parametrize("fault", [
    Fault(match="POST /v2/images", cut_after=0),      # Glance made it; the answer is lost
    Fault(match="POST /v2/images", respond=b""),      # closed before Glance saw it
], ids=["answer-lost", "closed-unsent"])
def test_a_create_without_an_answer_is_sent_again_and_cp_succeeds(
        fault: Fault, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """A pooled connection a load balancer closed, or an answer lost on the way: the
    mount chose the image's id, so it sends the create again (a repeat of one that
    arrived is a 409, and the image it made is used). One image, whole."""
    with fresh_glance(tmp_path_factory, "glance-create-again") as server, \
            FaultProxy("127.0.0.1", server.port) as proxy:
        gc = glanceclient_for("2", server.endpoint)
        data = os.urandom(MiB)
        source = write_file(tmp_path / "source.raw", data)
        proxy.add(fault)
        with mounted(proxy.endpoint, tmp_path / "mnt",
                     options=f"ttl=1,spool_dir={tmp_path}") as mount:
            done = run("cp", source, mount.path / "w-again.raw", check=False)
            assert done.returncode == 0, done.stderr + mount.log_text()
            assert "sending it again" in mount.log_text()
        images = named(gc, "w-again.raw")
        assert [(i["status"], i["checksum"]) for i in images] == \
            [("active", hashlib.md5(data).hexdigest())], images


def test_a_create_that_never_gets_an_answer_leaves_no_image(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Glance made the image but neither the create nor its one repeat got an answer:
    ``cp`` fails, and the mount deletes the image it had chosen the id of (it may
    exist)."""
    with fresh_glance(tmp_path_factory, "glance-create-lost") as server, \
            FaultProxy("127.0.0.1", server.port) as proxy:
        gc = glanceclient_for("2", server.endpoint)
        source = write_file(tmp_path / "source.raw", os.urandom(MiB))
        proxy.add(Fault(match="POST /v2/images", cut_after=0, times=2))
        with mounted(proxy.endpoint, tmp_path / "mnt",
                     options=f"ttl=1,spool_dir={tmp_path}") as mount:
            done = run("cp", source, mount.path / "w-lost-answer.raw", check=False)
            assert done.returncode != 0
            assert "Input/output error" in done.stderr, done.stderr
            wait_gone(gc, "w-lost-answer.raw", 30)
            assert named(gc, "w-lost-answer.raw") == [], mount.log_text()

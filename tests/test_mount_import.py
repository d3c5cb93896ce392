"""cp through Glance's import workflow, through a real kernel mount, against the real Glance
that converts (``glance_convert``: import methods glance-direct, web-download, copy-image;
image_conversion to raw; stores ``fast`` (default) and ``slow``).

Every outcome is checked through python-glanceclient as well: the image's status, format,
stores and bytes as the server holds them.
"""
from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mount_support import held_fifo, mounted

pytestmark = [pytest.mark.mount, pytest.mark.slow]

MiB = 1024 * 1024


def glanceclient_for(endpoint: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import glanceclient
        return glanceclient.Client("2", endpoint=endpoint)


def named(gc: Any, name: str) -> list[Any]:
    return [i for i in gc.images.list() if i.get("name") == name]


def the_image(gc: Any, name: str) -> Any:
    found = named(gc, name)
    assert len(found) == 1, [(i["id"], i["status"]) for i in found]
    return gc.images.get(found[0]["id"])


def downloaded(gc: Any, image_id: str, **kwargs: Any) -> bytes:
    return b"".join(gc.images.data(image_id, **kwargs))


def settled_tasks(gc: Any, image_id: str) -> list[str]:
    """The statuses of the image's import tasks once none is still running. Glance makes
    the image active (``cp`` returns then) a moment before it marks its task done: a
    fresh-clone run saw ``processing`` right after ``cp``."""
    deadline = time.monotonic() + 30
    while True:
        statuses = [t["status"] for t in
                    gc.images.get_associated_image_tasks(image_id)["tasks"]]
        if not {"pending", "processing"} & set(statuses):
            return statuses
        assert time.monotonic() < deadline, f"tasks of {image_id} still {statuses}"
        time.sleep(0.1)


def qcow2(path: Path, size: str = "16M", backing: Path | None = None) -> Path:
    """A qcow2 with data at two places (and holes between), or an overlay of ``backing``."""
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing is not None:
        cmd += ["-b", str(backing), "-F", "qcow2"]
    subprocess.run([*cmd, str(path), size], check=True)
    for pattern, at in (("0x5a", "0"), ("0xc3", "9M")):
        subprocess.run(["qemu-io", "-c", f"write -P {pattern} {at} 1M", str(path)],
                       check=True, capture_output=True)
    return path


def cp(src: Path, dst: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["cp", str(src), str(dst)], capture_output=True, text=True,
                          timeout=300)


class Setup:
    def __init__(self, endpoint: str, mnt: Path, log: Any, local: Path) -> None:
        self.mnt, self.log, self.local = mnt, log, local
        self.gc = glanceclient_for(endpoint)


@pytest.fixture(scope="module")
def setup(glance_convert: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("import-mount")
    (base / "local").mkdir()
    (base / "spool").mkdir()
    # A long ttl: what the file shows after the import comes from the upload itself.
    with mounted(glance_convert.endpoint, base / "mnt",
                 options=f"ttl=300,spool_dir={base / 'spool'},upload=import") as mount:
        yield Setup(glance_convert.endpoint, mount.path, mount.log_text, base / "local")
        log = mount.log_text()
    assert "Traceback" not in log, log


def test_cp_of_qcow2_becomes_the_same_disk_in_raw(setup: Setup) -> None:
    src = qcow2(setup.local / "guest.qcow2")
    target = setup.mnt / "imp-guest.qcow2"
    done = cp(src, target)
    assert done.returncode == 0, done.stderr + setup.log()
    image = the_image(setup.gc, "imp-guest.qcow2")
    assert (image["status"], image["disk_format"], image["size"]) == ("active", "raw", 16 * MiB)
    assert image["stores"] == "fast"
    raw = downloaded(setup.gc, image["id"])
    assert image["os_hash_value"] == hashlib.sha512(raw).hexdigest()
    # At once, ttl or not: the converted image's size, format and hashes.
    assert target.stat().st_size == 16 * MiB
    assert os.getxattr(target, "user.glance.disk_format") == b"raw"
    assert os.getxattr(target, "user.glance.os_hash_value").decode() == image["os_hash_value"]
    same = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(src),
                           str(target)], capture_output=True, text=True)
    assert same.returncode == 0, same.stdout + same.stderr
    (setup.local / "got.raw").write_bytes(raw)
    same = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(src),
                           str(setup.local / "got.raw")], capture_output=True, text=True)
    assert same.returncode == 0, same.stdout + same.stderr
    target.unlink()
    assert named(setup.gc, "imp-guest.qcow2") == []


def test_failed_import_fails_cp_with_the_tasks_message_and_leaves_nothing(
        setup: Setup) -> None:
    base = qcow2(setup.local / "base.qcow2")
    # An overlay: Glance's safety checks refuse a qcow2 with a backing file in the import.
    src = qcow2(setup.local / "overlay.qcow2", backing=base)
    done = cp(src, setup.mnt / "imp-overlay.qcow2")
    assert done.returncode != 0
    assert os.strerror(errno.EIO) in done.stderr, done.stderr
    lines = [line for line in setup.log().splitlines()
             if "imp-overlay.qcow2" in line and "import of image" in line]
    assert len(lines) == 1, setup.log()
    # The task's own message (Glance 33 says "Task failed due to ..."), and the errno.
    assert "says 'Task failed" in lines[0] and lines[0].endswith("-> EIO"), lines[0]
    deadline = time.monotonic() + 30
    while named(setup.gc, "imp-overlay.qcow2"):
        assert time.monotonic() < deadline, "the image of the failed import is still there"
        time.sleep(0.2)
    assert not (setup.mnt / "imp-overlay.qcow2").exists()


def test_setfattr_stores_copies_to_the_second_store_and_reads_back(setup: Setup) -> None:
    data = os.urandom(3 * MiB + 5)
    src = setup.local / "plain.raw"
    src.write_bytes(data)
    target = setup.mnt / "imp-plain.raw"
    assert cp(src, target).returncode == 0, setup.log()
    image = the_image(setup.gc, "imp-plain.raw")
    assert image["stores"] == "fast" and image["checksum"] == hashlib.md5(data).hexdigest()
    os.setxattr(target, "user.glance.stores", b"fast,slow")
    assert set(setup.gc.images.get(image["id"])["stores"].split(",")) == {"fast", "slow"}
    assert downloaded(setup.gc, image["id"], prefer=["slow"]) == data
    # Left out of the list: deleted from that store; the data is read from the other.
    os.setxattr(target, "user.glance.stores", b"slow")
    assert setup.gc.images.get(image["id"])["stores"] == "slow"
    assert os.getxattr(target, "user.glance.stores") == b"slow"
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()
    with pytest.raises(OSError) as refused:
        os.setxattr(target, "user.glance.stores", b"nowhere")
    assert refused.value.errno == errno.EINVAL
    target.unlink()


@pytest.mark.parametrize("stores", ["slow", "fast,slow"])
def test_stores_option_puts_the_image_in_the_named_stores(
        glance_convert: Any, tmp_path: Path, stores: str) -> None:
    data = os.urandom(MiB + 3)
    src = tmp_path / "src.raw"
    src.write_bytes(data)
    gc = glanceclient_for(glance_convert.endpoint)
    name = f"imp-stores-{stores.replace(',', '-')}.raw"
    # upload=auto (the default) goes through the import because stores= asks for it.
    with mounted(glance_convert.endpoint, tmp_path / "mnt",
                 options=f"spool_dir={tmp_path},stores={stores}") as mount:
        done = cp(src, mount.path / name)
        assert done.returncode == 0, done.stderr + mount.log_text()
        # cp returned: the image is in every store named, not only in the first.
        image = the_image(gc, name)
        assert image["status"] == "active"
        assert sorted(image["stores"].split(",")) == stores.split(",")
        assert settled_tasks(gc, image["id"]) == ["success"]   # imported, not PUT
        for store in stores.split(","):
            assert (glance_convert.store_dir(store) / image["id"]).read_bytes() == data
        (mount.path / name).unlink()


@pytest.fixture(scope="module")
def glance_no_direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A cloud whose policy refuses direct uploads (PUT .../file): only imports."""
    from tests.conftest import fresh_glance
    with fresh_glance(tmp_path_factory, "glance-no-direct",
                      import_methods=("glance-direct",),
                      policy={"upload_image": "!"}) as server:
        yield server


def test_auto_goes_through_the_import_where_direct_upload_is_refused(
        glance_no_direct: Any, tmp_path: Path) -> None:
    gc = glanceclient_for(glance_no_direct.endpoint)
    with mounted(glance_no_direct.endpoint, tmp_path / "mnt",
                 options=f"spool_dir={tmp_path}") as mount:
        for n in (1, 2):     # the refused one, then one that goes through the import at once
            data = os.urandom(2 * MiB + n)
            (tmp_path / f"{n}.raw").write_bytes(data)
            done = cp(tmp_path / f"{n}.raw", mount.path / f"auto-{n}.raw")
            assert done.returncode == 0, done.stderr + mount.log_text()
            image = the_image(gc, f"auto-{n}.raw")
            assert image["status"] == "active"
            assert image["checksum"] == hashlib.md5(data).hexdigest()
            assert downloaded(gc, image["id"]) == data
            assert settled_tasks(gc, image["id"]) == ["success"]
        # One image per file: the refused upload's image took the staged data.
        assert len(list(gc.images.list())) == 2
        assert mount.log_text().count("refused a direct upload") == 1


def test_mount_killed_while_staging_its_image_goes_at_the_next_mount(
        glance_convert: Any, tmp_path: Path) -> None:
    """The write journal covers an image being staged as it covers a direct upload: the
    mount is SIGKILLed while ``cp`` streams into the stage (``cp`` reads a FIFO the test
    holds open), and the next mount of the endpoint deletes the image."""
    gc = glanceclient_for(glance_convert.endpoint)
    opts = f"upload=import,spool_dir={tmp_path},journal_dir={tmp_path / 'journal'}"
    source = tmp_path / "source"
    with held_fifo(source, 8) as stop:
        with mounted(glance_convert.endpoint, tmp_path / "mnt", options=opts) as mount:
            copy = subprocess.Popen(["cp", str(source), str(mount.path / "imp-crash.raw")],
                                    stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 60
            while not named(gc, "imp-crash.raw"):
                assert time.monotonic() < deadline, mount.log_text()
                time.sleep(0.05)
            leftover = named(gc, "imp-crash.raw")[0]["id"]
            # Glance marks the image uploading as soon as the stage request starts.
            while gc.images.get(leftover)["status"] != "uploading":
                assert time.monotonic() < deadline, mount.log_text()
                time.sleep(0.05)
            os.kill(mount.proc.pid, signal.SIGKILL)
            mount.proc.wait(timeout=10)
            stop.set()
            assert copy.wait(timeout=60) != 0
            subprocess.run(["fusermount3", "-uz", str(mount.path)], check=True)
        assert gc.images.get(leftover)["status"] != "active"
        with mounted(glance_convert.endpoint, tmp_path / "mnt-next", options=opts) as again:
            assert "imp-crash.raw" not in os.listdir(again.path)
            deadline = time.monotonic() + 60
            while leftover in {i["id"] for i in gc.images.list()}:
                assert time.monotonic() < deadline, again.log_text()
                time.sleep(0.2)


def test_auto_imports_a_refused_upload_redone_from_the_spool(
        glance_no_direct: Any, tmp_path: Path) -> None:
    """qemu-img convert goes back into what it wrote, so its upload is redone from the
    spool at close: whichever direct upload the server refuses (the stream, or the one
    from the spool), the file goes through the import and arrives whole."""
    gc = glanceclient_for(glance_no_direct.endpoint)
    src = qcow2(tmp_path / "guest.qcow2")
    with mounted(glance_no_direct.endpoint, tmp_path / "mnt",
                 options=f"spool_dir={tmp_path}") as mount:
        target = mount.path / "auto-convert.qcow2"
        done = subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(src), str(target)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr + mount.log_text()
        image = the_image(gc, "auto-convert.qcow2")
        assert (image["status"], image["disk_format"]) == ("active", "qcow2")
        (tmp_path / "got.qcow2").write_bytes(downloaded(gc, image["id"]))
        same = subprocess.run(["qemu-img", "compare", str(src), str(tmp_path / "got.qcow2")],
                              capture_output=True, text=True)
        assert same.returncode == 0, same.stdout + same.stderr
        assert "refused a direct upload" in mount.log_text()
        target.unlink()

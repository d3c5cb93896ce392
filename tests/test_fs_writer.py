"""The write path (glancefs.fs.write) against the real servers, no FUSE.

What the server ends up holding is checked through python-glanceclient, an
independent second client: bytes, checksum and, for v2, os_hash_value.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import subprocess
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from glancefs.api import Client
from glancefs.api import exceptions as exc
from glancefs.api.service import ImageRecord, ImageService
from glancefs.fs.errors import FsError
from glancefs.fs.write import WritePath
from glancefs.fs.write.janitor import Janitor
from glancefs.fs.write.journal import Journal, Owner
from glancefs.fs.write.spool import Spool, SpoolBudget, SpoolFull, spool_from_image
from glancefs.fs.write.upload import ChunkQueue, PendingMeta, Upload, WriteConfig, _Abandoned
from glancefs.testing.glance_server import GlanceServer, free_port

MiB = 1024 * 1024
WRITE = 128 * 1024          # what cp writes at a time through FUSE


def glanceclient_for(version: str, endpoint: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import glanceclient
        return glanceclient.Client(version, endpoint=endpoint)


@pytest.fixture
def service(api) -> ImageService:
    return ImageService(api.client())


@pytest.fixture
def gc(api) -> Any:
    return glanceclient_for(api.version, api.endpoint)


@pytest.fixture
def config(tmp_path: Path) -> WriteConfig:
    spool = tmp_path / "spool"
    spool.mkdir()
    return WriteConfig(spool_dir=str(spool), write_buffer=2 * MiB)


def server_bytes(gc: Any, image_id: str) -> bytes:
    return b"".join(gc.images.data(image_id))


def images_named(gc: Any, name: str) -> list[Any]:
    return [i for i in gc.images.list() if getattr(i, "name", None) == name]


def check_image(gc: Any, version: str, image_id: str, data: bytes) -> Any:
    image = gc.images.get(image_id)
    assert image.status == "active"
    assert image.size == len(data)
    assert image.checksum == hashlib.md5(data).hexdigest()
    if version == "2":
        assert image.os_hash_algo == "sha512"
        assert image.os_hash_value == hashlib.sha512(data).hexdigest()
    assert server_bytes(gc, image_id) == data
    return image


def write_in_order(upload: Upload, data: bytes, start: int = 0, step: int = WRITE) -> None:
    for off in range(0, len(data), step):
        upload.write(start + off, data[off:off + step])


def unique(name: str) -> str:
    stem, ext = os.path.splitext(name)
    return f"{stem}-{os.urandom(3).hex()}{ext}"


# -- the queue and the spool, without a server ------------------------------------------


def test_chunk_queue_bounds_bytes_and_close_wakes_both_sides() -> None:
    q = ChunkQueue(limit=10)
    q.put(b"12345678")
    blocked = threading.Event()
    done = threading.Event()

    def writer() -> None:
        blocked.set()
        q.put(b"abcdef")          # 8 + 6 > 10: waits for the reader
        done.set()

    threading.Thread(target=writer, daemon=True).start()
    blocked.wait(1)
    time.sleep(0.1)
    assert not done.is_set() and q.held == 8
    assert q.get() == b"12345678"
    assert done.wait(1) and q.held == 6
    q.close()
    with pytest.raises(_Abandoned):
        q.get()
    with pytest.raises(_Abandoned):
        q.put(b"more")


def test_spool_reads_zeros_past_its_extent_and_respects_the_budget(tmp_path: Path) -> None:
    budget = SpoolBudget(limit=100)
    spool = Spool(str(tmp_path), budget)
    spool.write(10, b"abc")
    assert budget.used == 13
    assert spool.read(8, 10, file_size=20) == b"\0\0abc" + b"\0" * 5
    assert spool.read(15, 10, file_size=20) == b"\0" * 5
    with pytest.raises(SpoolFull):
        spool.write(90, b"x" * 20)
    assert budget.used == 13
    assert b"".join(spool.chunks(20, chunk=7)) == b"\0" * 10 + b"abc" + b"\0" * 7
    spool.truncate(11)
    assert budget.used == 11 and spool.read(0, 20, file_size=11) == b"\0" * 10 + b"a"
    spool.close()
    assert budget.used == 0


# -- streaming ---------------------------------------------------------------------------------


def test_sequential_writes_stream_while_writing(api, service, gc, config) -> None:
    data = os.urandom(12 * MiB + 12345)
    name = unique("stream.raw")
    upload = Upload(service, name, config)
    write_in_order(upload, data[:8 * MiB])
    # The image exists and is receiving data before close.
    deadline = time.monotonic() + 10
    while not images_named(gc, name) and time.monotonic() < deadline:
        time.sleep(0.05)
    [early] = images_named(gc, name)
    assert early.status in ("queued", "saving")
    write_in_order(upload, data[8 * MiB:], start=8 * MiB)
    assert upload._queue.held <= config.write_buffer
    record = upload.finish()
    assert record.id == early.id and upload.why_restart is None
    image = check_image(gc, api.version, record.id, data)
    assert image.disk_format == "raw" and image.container_format == "bare"
    service.delete(record.id)


def test_disk_format_from_signature_then_extension_and_user_choice_wins(
        api, service, gc, config, tmp_path) -> None:
    qcow2 = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), "16M"], check=True)
    plain = os.urandom(300_000)
    made = []
    for name, data, meta, want in [
        (unique("sig.img"), qcow2.read_bytes(), None, "qcow2"),   # signature beats .img
        (unique("disk.iso"), plain, None, "iso"),                  # then the extension
        (unique("noext"), plain, None, "raw"),                     # else raw
        (unique("x.qcow2"), plain, PendingMeta(disk_format="raw"), "raw"),   # user wins
    ]:
        if want == "iso" and api.version == "2":
            continue   # Glance inspects ISO data too: random bytes are not one
        upload = Upload(service, name, config, meta=meta)
        write_in_order(upload, data)
        record = upload.finish()
        made.append(record.id)
        image = gc.images.get(record.id)
        assert (image.disk_format, image.container_format) == (want, "bare")
    for image_id in made:
        service.delete(image_id)


def test_sparse_writes_and_ftruncate_fill_zeros_without_restart(api, service, gc,
                                                                config) -> None:
    one, two = os.urandom(MiB), os.urandom(MiB)
    upload = Upload(service, unique("sparse.raw"), config)
    write_in_order(upload, one, start=10 * MiB)       # cp seeks over the first hole
    write_in_order(upload, two, start=40 * MiB)
    upload.truncate(64 * MiB)                          # and extends at the end
    assert upload.size == 64 * MiB
    record = upload.finish()
    assert upload.why_restart is None
    want = bytearray(64 * MiB)
    want[10 * MiB:11 * MiB] = one
    want[40 * MiB:41 * MiB] = two
    check_image(gc, api.version, record.id, bytes(want))
    service.delete(record.id)


def test_truncate_then_write_from_the_start_streams(api, service, gc, config) -> None:
    # truncate -s 8M, then dd conv=notrunc of 3 MiB at offset 0: one stream.
    data = os.urandom(3 * MiB)
    upload = Upload(service, unique("dd.raw"), config)
    upload.truncate(8 * MiB)
    write_in_order(upload, data)
    record = upload.finish()
    assert upload.why_restart is None
    check_image(gc, api.version, record.id, data + bytes(5 * MiB))
    service.delete(record.id)


# -- going back --------------------------------------------------------------------------


def test_going_back_restarts_from_the_spool_and_leaves_one_image(api, service, gc,
                                                                 config) -> None:
    data = bytearray(os.urandom(6 * MiB))
    name = unique("back.raw")
    upload = Upload(service, name, config)
    write_in_order(upload, bytes(data[:4 * MiB]))
    upload.write(0, bytes(data[:WRITE]))            # the same bytes again: not going back
    assert upload.why_restart is None
    patch = os.urandom(1000)
    upload.write(100, patch)                        # going back for real
    data[100:1100] = patch
    assert upload.why_restart is not None
    assert upload.read(0, 1100)[100:] == patch      # the writer can read its data back
    write_in_order(upload, bytes(data[4 * MiB:]), start=4 * MiB)
    record = upload.finish()
    check_image(gc, api.version, record.id, bytes(data))
    assert [i.id for i in images_named(gc, name)] == [record.id]
    service.delete(record.id)


def test_shrinking_below_what_was_sent_restarts(api, service, gc, config) -> None:
    data = os.urandom(3 * MiB)
    upload = Upload(service, unique("shrink.raw"), config)
    write_in_order(upload, data)
    upload.truncate(MiB)
    record = upload.finish()
    assert upload.why_restart is not None
    check_image(gc, api.version, record.id, data[:MiB])
    service.delete(record.id)


def test_truncate_to_zero_starts_a_fresh_stream(api, service, gc, config) -> None:
    name = unique("again.raw")
    upload = Upload(service, name, config)
    write_in_order(upload, os.urandom(2 * MiB))
    upload.truncate(0)
    data = os.urandom(MiB)
    write_in_order(upload, data)
    record = upload.finish()
    assert upload.why_restart is None
    check_image(gc, api.version, record.id, data)
    assert [i.id for i in images_named(gc, name)] == [record.id]
    service.delete(record.id)


def test_without_spool_going_back_is_espipe(api, service, gc) -> None:
    config = WriteConfig(spool_dir=None)
    name = unique("nospool.raw")
    upload = Upload(service, name, config)
    data = os.urandom(2 * MiB)
    write_in_order(upload, data)
    with pytest.raises(FsError) as back:
        upload.write(0, b"different")
    assert back.value.errno == errno.ESPIPE and "spool" in back.value.message
    with pytest.raises(FsError) as read:
        upload.read(0, 10)
    assert read.value.errno == errno.ESPIPE
    # The refused write changed nothing: the upload goes on and is right.
    record = upload.finish()
    check_image(gc, api.version, record.id, data)
    service.delete(record.id)


def test_a_file_that_outgrows_the_spool_goes_on_in_order(api, service, gc, tmp_path) -> None:
    budget = SpoolBudget(limit=MiB)
    config = WriteConfig(spool_dir=str(tmp_path))
    upload = Upload(service, unique("big.raw"), config, budget=budget)
    data = os.urandom(3 * MiB)
    write_in_order(upload, data)
    assert upload.spool is None and budget.used == 0
    with pytest.raises(FsError) as back:
        upload.write(5, b"different")
    assert back.value.errno == errno.ESPIPE and "spool_size" in back.value.message
    record = upload.finish()
    check_image(gc, api.version, record.id, data)
    service.delete(record.id)


# -- failures leave nothing behind ---------------------------------------------------------


def test_mislabelled_qcow2_fails_with_415_and_leaves_nothing(glance_v2, config) -> None:
    service = ImageService(Client("2", endpoint=glance_v2.endpoint))
    gc = glanceclient_for("2", glance_v2.endpoint)
    name = unique("liar.qcow2")
    upload = Upload(service, name, config)
    with pytest.raises(exc.HTTPUnsupportedMediaType) as refused:
        write_in_order(upload, os.urandom(4 * MiB))
        upload.finish()
    assert "qcow2" in refused.value.details
    assert upload.janitor.wait_idle(10)
    assert images_named(gc, name) == []
    # Later calls give the same error (flush after a failed write).
    with pytest.raises(exc.HTTPUnsupportedMediaType):
        upload.finish()


def test_hash_mismatch_fails_and_deletes(api, service, gc, config) -> None:
    class Lying(ImageService):
        """A server whose stored checksum differs from what was sent."""

        def upload(self, *args: Any, **kwargs: Any) -> ImageRecord:
            return dataclasses.replace(super().upload(*args, **kwargs), checksum="0" * 32)

    lying = Lying(service.client)
    name = unique("lie.raw")
    upload = Upload(lying, name, config)
    write_in_order(upload, os.urandom(MiB))
    with pytest.raises(exc.HashMismatch):
        upload.finish()
    assert images_named(gc, name) == []


def test_over_quota_is_413(tmp_path: Path, config) -> None:
    with GlanceServer(tmp_path / "capped", free_port(), image_size_cap=MiB) as server:
        service = ImageService(Client("2", endpoint=server.endpoint))
        gc = glanceclient_for("2", server.endpoint)
        upload = Upload(service, "too-big.raw", config)
        with pytest.raises(exc.HTTPOverLimit):
            write_in_order(upload, os.urandom(3 * MiB))
            upload.finish()
        assert upload.janitor.wait_idle(10)
        assert list(gc.images.list()) == []


@pytest.mark.slow
def test_server_killed_mid_upload_fails_and_the_leftover_goes_when_it_returns(
        tmp_path: Path, config) -> None:
    server = GlanceServer(tmp_path / "mortal", free_port())
    server.start()
    try:
        service = ImageService(Client("2", endpoint=server.endpoint, retries=0))
        janitor = Janitor(service, interval=0.5)
        upload = Upload(service, "doomed.raw", config, janitor=janitor)
        write_in_order(upload, os.urandom(4 * MiB))
        deadline = time.monotonic() + 10
        while upload.image_id is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upload.image_id is not None
        server.kill()
        with pytest.raises(exc.ClientException):
            write_in_order(upload, os.urandom(8 * MiB), start=4 * MiB)
            upload.finish()
        assert janitor.pending
        server.start()
        assert janitor.wait_idle(30), janitor.pending
        gc = glanceclient_for("2", server.endpoint)
        assert [(i.name, i.status) for i in gc.images.list()] == []
        janitor.close()
    finally:
        server.stop()


def test_discard_deletes_the_half_made_image(api, service, gc, config) -> None:
    name = unique("dropped.raw")
    upload = Upload(service, name, config)
    write_in_order(upload, os.urandom(2 * MiB))
    deadline = time.monotonic() + 10
    while upload.image_id is None and time.monotonic() < deadline:
        time.sleep(0.05)
    upload.discard("unlinked while writing")
    assert upload.janitor.wait_idle(10)
    assert images_named(gc, name) == []


def test_a_dead_writers_leftover_goes_at_the_next_start_and_active_images_stay(
        api, service, gc, config, tmp_path: Path) -> None:
    """The Janitor's list dies with its process, the write journal does not:
    the next mount of the endpoint deletes what a dead one left half-made,
    and leaves alone an image that became active."""
    journal_dir = str(tmp_path / "journal")
    # A writer whose process is gone by the time the next one starts (another boot).
    dead = Journal(journal_dir, api.endpoint, owner=Owner("an-earlier-boot", 4242, 1))
    dead.open()
    name = unique("orphan.raw")
    orphan_upload = Upload(service, name, config, janitor=Janitor(service, journal=dead))
    write_in_order(orphan_upload, os.urandom(2 * MiB))
    deadline = time.monotonic() + 10
    while orphan_upload.image_id is None and time.monotonic() < deadline:
        time.sleep(0.05)
    orphan = orphan_upload.image_id
    assert orphan is not None
    done_name = unique("done.raw")
    finished = Upload(service, done_name, config, janitor=Janitor(service, journal=dead))
    write_in_order(finished, os.urandom(MiB))
    kept = finished.finish()
    # As if it died after the image became active, before the journal said so.
    dead.add(kept.id, done_name)
    assert dead.close() == sorted([orphan, kept.id])   # the process "dies"
    assert gc.images.get(orphan).status in ("queued", "saving")

    paths = WritePath(service, config)
    paths.start_journal(journal_dir, api.endpoint)
    assert paths.janitor.wait_idle(30), paths.janitor.pending
    assert images_named(gc, name) == []
    assert gc.images.get(kept.id).status == "active"
    paths.close()
    orphan_upload.discard("the test is over")
    assert os.listdir(journal_dir) == []         # a clean end leaves no journal behind
    service.delete(kept.id)


# -- metadata, replacing, resuming ---------------------------------------------------------


def test_metadata_set_before_the_data_is_applied(api, service, gc, config) -> None:
    meta = PendingMeta(properties={"os_distro": "debian", "hw_disk_bus": "virtio"},
                       fields={"min_disk": 2, "min_ram": 512})
    upload = Upload(service, unique("meta.raw"), config, meta=meta)
    write_in_order(upload, os.urandom(200_000))
    # Changed while the data streams: applied after it.
    meta.properties["os_distro"] = "ubuntu"
    del meta.properties["hw_disk_bus"]
    meta.fields["protected"] = True
    record = upload.finish()
    image = gc.images.get(record.id)
    props = image.properties if api.version == "1" else image
    assert props["os_distro"] == "ubuntu" and "hw_disk_bus" not in props
    assert image.min_disk == 2 and image.min_ram == 512 and image.protected is True
    service.set_field(record, "protected", False)
    service.delete(record.id)


def test_replace_and_resume_from_the_spool(api, service, gc, config) -> None:
    name = unique("cycle.raw")
    first = os.urandom(3 * MiB)
    upload = Upload(service, name, config)
    write_in_order(upload, first)
    old = upload.finish()
    spool = upload.spool
    assert spool is not None
    # Open again (no O_TRUNC): change a few bytes in the middle and append.
    again = Upload(service, name, config, spool=spool, size=len(first), resume=True,
                   replaces=old.id)
    again.write(MiB, b"patched")
    again.write(len(first), b"tail")
    new = again.finish()
    want = bytearray(first)
    want[MiB:MiB + 7] = b"patched"
    check_image(gc, api.version, new.id, bytes(want) + b"tail")
    assert again.janitor.wait_idle(10)
    assert [i.id for i in images_named(gc, name)] == [new.id]
    # Replace-on-close of an image we did not write: its data comes into a spool first.
    spool2 = spool_from_image(service, new, config.spool_dir, None)
    third = Upload(service, name, config, spool=spool2, size=new.size or 0, resume=True,
                   replaces=new.id)
    third.truncate(10)
    final = third.finish()
    check_image(gc, api.version, final.id, bytes(want[:10]))
    assert third.janitor.wait_idle(10)
    assert [i.id for i in images_named(gc, name)] == [final.id]
    service.delete(final.id)
    third.close_spool()


# -- the file lifecycle (glancefs.fs.write), as FUSE would drive it ------------------------


@pytest.fixture
def paths(service, config) -> Any:
    from glancefs.fs.write import WritePath
    write_path = WritePath(service, config)
    yield write_path
    write_path.close()


CP = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def test_cp_sequence_uploads_at_flush(api, paths, gc) -> None:
    data = os.urandom(3 * MiB)
    name = unique("cp.raw")
    file = paths.create(100, name, fh=1, flags=CP)
    assert file.draft
    for off in range(0, len(data), WRITE):
        paths.write(file, 1, off, data[off:off + WRITE])
    record = paths.flush(file, 1)
    assert record is not None and not file.draft
    assert paths.release(file, 1) is None
    check_image(gc, api.version, record.id, data)
    paths.service.delete(record.id)


def test_touch_and_truncate_stay_drafts_then_dd_streams(api, paths, gc) -> None:
    name = unique("dd.raw")
    file = paths.create(101, name, fh=1, flags=os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK)
    paths.truncate(file, 4 * MiB, fh=1)
    assert paths.flush(file, 1) is None and paths.release(file, 1) is None
    assert file.draft and file.current_size == 4 * MiB and images_named(gc, name) == []
    # dd conv=notrunc: open without O_TRUNC, write at 0.
    paths.open(101, None, fh=2, flags=os.O_WRONLY | os.O_CREAT)
    data = os.urandom(MiB)
    paths.write(file, 2, 0, data)
    record = paths.flush(file, 2)
    paths.release(file, 2)
    check_image(gc, api.version, record.id, data + bytes(3 * MiB))
    paths.service.delete(record.id)


def test_cp_of_an_empty_file_makes_an_empty_image_at_release(api, paths, gc) -> None:
    name = unique("empty.raw")
    file = paths.create(102, name, fh=1, flags=CP)
    assert paths.flush(file, 1) is None
    record = paths.release(file, 1)
    assert record is not None
    check_image(gc, api.version, record.id, b"")
    paths.service.delete(record.id)


def test_a_shell_redirect_flushes_before_writing(api, paths, gc) -> None:
    # bash: open(O_TRUNC), dup2 to 1, close the original (flush), then cat writes.
    name = unique("cat.raw")
    file = paths.create(103, name, fh=1, flags=CP)
    assert paths.flush(file, 1) is None and images_named(gc, name) == []
    paths.write(file, 1, 0, b"hello\n")
    record = paths.flush(file, 1)
    paths.release(file, 1)
    check_image(gc, api.version, record.id, b"hello\n")
    paths.service.delete(record.id)


def test_qemu_img_like_reopens_replace_the_previous_version(api, paths, gc) -> None:
    name = unique("cycles.raw")
    rdwr = os.O_RDWR
    file = paths.create(104, name, fh=1, flags=os.O_RDWR | os.O_CREAT)
    paths.truncate(file, 0, fh=1)
    paths.flush(file, 1)
    paths.release(file, 1)
    # Second open: header, then a rewrite of the start (going back).
    paths.open(104, None, fh=2, flags=rdwr)
    paths.write(file, 2, 0, b"A" * 65536)
    paths.write(file, 2, 65536, b"B" * 131072)
    assert paths.read(file, 0, 4) == b"AAAA"
    paths.write(file, 2, 0, b"C" * 512)
    first = paths.flush(file, 2)
    paths.release(file, 2)
    # Third open: data out of order, then close.
    paths.open(104, None, fh=3, flags=rdwr)
    assert paths.read(file, 0, 3) == b"CCC"
    paths.write(file, 3, 1 << 20, b"D" * 1000)
    paths.write(file, 3, 65536, b"E" * 10)
    second = paths.flush(file, 3)
    paths.release(file, 3)
    want = bytearray(b"C" * 512 + b"A" * (65536 - 512) + b"B" * 131072)
    want[65536:65546] = b"E" * 10
    want += bytes((1 << 20) - len(want)) + b"D" * 1000
    check_image(gc, api.version, second.id, bytes(want))
    assert paths.janitor.wait_idle(10)
    assert [i.id for i in images_named(gc, name)] == [second.id] != [first.id]
    # O_TRUNC on it is overwriting an active image: EPERM without replace_on_close.
    with pytest.raises(FsError) as refused:
        paths.open(104, None, fh=4, flags=CP)
    assert refused.value.errno == errno.EPERM
    paths.service.delete(second.id)


def test_failed_upload_makes_the_new_file_disappear(glance_v2, config) -> None:
    from glancefs.fs.write import WritePath
    service = ImageService(Client("2", endpoint=glance_v2.endpoint))
    gc = glanceclient_for("2", glance_v2.endpoint)
    paths = WritePath(service, config)
    name = unique("liar.qcow2")
    file = paths.create(105, name, fh=1, flags=CP)
    with pytest.raises(exc.HTTPUnsupportedMediaType):
        for off in range(0, 2 * MiB, WRITE):
            paths.write(file, 1, off, os.urandom(WRITE))
        paths.flush(file, 1)
    with pytest.raises(exc.HTTPUnsupportedMediaType):
        paths.flush(file, 1)          # the close after a failed write says it again
    assert not file.draft
    paths.release(file, 1)
    assert paths.get(105) is None
    assert paths.janitor.wait_idle(10) and images_named(gc, name) == []
    paths.close()


def test_replace_on_close_keeps_the_old_image_until_the_new_one_is_active(
        api, service, gc, config) -> None:
    from glancefs.fs.write import WritePath
    old = service.create(unique("keep.raw"), "raw", "bare", properties={"os_distro": "x"})
    old = service.upload(old.id, b"old data")
    strict = WritePath(service, config)
    with pytest.raises(FsError) as refused:
        strict.open(200, old, fh=1, flags=CP)
    assert refused.value.errno == errno.EPERM
    paths = WritePath(service, config, replace_on_close=True)
    file = paths.open(200, old, fh=1, flags=os.O_WRONLY)   # no O_TRUNC: change in place
    paths.write(file, 1, 4, b"DATA")
    new = paths.flush(file, 1)
    paths.release(file, 1)
    assert new is not None
    check_image(gc, api.version, new.id, b"old DATA")
    assert new.properties.get("os_distro") == "x"
    assert paths.janitor.wait_idle(10)
    assert [i.id for i in images_named(gc, old.name)] == [new.id]
    service.delete(new.id)
    paths.close()
    strict.close()


# -- options and xattr values ----------------------------------------------------------------


def test_write_mount_options() -> None:
    from glancefs.fs.options import MountOptions, apply_option_string
    opts = MountOptions()
    assert (opts.spool_dir, opts.spool_size, opts.write_buffer, opts.replace_on_close) == \
        ("/var/tmp", 8 << 30, 8 * MiB, False)
    apply_option_string(opts, "spool_dir=/srv/spool,spool_size=2G,write_buffer=4M,"
                              "replace_on_close")
    assert (opts.spool_dir, opts.spool_size, opts.write_buffer, opts.replace_on_close) == \
        ("/srv/spool", 2 << 30, 4 * MiB, True)
    apply_option_string(opts, "spool_dir=none")
    assert opts.spool_dir is None
    opts.spool_dir = "/x"
    apply_option_string(opts, "nospool")
    assert opts.spool_dir is None
    assert opts.journal_dir == f"/var/tmp/glancefs-{os.getuid()}/journal"
    apply_option_string(opts, "journal_dir=/srv/journal")
    assert opts.journal_dir == "/srv/journal"
    apply_option_string(opts, "journal_dir=none")
    assert opts.journal_dir is None


def test_field_values_from_xattrs() -> None:
    from glancefs.fs.write import parse_field
    assert parse_field("min_disk", b"20") == 20
    assert parse_field("protected", b"true") is True
    assert parse_field("protected", b"0") is False
    assert parse_field("tags", b'["a", "b,c"]') == ["a", "b,c"]
    assert parse_field("tags", b"a, b") == ["a", "b"]
    assert parse_field("visibility", b"shared\n") == "shared"
    for field, bad in (("min_ram", b"lots"), ("protected", b"maybe"), ("tags", b"[1]")):
        with pytest.raises(FsError) as refused:
            parse_field(field, bad)
        assert refused.value.errno == errno.EINVAL


def test_kept_spools_give_way_and_expire(api, service, gc, tmp_path) -> None:
    from glancefs.fs.write import coordinator as drafts
    now = [0.0]
    config = WriteConfig(spool_dir=str(tmp_path), spool_size=3 * MiB)
    paths = drafts.WritePath(service, config, clock=lambda: now[0])
    first = paths.create(300, unique("kept-a.raw"), fh=1, flags=CP)
    paths.write(first, 1, 0, os.urandom(2 * MiB))
    a = paths.flush(first, 1)
    paths.release(first, 1)
    assert first.spool is not None and paths.budget.used == 2 * MiB
    # A second file needs the room: the kept spool of the closed one goes.
    second = paths.create(301, unique("kept-b.raw"), fh=2, flags=CP)
    paths.write(second, 2, 0, os.urandom(2 * MiB))
    assert first.spool is None
    b = paths.flush(second, 2)
    paths.release(second, 2)
    # Without its spool the first is an active image like any other.
    with pytest.raises(FsError) as refused:
        paths.open(300, None, fh=3, flags=os.O_WRONLY)
    assert refused.value.errno == errno.EPERM
    now[0] += drafts.REOPEN_WINDOW + 1
    assert sorted(paths.expire()) == [300, 301]
    assert paths.files == {} and paths.budget.used == 0
    paths.close()
    for record in (a, b):
        service.delete(record.id)

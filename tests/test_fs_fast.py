"""The fast tier: the filesystem's rules driven in-process.

GlanceFS runs under trio against an in-memory Images service
(glancefs.testing.memory_service) with fake clocks: no root, no kernel
mount, no server, no sleeps. The same behaviours are also covered through
the kernel mount against a real Glance (tests/test_mount_*.py); these run
in seconds. Alone::

    .venv/bin/python -m pytest -q tests/test_fs_fast.py
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import stat
import time
from pathlib import Path

import pytest
import trio

from glancefs.api import exceptions as exc
from glancefs.api import fields
from glancefs.api.service import parse_time
from glancefs.fs import modtime, names, stats
from glancefs.fs.catalog import BY_ID_INODE, BY_ID_NAME, FRESH_WAIT, ROOT_INODE
from glancefs.fs.filesystem import NO_QUOTA_FREE, RENAME_NOREPLACE
from glancefs.fs.reader import LATE_READS
from glancefs.fs.write import REOPEN_WINDOW
from glancefs.testing.memory_service import MemoryImageService
from tests.fast_support import (
    BLOCK,
    CP_FLAGS,
    TOUCH_FLAGS,
    KiB,
    Mount,
    refusal,
    run_mount,
)

TTL = 30.0


def payload(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def service() -> MemoryImageService:
    return MemoryImageService()


# -- names ------------------------------------------------------------------------------


def test_every_image_is_a_file_named_after_it(service: MemoryImageService,
                                              tmp_path: Path) -> None:
    service.add("cirros.qcow2", b"q" * 100)
    service.add("debian.raw", b"d" * 2000)

    async def body(m: Mount) -> None:
        entries = await m.fs.listdir(ROOT_INODE)
        assert entries[0][0] == BY_ID_NAME
        listing = await m.listing()
        assert sorted(listing) == [b"cirros.qcow2", b"debian.raw"]
        assert listing[b"debian.raw"].size == 2000
    run_mount(service, tmp_path, body)


def test_duplicate_names_oldest_keeps_the_bare_name_others_get_the_short_id(
        service: MemoryImageService, tmp_path: Path) -> None:
    older = service.add("dup", b"1", created_at=100.0)
    newer = service.add("dup", b"22", created_at=200.0)

    async def body(m: Mount) -> None:
        assert await m.names() == sorted([b"dup", b"dup~" + newer.id[:8].encode()])
        assert await m.image_id(b"dup") == older.id
        assert (await m.lookup(b"dup~" + newer.id[:8].encode())).size == 2
    run_mount(service, tmp_path, body)


def test_duplicates_whose_short_ids_collide_get_the_full_id(
        service: MemoryImageService, tmp_path: Path) -> None:
    service.add("dup", b"", created_at=100.0)
    second = service.add("dup", b"", created_at=200.0,
                         image_id="12345678-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
    third = service.add("dup", b"", created_at=300.0,
                        image_id="12345678-bbbb-4bbb-8bbb-bbbbbbbbbbbb")

    async def body(m: Mount) -> None:
        assert await m.image_id(b"dup~12345678") == second.id
        assert await m.image_id(b"dup~" + third.id.encode()) == third.id
        assert len(await m.names()) == 3
    run_mount(service, tmp_path, body)


def test_a_file_keeps_its_name_when_an_older_image_of_that_name_appears(
        service: MemoryImageService, tmp_path: Path) -> None:
    holder = service.add("report", b"mine", created_at=200.0)

    async def body(m: Mount) -> None:
        inode = await m.inode(b"report")
        other = service.add("report", b"theirs", created_at=100.0)
        m.advance(TTL)
        assert await m.names() == sorted([b"report", b"report~" + other.id[:8].encode()])
        assert await m.image_id(b"report") == holder.id
        assert await m.inode(b"report") == inode
    run_mount(service, tmp_path, body)


@pytest.mark.parametrize(("name", "shown"), [
    ("a/b", b"a%2Fb"), ("50%", b"50%25"), (None, b"%"), ("", b"%"), (".", b"%2E"),
    ("..", b"%2E%2E"), (".by-id", b"%2Eby-id"), ("caf\u00e9 1", "caf\u00e9 1".encode()),
])
def test_names_a_directory_cannot_hold_are_escaped_reversibly(
        service: MemoryImageService, tmp_path: Path, name: str | None, shown: bytes) -> None:
    record = service.add(name, b"x")

    async def body(m: Mount) -> None:
        assert await m.names() == [shown]
        inode = await m.inode(shown)
        assert await m.fs.getxattr(inode, b"user.glance.id") == record.id.encode()
        if name:
            assert await m.fs.getxattr(inode, b"user.glance.name") == name.encode()
    run_mount(service, tmp_path, body)


def test_a_name_too_long_is_cut_and_ends_in_the_image_id(service: MemoryImageService,
                                                         tmp_path: Path) -> None:
    record = service.add("n" * 300, b"x")

    async def body(m: Mount) -> None:
        [shown] = await m.names()
        assert len(shown) <= names.NAME_MAX
        assert shown.endswith(b"~" + record.id.encode())
        assert (await m.lookup(shown)).inode == (await m.by_id(record.id)).inode
    run_mount(service, tmp_path, body)


# -- .by-id ------------------------------------------------------------------------------


def test_by_id_lists_every_image_by_its_id(service: MemoryImageService,
                                           tmp_path: Path) -> None:
    first = service.add("same", b"1")
    second = service.add("same", b"2")

    async def body(m: Mount) -> None:
        entries = await m.fs.listdir(BY_ID_INODE)
        assert [n for n, _ in entries] == sorted([first.id.encode(), second.id.encode()])
    run_mount(service, tmp_path, body)


def test_by_id_and_the_name_lead_to_the_same_inode(service: MemoryImageService,
                                                   tmp_path: Path) -> None:
    record = service.add("disk", b"data")

    async def body(m: Mount) -> None:
        assert (await m.by_id(record.id)).inode == await m.inode(b"disk")
        assert service.count("get") == 0   # listed: no request
    run_mount(service, tmp_path, body)


def test_by_id_reaches_an_image_not_listed_yet_with_one_get(service: MemoryImageService,
                                                            tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        late = service.add("late", b"12345")
        attr = await m.by_id(late.id)
        assert attr.size == 5
        assert service.count("get", late.id) == 1
        assert await m.names() == []          # not listed before the ttl
        m.advance(TTL)
        assert await m.inode(b"late") == attr.inode
    run_mount(service, tmp_path, body)


@pytest.mark.parametrize("name", [b"00000000-0000-4000-8000-000000000000", b"not-an-id",
                                  "\u00e9".encode()])
def test_by_id_of_an_unknown_id_is_enoent(service: MemoryImageService, tmp_path: Path,
                                          name: bytes) -> None:
    async def body(m: Mount) -> None:
        assert await refusal("lookup", m.fs.lookup(BY_ID_INODE, name)) == errno.ENOENT
    run_mount(service, tmp_path, body)


# -- TTL and refresh ----------------------------------------------------------------------


def test_a_new_image_appears_only_once_the_listing_is_older_than_ttl(
        service: MemoryImageService, tmp_path: Path) -> None:
    service.add("old", b"o")

    async def body(m: Mount) -> None:
        service.add("new", b"n")
        m.advance(TTL - 1)
        assert await m.names() == [b"old"]
        assert service.count("list_images") == 1     # the first listing only
        m.advance(1)
        assert await m.names() == [b"new", b"old"]
        assert service.count("list_images") == 2
    run_mount(service, tmp_path, body)


def test_a_name_not_listed_is_enoent_without_asking_the_server(
        service: MemoryImageService, tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        service.add("new", b"n")
        assert await refusal("lookup", m.lookup(b"new")) == errno.ENOENT
        assert len(service.calls) == 1   # the first listing; no GET, no new listing
    run_mount(service, tmp_path, body)


def test_an_image_deleted_elsewhere_goes_with_the_next_listing(
        service: MemoryImageService, tmp_path: Path) -> None:
    gone = service.add("gone", b"g")
    service.add("kept", b"k")

    async def body(m: Mount) -> None:
        service.remove(gone.id)
        assert await m.names() == [b"gone", b"kept"]   # within the ttl
        m.advance(TTL)
        assert await m.names() == [b"kept"]
        assert await refusal("lookup", m.lookup(b"gone")) == errno.ENOENT
        assert await refusal("lookup", m.by_id(gone.id)) == errno.ENOENT
    run_mount(service, tmp_path, body)


def test_a_failed_refresh_keeps_the_listing_and_retries_with_back_off(
        service: MemoryImageService, tmp_path: Path) -> None:
    service.add("kept", b"k")

    async def body(m: Mount) -> None:
        service.down = True
        m.advance(TTL)
        assert await m.names() == [b"kept"]
        assert service.count("list_images") == 2      # the first, and one that failed
        assert await m.names() == [b"kept"]
        m.advance(0.9)
        assert await m.names() == [b"kept"]
        assert service.count("list_images") == 2      # 1 s before the next try
        m.advance(0.1)
        await m.names()
        assert service.count("list_images") == 3      # failed again: now 2 s
        m.advance(1.9)
        await m.names()
        assert service.count("list_images") == 3
        m.advance(0.1)
        await m.names()
        assert service.count("list_images") == 4      # then 4 s
        service.down = False
        service.add("new", b"n")
        m.advance(3.9)
        assert await m.names() == [b"kept"]
        m.advance(0.1)
        assert await m.names() == [b"kept", b"new"]
        assert service.count("list_images") == 5
        m.advance(TTL - 1)
        await m.names()
        assert service.count("list_images") == 5      # fresh again for a ttl
    run_mount(service, tmp_path, body)


def test_an_image_stays_while_listings_fail(service: MemoryImageService,
                                            tmp_path: Path) -> None:
    record = service.add("kept", b"k")

    async def body(m: Mount) -> None:
        service.remove(record.id)
        service.down = True
        for _ in range(5):
            m.advance(TTL)
            assert (await m.lookup(b"kept")).size == 1
    run_mount(service, tmp_path, body)


def test_metadata_requests_to_a_dead_server_fail_with_ehostunreach(
        service: MemoryImageService, tmp_path: Path) -> None:
    service.add("disk", b"d")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        service.down = True
        assert await refusal("setxattr", m.fs.setxattr(inode, b"user.k", b"v")) == \
            errno.EHOSTUNREACH
        unlisted = "00000000-0000-4000-8000-000000000000"
        assert await refusal("lookup", m.by_id(unlisted)) == errno.EHOSTUNREACH
    run_mount(service, tmp_path, body)


# -- attributes -------------------------------------------------------------------------


def test_an_active_image_is_a_read_only_regular_file_with_its_times(
        service: MemoryImageService, tmp_path: Path) -> None:
    record = service.add("disk", b"x" * 4097)

    async def body(m: Mount) -> None:
        attr = await m.fs.getattr(await m.inode(b"disk"))
        assert attr.mode == stat.S_IFREG | 0o444
        assert attr.size == 4097
        assert attr.mtime_ns == int(parse_time(record.updated_at) * modtime.NS)
        assert attr.ctime_ns == int(parse_time(record.created_at) * modtime.NS)
        assert (attr.uid, attr.gid, attr.nlink) == (1234, 5678, 1)
        assert attr.timeout == TTL
    run_mount(service, tmp_path, body)


def test_an_image_that_is_not_active_has_a_short_attribute_timeout(
        service: MemoryImageService, tmp_path: Path) -> None:
    service.add("queued", None)

    async def body(m: Mount) -> None:
        attr = await m.lookup(b"queued")
        assert attr.size == 0
        assert attr.timeout <= 1.0
    run_mount(service, tmp_path, body)


def test_directories_show_when_the_mount_began_and_are_read_only_on_ro_mounts(
        service: MemoryImageService, tmp_path: Path) -> None:
    before = time.time_ns() // modtime.NS * modtime.NS

    async def body(m: Mount) -> None:
        service.now += 10_000       # changes on the server do not touch directories
        for inode in (ROOT_INODE, BY_ID_INODE):
            attr = await m.fs.getattr(inode)
            assert attr.mode == stat.S_IFDIR | 0o555
            assert before <= attr.mtime_ns <= time.time_ns()
    run_mount(service, tmp_path, body, ro=True)


@pytest.mark.parametrize(("options", "mode"), [
    ({}, 0o444), ({"umask": 0o077}, 0o400), ({"replace_on_close": True}, 0o644),
    ({"replace_on_close": True, "ro": True}, 0o444),
])
def test_file_modes_follow_umask_and_replace_on_close(
        service: MemoryImageService, tmp_path: Path, options: dict[str, object],
        mode: int) -> None:
    service.add("disk", b"d")

    async def body(m: Mount) -> None:
        assert (await m.lookup(b"disk")).mode == stat.S_IFREG | mode
    run_mount(service, tmp_path, body, **options)


@pytest.mark.parametrize(("value", "shown_ns"), [
    ("1600000000.123456789", 1_600_000_000_123_456_789),
    ("1600000000", 1_600_000_000 * modtime.NS),
    ("2020-09-13T12:26:40.5Z", 1_600_000_000 * modtime.NS + 500_000_000),
    ("yesterday", None),    # unreadable: updated_at
])
def test_the_mtime_property_is_the_files_mtime(service: MemoryImageService, tmp_path: Path,
                                               value: str, shown_ns: int | None) -> None:
    record = service.add("disk", b"d", properties={"mtime": value})
    updated_ns = int(parse_time(record.updated_at) * modtime.NS)

    async def body(m: Mount) -> None:
        attr = await m.lookup(b"disk")
        assert attr.mtime_ns == (shown_ns if shown_ns is not None else updated_ns)
    run_mount(service, tmp_path, body)


def test_no_modtime_shows_updated_at_and_ignores_utimes(service: MemoryImageService,
                                                        tmp_path: Path) -> None:
    record = service.add("disk", b"d", properties={"mtime": "1600000000"})

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        assert (await m.fs.getattr(inode)).mtime_ns == \
            int(parse_time(record.updated_at) * modtime.NS)
        await m.fs.set_mtime(inode, 1_500_000_000 * modtime.NS)
        assert service.stored(record.id).properties["mtime"] == "1600000000"
    run_mount(service, tmp_path, body, modtime=False)


def test_utimes_is_kept_in_the_mtime_property_in_one_request(
        service: MemoryImageService, tmp_path: Path) -> None:
    record = service.add("disk", b"d")
    when = 1_650_000_000_987_654_321

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        await m.fs.set_mtime(inode, when)
        assert service.stored(record.id).properties["mtime"] == "1650000000.987654321"
        assert (await m.fs.getattr(inode)).mtime_ns == when
        await m.fs.set_mtime(inode, when)      # rsync sets every time again
        assert (service.count("get"), service.count("set_property")) == (1, 1)
    run_mount(service, tmp_path, body)


def test_getattr_of_an_unknown_inode_is_enoent_and_a_file_is_no_directory(
        service: MemoryImageService, tmp_path: Path) -> None:
    service.add("disk", b"d")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        assert await refusal("getattr", m.fs.getattr(9999)) == errno.ENOENT
        assert await refusal("lookup", m.fs.lookup(inode, b"x")) == errno.ENOTDIR
        assert await refusal("opendir", m.fs.listdir(inode)) == errno.ENOTDIR
    run_mount(service, tmp_path, body)


# -- extended attributes -------------------------------------------------------------------


def test_fields_and_properties_are_extended_attributes(service: MemoryImageService,
                                                       tmp_path: Path) -> None:
    record = service.add("disk", b"12345", properties={"os_distro": "cirros"},
                         tags=["a", "b,c"], min_ram=512)

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        expected = {
            b"user.glance.id": record.id.encode(), b"user.glance.size": b"5",
            b"user.glance.status": b"active", b"user.glance.protected": b"false",
            b"user.glance.min_ram": b"512", b"user.glance.tags": b'["a", "b,c"]',
            b"user.glance.checksum": hashlib.md5(b"12345").hexdigest().encode(),
            b"user.glance.os_hash_algo": b"sha512", b"user.os_distro": b"cirros",
        }
        for name, value in expected.items():
            assert await m.fs.getxattr(inode, name) == value, name
        listed = await m.fs.listxattr(inode)
        assert set(expected) <= set(listed)
        assert b"user.glance.virtual_size" not in listed     # no value: no attribute
        assert await refusal("getxattr", m.fs.getxattr(inode, b"user.glance.virtual_size")) \
            == errno.ENODATA
        assert await refusal("getxattr", m.fs.getxattr(inode, b"user.nope")) == errno.ENODATA
    run_mount(service, tmp_path, body)


def test_the_root_has_the_mount_counters_and_directories_nothing_else(
        service: MemoryImageService, tmp_path: Path) -> None:
    service.add("disk", b"d" * 10)

    async def body(m: Mount) -> None:
        await m.read_at(b"disk", 0, 10)
        assert await m.fs.listxattr(ROOT_INODE) == [stats.XATTR_NAME]
        counters = json.loads(await m.fs.getxattr(ROOT_INODE, stats.XATTR_NAME))
        assert counters["totals"]["bytes"] == 10
        assert await m.fs.listxattr(BY_ID_INODE) == []
        assert await refusal("getxattr", m.fs.getxattr(BY_ID_INODE, b"user.x")) == \
            errno.ENODATA
    run_mount(service, tmp_path, body)


@pytest.mark.parametrize("field", sorted(fields.READ_ONLY_SHOWN | {"name"}))
def test_read_only_fields_refuse_changes_with_eperm(service: MemoryImageService,
                                                    tmp_path: Path, field: str) -> None:
    service.add("disk", b"d")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        name = f"user.glance.{field}".encode()
        assert await refusal("setxattr", m.fs.setxattr(inode, name, b"1")) == errno.EPERM
        assert await refusal("removexattr", m.fs.removexattr(inode, name)) == errno.EPERM
        assert len(service.calls) == 1     # nothing sent
    run_mount(service, tmp_path, body)


def test_setfattr_adds_and_replaces_a_property_and_x_removes_it(
        service: MemoryImageService, tmp_path: Path) -> None:
    record = service.add("disk", b"d")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        await m.fs.setxattr(inode, b"user.os_distro", b"debian")
        assert service.stored(record.id).properties == {"os_distro": "debian"}
        await m.fs.setxattr(inode, b"user.os_distro", b"ubuntu")
        assert await m.fs.getxattr(inode, b"user.os_distro") == b"ubuntu"
        await m.fs.removexattr(inode, b"user.os_distro")
        assert service.stored(record.id).properties == {}
        assert await refusal("getxattr", m.fs.getxattr(inode, b"user.os_distro")) == \
            errno.ENODATA
        assert service.count("set_property") == 2 and service.count("remove_property") == 1
    run_mount(service, tmp_path, body)


def test_a_property_set_elsewhere_survives_a_change_through_the_mount(
        service: MemoryImageService, tmp_path: Path) -> None:
    record = service.add("disk", b"d")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        service.stored(record.id).properties["theirs"] = "1"    # another client
        await m.fs.setxattr(inode, b"user.mine", b"2")
        assert service.stored(record.id).properties == {"theirs": "1", "mine": "2"}
    run_mount(service, tmp_path, body)


@pytest.mark.parametrize(("field", "value", "stored"), [
    ("min_ram", b"512", 512), ("min_disk", b" 20 ", 20), ("protected", b"true", True),
    ("visibility", b"public", "public"), ("tags", b"a, b", ["a", "b"]),
    ("tags", b'["x,y"]', ["x,y"]),
])
def test_writable_fields_change_the_image(service: MemoryImageService, tmp_path: Path,
                                          field: str, value: bytes, stored: object) -> None:
    record = service.add("disk", b"d")

    async def body(m: Mount) -> None:
        await m.fs.setxattr(await m.inode(b"disk"), f"user.glance.{field}".encode(), value)
        assert getattr(service.stored(record.id), field) == stored
    run_mount(service, tmp_path, body)


@pytest.mark.parametrize(("field", "value"), [
    ("min_ram", b"lots"), ("protected", b"maybe"), ("tags", b"[1, 2]"),
    ("visibility", b"everyone"),
])
def test_malformed_field_values_are_einval(service: MemoryImageService, tmp_path: Path,
                                           field: str, value: bytes) -> None:
    service.add("disk", b"d")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        name = f"user.glance.{field}".encode()
        assert await refusal("setxattr", m.fs.setxattr(inode, name, value)) == errno.EINVAL
    run_mount(service, tmp_path, body)


@pytest.mark.parametrize("name", [b"security.selinux", b"trusted.x", b"system.posix_acl_access",
                                  b"user.", b"\xff"])
def test_only_user_attributes_can_be_changed(service: MemoryImageService, tmp_path: Path,
                                             name: bytes) -> None:
    service.add("disk", b"d")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        assert await refusal("setxattr", m.fs.setxattr(inode, name, b"v")) == errno.EOPNOTSUPP
        assert await refusal("removexattr", m.fs.removexattr(inode, name)) == \
            errno.EOPNOTSUPP
    run_mount(service, tmp_path, body)


def test_a_core_field_given_as_a_property_is_eperm(service: MemoryImageService,
                                                   tmp_path: Path) -> None:
    service.add("disk", b"d")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        assert await refusal("setxattr", m.fs.setxattr(inode, b"user.status", b"x")) == \
            errno.EPERM
    run_mount(service, tmp_path, body)


def test_a_property_glance_reserves_is_eperm(service: MemoryImageService,
                                            tmp_path: Path) -> None:
    service.add("disk", b"d", properties={"os_glance_import_task": "t-1"})

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        assert await m.fs.getxattr(inode, b"user.os_glance_import_task") == b"t-1"
        assert await refusal("setxattr", m.fs.setxattr(
            inode, b"user.os_glance_import_task", b"t-2")) == errno.EPERM
        assert service.count("set_property") == 0
    run_mount(service, tmp_path, body)


def test_cp_a_onto_a_new_file_skips_what_glance_sets_and_keeps_the_rest(
        service: MemoryImageService, tmp_path: Path) -> None:
    """cp -a sets every attribute of its source on the file it writes: the fields
    and properties Glance sets are skipped without an error; the others are kept."""
    data = payload(100 * KiB)
    copied = {b"user.glance.id": b"0000", b"user.glance.status": b"active",
              b"user.glance.size": b"5", b"user.glance.owner": b"someone",
              b"user.glance.name": b"the-source", b"user.glance.disk_format": b"raw",
              b"user.glance.min_ram": b"512", b"user.os_distro": b"debian",
              b"user.os_glance_import_task": b"t-1"}

    async def body(m: Mount) -> None:
        fh, attr = await m.fs.create(ROOT_INODE, b"copy.raw", CP_FLAGS)
        await m.fs.write(fh, 0, data)
        for name, value in copied.items():
            await m.fs.setxattr(attr.inode, name, value)
        await m.fs.flush(fh)
        await m.fs.release(fh)
        record = next(r for r in service.list_images() if r.name == "copy.raw")
        assert (record.size, record.min_ram) == (len(data), 512)
        assert record.properties.get("os_distro") == "debian"
        assert "os_glance_import_task" not in record.properties
    run_mount(service, tmp_path, body)


def test_removing_a_missing_property_is_enodata(service: MemoryImageService,
                                                tmp_path: Path) -> None:
    service.add("disk", b"d")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        assert await refusal("removexattr", m.fs.removexattr(inode, b"user.nope")) == \
            errno.ENODATA
        assert service.count("remove_property") == 0
    run_mount(service, tmp_path, body)


def test_directories_take_no_attributes(service: MemoryImageService, tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        for inode in (ROOT_INODE, BY_ID_INODE):
            assert await refusal("setxattr", m.fs.setxattr(inode, b"user.k", b"v")) == \
                errno.EPERM
    run_mount(service, tmp_path, body)


@pytest.mark.parametrize(("error", "number"), [
    (exc.HTTPForbidden("policy", code=403), errno.EPERM),
    (exc.HTTPBadRequest("bad", code=400), errno.EINVAL),
    (exc.HTTPOverLimit("property quota exceeded", code=413), errno.ENOSPC),
    (exc.HTTPConflict("busy", code=409), errno.EBUSY),
    (exc.HTTPServiceUnavailable("later", code=503), errno.EAGAIN),
    (exc.DeadlineExceeded("no answer within 10 s", method="PATCH"), errno.ETIMEDOUT),
])
def test_server_refusals_of_a_setfattr_become_errno(service: MemoryImageService,
                                                    tmp_path: Path, error: Exception,
                                                    number: int) -> None:
    record = service.add("disk", b"d")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        service.fail_next("set_property", error)
        assert await refusal("setxattr", m.fs.setxattr(inode, b"user.k", b"v")) == number
        assert service.stored(record.id).properties == {}
    run_mount(service, tmp_path, body)


# -- opening and reading -----------------------------------------------------------------------


@pytest.mark.parametrize(("status", "number"), [
    ("queued", errno.EAGAIN), ("saving", errno.EAGAIN), ("importing", errno.EAGAIN),
    ("deactivated", errno.EACCES), ("killed", errno.EIO),
])
def test_an_image_that_is_not_active_is_listed_but_does_not_open(
        service: MemoryImageService, tmp_path: Path, status: str, number: int) -> None:
    service.add("disk", None, status=status)

    async def body(m: Mount) -> None:
        assert await m.names() == [b"disk"]
        inode = await m.inode(b"disk")
        assert await refusal("open", m.fs.open(inode, os.O_RDONLY)) == number
    run_mount(service, tmp_path, body)


def test_open_asks_again_about_an_image_listed_as_not_active(
        service: MemoryImageService, tmp_path: Path) -> None:
    record = service.add("disk", None)

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        stored = service.stored(record.id)
        stored.data, stored.status = b"now here", "active"
        stored.checksum = hashlib.md5(stored.data).hexdigest()
        fh, keep = await m.fs.open(inode, os.O_RDONLY)
        assert keep
        assert bytes(await m.fs.read(fh, 0, 100)) == b"now here"
        await m.fs.release(fh)
    run_mount(service, tmp_path, body)


def test_open_of_an_image_deleted_since_the_listing_is_enoent(
        service: MemoryImageService, tmp_path: Path) -> None:
    record = service.add("disk", None)

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        service.remove(record.id)
        assert await refusal("open", m.fs.open(inode, os.O_RDONLY)) == errno.ENOENT
    run_mount(service, tmp_path, body)


def test_reads_at_offsets_return_those_bytes(service: MemoryImageService,
                                             tmp_path: Path) -> None:
    data = payload(3 * BLOCK + 1000)
    service.add("disk", data)

    async def body(m: Mount) -> None:
        fh, _keep = await m.fs.open(await m.inode(b"disk"), os.O_RDONLY)
        for offset, size in [(BLOCK + 5, 100), (BLOCK - 10, 20), (0, 10),
                             (2 * BLOCK, BLOCK + 500), (len(data) - 10, 4096),
                             (len(data), 10), (len(data) + 5, 10)]:
            got = bytes(await m.fs.read(fh, offset, size))
            assert got == data[offset:offset + size], (offset, size)
        await m.fs.release(fh)
    run_mount(service, tmp_path, body)


def test_random_reads_fetch_only_the_blocks_they_touch(service: MemoryImageService,
                                                       tmp_path: Path) -> None:
    data = payload(8 * BLOCK)
    record = service.add("disk", data)

    async def body(m: Mount) -> None:
        assert await m.read_at(b"disk", 5 * BLOCK + 3, 10) == data[5 * BLOCK + 3:][:10]
        counted = await m.counters(record.id)
        assert (counted["gets"], counted["bytes"]) == (1, BLOCK)
    run_mount(service, tmp_path, body)


def test_a_whole_read_in_order_returns_the_image_and_is_verified(
        service: MemoryImageService, tmp_path: Path) -> None:
    data = payload(5 * BLOCK + 123)
    record = service.add("disk", data)

    async def body(m: Mount) -> None:
        assert await m.read_all(b"disk") == data
        assert (await m.counters(record.id))["verified"] == 1
    run_mount(service, tmp_path, body)


def test_a_whole_read_of_data_that_does_not_match_its_hash_fails_with_eio(
        service: MemoryImageService, tmp_path: Path) -> None:
    data = payload(3 * BLOCK)
    record = service.add("disk", data)
    service.tamper(record.id, data[:-1] + b"\0")

    async def body(m: Mount) -> None:
        assert await refusal("read", m.read_all(b"disk")) == errno.EIO
        assert (await m.counters(record.id))["mismatches"] == 1
    run_mount(service, tmp_path, body)


def test_a_read_the_server_fails_is_eio(service: MemoryImageService, tmp_path: Path) -> None:
    service.add("disk", payload(BLOCK))

    async def body(m: Mount) -> None:
        service.fail_next("read", exc.HTTPServiceUnavailable("busy", code=503))
        assert await refusal("read", m.read_at(b"disk", 10, 10)) == errno.EIO
    run_mount(service, tmp_path, body)


def test_a_closed_handle_cannot_be_read(service: MemoryImageService, tmp_path: Path) -> None:
    service.add("disk", b"data")

    async def body(m: Mount) -> None:
        fh, _keep = await m.fs.open(await m.inode(b"disk"), os.O_RDONLY)
        await m.fs.release(fh)
        assert await refusal("read", m.fs.read(fh, 0, 4)) == errno.EBADF
    run_mount(service, tmp_path, body)


def test_a_v1_server_is_read_from_the_start_never_with_ranges(tmp_path: Path) -> None:
    service = MemoryImageService(version="1")
    data = payload(4 * BLOCK + 7)
    service.add("disk", data)

    async def body(m: Mount) -> None:
        assert await m.read_at(b"disk", 2 * BLOCK + 1, 100) == data[2 * BLOCK + 1:][:100]
        assert await m.read_all(b"disk") == data
        assert not service.ranges_ignored
    run_mount(service, tmp_path, body)


# -- writing --------------------------------------------------------------------------------


def test_cp_makes_an_active_image_with_the_bytes_and_checksum(
        service: MemoryImageService, tmp_path: Path) -> None:
    data = payload(200 * KiB + 3)

    async def body(m: Mount) -> None:
        inode = await m.cp(b"new.img", data)
        [image] = service.named("new.img")
        assert (image.status, image.data) == ("active", data)
        assert image.checksum == hashlib.md5(data).hexdigest()
        assert image.os_hash_value == hashlib.sha512(data).hexdigest()
        assert (image.disk_format, image.container_format) == ("raw", "bare")
        attr = await m.lookup(b"new.img")
        assert (attr.inode, attr.size) == (inode, len(data))
        assert await m.read_all(b"new.img") == data
    run_mount(service, tmp_path, body)


def test_a_file_being_written_is_shown_with_its_size_so_far(service: MemoryImageService,
                                                            tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        fh, attr = await m.fs.create(ROOT_INODE, b"big", CP_FLAGS)
        await m.fs.write(fh, 0, b"x" * 1000)
        listing = await m.listing()
        assert listing[b"big"].size == 1000 and listing[b"big"].inode == attr.inode
        assert listing[b"big"].mode == stat.S_IFREG | 0o644
        assert await m.fs.getxattr(attr.inode, b"user.glance.name") == b"big"
        await m.fs.flush(fh)
        await m.fs.release(fh)
        assert (await m.lookup(b"big")).inode == attr.inode
    run_mount(service, tmp_path, body)


def test_a_file_being_written_reads_back_what_was_written(service: MemoryImageService,
                                                          tmp_path: Path) -> None:
    data = payload(100 * KiB)

    async def body(m: Mount) -> None:
        fh, attr = await m.fs.create(ROOT_INODE, b"f", CP_FLAGS)
        await m.fs.write(fh, 0, data)
        reader, keep = await m.fs.open(attr.inode, os.O_RDONLY)
        assert not keep            # its data may still change: no page cache kept
        assert bytes(await m.fs.read(reader, 1000, 50)) == data[1000:1050]
        await m.fs.release(reader)
        await m.fs.flush(fh)
        await m.fs.release(fh)
    run_mount(service, tmp_path, body)


def test_a_created_name_that_exists_is_eexist(service: MemoryImageService,
                                              tmp_path: Path) -> None:
    service.add("disk", b"d")

    async def body(m: Mount) -> None:
        assert await refusal("create", m.fs.create(ROOT_INODE, b"disk", CP_FLAGS)) == \
            errno.EEXIST
    run_mount(service, tmp_path, body)


def test_a_created_escaped_name_makes_the_unescaped_image_name(
        service: MemoryImageService, tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        await m.cp(b"a%2Fb", b"data")
        assert [i.name for i in service.images.values()] == ["a/b"]
        m.advance(TTL)
        assert await m.names() == [b"a%2Fb"]
    run_mount(service, tmp_path, body)


def test_touch_makes_a_file_but_no_image(service: MemoryImageService, tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        fh, _attr = await m.fs.create(ROOT_INODE, b"empty", TOUCH_FLAGS)
        await m.fs.flush(fh)
        await m.fs.release(fh)
        assert (await m.lookup(b"empty")).size == 0
        assert service.images == {}
    run_mount(service, tmp_path, body)


def test_truncate_s_then_dd_conv_notrunc_makes_one_image(service: MemoryImageService,
                                                         tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        fh, attr = await m.fs.create(ROOT_INODE, b"disk.raw", TOUCH_FLAGS)
        await m.fs.release(fh)
        await m.fs.set_size(attr.inode, 200 * KiB, None)       # truncate -s 200K
        assert (await m.lookup(b"disk.raw")).size == 200 * KiB
        assert service.images == {}
        fh = await m.fs.open_write(attr.inode, os.O_WRONLY)     # dd conv=notrunc
        await m.fs.write(fh, 0, b"boot")
        await m.fs.flush(fh)
        await m.fs.release(fh)
        [image] = service.images.values()
        assert image.data == b"boot" + bytes(200 * KiB - 4)
        assert service.count("create") == 1
    run_mount(service, tmp_path, body)


def test_cp_of_an_empty_file_makes_an_empty_image(service: MemoryImageService,
                                                  tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        await m.cp(b"empty", b"")
        [image] = service.named("empty")
        assert (image.status, image.data) == ("active", b"")
    run_mount(service, tmp_path, body)


def test_attributes_set_before_the_data_go_up_with_the_image(
        service: MemoryImageService, tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        fh, attr = await m.fs.create(ROOT_INODE, b"disk", CP_FLAGS)
        await m.fs.setxattr(attr.inode, b"user.os_distro", b"debian")
        await m.fs.setxattr(attr.inode, b"user.glance.min_ram", b"256")
        await m.fs.setxattr(attr.inode, b"user.glance.disk_format", b"qcow2")
        await m.fs.write(fh, 0, b"not really qcow2")
        await m.fs.flush(fh)
        await m.fs.release(fh)
        [image] = service.named("disk")
        assert image.properties == {"os_distro": "debian"}
        assert (image.min_ram, image.disk_format) == (256, "qcow2")
    run_mount(service, tmp_path, body)


def test_writes_that_skip_ahead_and_ftruncate_up_are_zeros(service: MemoryImageService,
                                                           tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        fh, attr = await m.fs.create(ROOT_INODE, b"sparse", CP_FLAGS)
        await m.fs.write(fh, 0, b"head")
        await m.fs.write(fh, 100 * KiB, b"tail")
        await m.fs.set_size(attr.inode, 200 * KiB, fh)
        await m.fs.flush(fh)
        await m.fs.release(fh)
        expected = b"head" + bytes(100 * KiB - 4) + b"tail" + bytes(100 * KiB - 4)
        assert service.named("sparse")[0].data == expected
    run_mount(service, tmp_path, body)


def test_a_writer_that_goes_back_gets_one_image_uploaded_from_the_spool(
        service: MemoryImageService, tmp_path: Path) -> None:
    data = payload(150 * KiB)

    async def body(m: Mount) -> None:
        fh, _attr = await m.fs.create(ROOT_INODE, b"conv", CP_FLAGS)
        await m.fs.write(fh, 0, data)
        await m.fs.write(fh, 10, b"REWRITTEN")        # qemu-img fixes its header
        await m.fs.flush(fh)
        await m.fs.release(fh)
        expected = data[:10] + b"REWRITTEN" + data[19:]
        assert [i.data for i in service.images.values()] == [expected]
        # The stream may or may not have made its image before the write went
        # back; if it did, that image is gone.
        assert service.count("delete") == service.count("create") - 1
    run_mount(service, tmp_path, body)


def test_going_back_without_a_spool_is_espipe(service: MemoryImageService,
                                              tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        fh, _attr = await m.fs.create(ROOT_INODE, b"conv", CP_FLAGS)
        await m.fs.write(fh, 0, payload(100 * KiB))
        assert await refusal("write", m.fs.write(fh, 10, b"back")) == errno.ESPIPE
        await m.fs.flush(fh)
        await m.fs.release(fh)
    run_mount(service, tmp_path, body, spool_dir=None)


@pytest.mark.parametrize(("error", "number"), [
    (exc.HTTPOverLimit("exceeds the storage quota", code=413), errno.ENOSPC),
    (exc.HTTPOverLimit("Image size exceeds image_size_cap", code=413), errno.EFBIG),
    (exc.HTTPUnsupportedMediaType("qcow2 expected", code=415), errno.EMEDIUMTYPE),
    (exc.CommunicationError("connection reset", method="PUT"), errno.EIO),
])
def test_a_failed_upload_fails_cp_and_leaves_no_image(service: MemoryImageService,
                                                      tmp_path: Path, error: Exception,
                                                      number: int) -> None:
    async def body(m: Mount) -> None:
        service.fail_next("upload", error)
        assert await refusal("flush", m.cp(b"new", payload(100 * KiB))) == number
        assert service.images == {}
        assert await m.names() == []
    run_mount(service, tmp_path, body)


def test_cp_over_the_storage_quota_is_enospc(service: MemoryImageService,
                                             tmp_path: Path) -> None:
    service.add("disk", b"d" * 1000)
    service.quota = 1500

    async def body(m: Mount) -> None:
        assert await refusal("flush", m.cp(b"big", b"b" * 1000)) == errno.ENOSPC
        assert [i.name for i in service.images.values()] == ["disk"]
    run_mount(service, tmp_path, body)


def test_cp_again_after_a_failed_cp_works(service: MemoryImageService,
                                          tmp_path: Path) -> None:
    data = payload(100 * KiB)

    async def body(m: Mount) -> None:
        service.fail_next("upload", exc.HTTPServiceUnavailable("busy", code=503))
        assert await refusal("flush", m.cp(b"retry", data)) == errno.EAGAIN
        inode = await m.cp(b"retry", data)
        [image] = service.images.values()
        assert (image.name, image.data) == ("retry", data)
        assert await m.inode(b"retry") == inode
    run_mount(service, tmp_path, body)


def test_an_upload_the_server_stored_wrongly_fails_with_eio(service: MemoryImageService,
                                                            tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        service.corrupt_next_upload()
        assert await refusal("flush", m.cp(b"new", payload(10 * KiB))) == errno.EIO
        assert service.images == {}
    run_mount(service, tmp_path, body)


def test_a_half_made_image_is_deleted_once_the_server_takes_the_delete(
        service: MemoryImageService, tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        service.fail_next("upload", exc.CommunicationError("reset", method="PUT"))
        service.fail_next("delete", exc.CommunicationError("refused", method="DELETE"))
        assert await refusal("flush", m.cp(b"new", payload(10 * KiB))) == errno.EIO
        assert m.fs.writes.janitor.wait_idle(5.0)
        assert service.images == {}
        assert service.count("delete") == 2
    run_mount(service, tmp_path, body)


def test_an_active_image_cannot_be_opened_for_writing(service: MemoryImageService,
                                                      tmp_path: Path) -> None:
    service.add("disk", b"d")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        assert await refusal("open", m.fs.open(inode, os.O_WRONLY)) == errno.EPERM
        assert await refusal("open", m.fs.open(inode, os.O_RDWR | os.O_TRUNC)) == errno.EPERM
    run_mount(service, tmp_path, body)


def test_replace_on_close_uploads_a_new_image_and_deletes_the_old_one_after(
        service: MemoryImageService, tmp_path: Path) -> None:
    old = service.add("disk", b"old data", properties={"os_distro": "cirros"})

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        fh = await m.fs.open_write(inode, os.O_WRONLY | os.O_TRUNC)
        await m.fs.write(fh, 0, b"new data!")
        await m.fs.flush(fh)
        await m.fs.release(fh)
        [image] = service.images.values()
        assert image.id != old.id
        assert (image.data, image.properties) == (b"new data!", {"os_distro": "cirros"})
        attr = await m.lookup(b"disk")
        assert (attr.inode, attr.size) == (inode, 9)
    run_mount(service, tmp_path, body, replace_on_close=True)


def test_truncating_an_image_with_replace_on_close_replaces_it_with_an_empty_one(
        service: MemoryImageService, tmp_path: Path) -> None:
    old = service.add("disk", b"old data")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        fh = await m.fs.open_write(inode, os.O_WRONLY | os.O_TRUNC)   # : > disk
        await m.fs.flush(fh)
        assert list(service.images) == [old.id]    # a flush before any write sends nothing
        await m.fs.release(fh)
        [image] = service.images.values()
        assert (image.name, image.data) == ("disk", b"")
        assert (await m.fs.getattr(inode)).size == 0
    run_mount(service, tmp_path, body, replace_on_close=True)



# -- unlink, rename ----------------------------------------------------------------------------


def test_rm_deletes_the_image(service: MemoryImageService, tmp_path: Path) -> None:
    record = service.add("disk", b"d")

    async def body(m: Mount) -> None:
        await m.fs.unlink(ROOT_INODE, b"disk")
        assert record.id not in service.images
        assert await m.names() == []
        assert await refusal("lookup", m.lookup(b"disk")) == errno.ENOENT
    run_mount(service, tmp_path, body)


def test_rm_of_a_protected_image_is_eperm(service: MemoryImageService,
                                          tmp_path: Path) -> None:
    record = service.add("disk", b"d", protected=True)

    async def body(m: Mount) -> None:
        assert await refusal("unlink", m.fs.unlink(ROOT_INODE, b"disk")) == errno.EPERM
        assert record.id in service.images
        assert await m.names() == [b"disk"]
    run_mount(service, tmp_path, body)


def test_rm_of_a_missing_name_is_enoent_and_in_by_id_eperm(service: MemoryImageService,
                                                           tmp_path: Path) -> None:
    record = service.add("disk", b"d")

    async def body(m: Mount) -> None:
        assert await refusal("unlink", m.fs.unlink(ROOT_INODE, b"nope")) == errno.ENOENT
        assert await refusal("unlink", m.fs.unlink(BY_ID_INODE, record.id.encode())) == \
            errno.EPERM
    run_mount(service, tmp_path, body)


@pytest.mark.parametrize(("error", "number"), [
    (exc.HTTPForbidden("policy", code=403), errno.EPERM),
    (exc.HTTPConflict("in use", code=409), errno.EBUSY),
    (exc.HTTPNotFound("gone", code=404), errno.ENOENT),
    (exc.CommunicationError("refused", method="DELETE"), errno.EHOSTUNREACH),
])
def test_server_refusals_of_an_rm_become_errno(service: MemoryImageService, tmp_path: Path,
                                               error: Exception, number: int) -> None:
    service.add("disk", b"d")

    async def body(m: Mount) -> None:
        service.fail_next("delete", error)
        assert await refusal("unlink", m.fs.unlink(ROOT_INODE, b"disk")) == number
        assert await m.names() == [b"disk"]
    run_mount(service, tmp_path, body)


def test_rm_of_a_file_being_written_deletes_what_it_made(service: MemoryImageService,
                                                         tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        await m.cp(b"made", b"data")
        await m.fs.unlink(ROOT_INODE, b"made")
        assert service.images == {}
        assert await m.names() == []
    run_mount(service, tmp_path, body)


def test_mv_renames_the_image_and_keeps_the_inode(service: MemoryImageService,
                                                  tmp_path: Path) -> None:
    record = service.add("old", b"d")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"old")
        await m.fs.rename(ROOT_INODE, b"old", ROOT_INODE, b"a%2Fb", 0)
        assert service.stored(record.id).name == "a/b"
        assert await m.names() == [b"a%2Fb"]
        assert await m.inode(b"a%2Fb") == inode
        m.advance(TTL)
        assert await m.names() == [b"a%2Fb"]
    run_mount(service, tmp_path, body)


def test_mv_over_an_existing_file_replaces_it(service: MemoryImageService,
                                              tmp_path: Path) -> None:
    source = service.add("new", b"new")
    target = service.add("current", b"old")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"new")
        await m.fs.rename(ROOT_INODE, b"new", ROOT_INODE, b"current", 0)
        assert list(service.images) == [source.id]
        assert target.id not in service.images
        assert service.stored(source.id).name == "current"
        assert await m.names() == [b"current"]
        assert await m.inode(b"current") == inode
    run_mount(service, tmp_path, body)


def test_mv_noreplace_over_an_existing_file_is_eexist(service: MemoryImageService,
                                                      tmp_path: Path) -> None:
    service.add("a", b"a")
    service.add("b", b"b")

    async def body(m: Mount) -> None:
        assert await refusal("rename", m.fs.rename(ROOT_INODE, b"a", ROOT_INODE, b"b",
                                                   RENAME_NOREPLACE)) == errno.EEXIST
        assert sorted(i.name or "" for i in service.images.values()) == ["a", "b"]
    run_mount(service, tmp_path, body)


def test_mv_over_a_protected_image_is_eperm_and_changes_nothing(
        service: MemoryImageService, tmp_path: Path) -> None:
    service.add("a", b"a")
    service.add("b", b"b", protected=True)

    async def body(m: Mount) -> None:
        assert await refusal("rename", m.fs.rename(ROOT_INODE, b"a", ROOT_INODE, b"b", 0)) \
            == errno.EPERM
        assert sorted(i.name or "" for i in service.images.values()) == ["a", "b"]
        assert service.count("rename") == 0
    run_mount(service, tmp_path, body)


# -- the filesystem ---------------------------------------------------------------------------


def test_df_shows_usage_and_quota(service: MemoryImageService, tmp_path: Path) -> None:
    service.add("disk", b"d" * 10_000)
    service.quota = 1_000_000

    async def body(m: Mount) -> None:
        values = await m.fs.statfs()
        assert values["f_frsize"] == 4096
        assert values["f_blocks"] == 1_000_000 // 4096
        assert values["f_bfree"] == values["f_bavail"] == 1_000_000 // 4096 - 3
        assert values["f_files"] == 1 + 1_000_000
    run_mount(service, tmp_path, body)


def test_df_without_quota_or_usage_counts_listed_sizes(tmp_path: Path) -> None:
    service = MemoryImageService(version="1")
    service.add("disk", b"d" * 5000)

    async def body(m: Mount) -> None:
        values = await m.fs.statfs()
        assert values["f_blocks"] - values["f_bfree"] == 2
        assert values["f_bfree"] == NO_QUOTA_FREE // 4096
        assert service.count("usage") == 0
    run_mount(service, tmp_path, body)


def test_df_asks_for_usage_once_per_ttl(service: MemoryImageService, tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        await m.fs.statfs()
        await m.fs.statfs()
        assert service.count("usage") == 1
        m.advance(TTL)
        await m.fs.statfs()
        assert service.count("usage") == 2
    run_mount(service, tmp_path, body)


def test_df_answers_from_the_listing_when_usage_fails(service: MemoryImageService,
                                                      tmp_path: Path) -> None:
    service.add("disk", b"d" * 8192)

    async def body(m: Mount) -> None:
        service.fail_next("usage", exc.HTTPServiceUnavailable("busy", code=503))
        values = await m.fs.statfs()
        assert values["f_blocks"] - values["f_bfree"] == 2
    run_mount(service, tmp_path, body)


def test_a_read_only_mount_refuses_every_change_with_erofs(service: MemoryImageService,
                                                           tmp_path: Path) -> None:
    service.add("disk", b"d")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        assert await refusal("create", m.fs.create(ROOT_INODE, b"n", CP_FLAGS)) == errno.EROFS
        assert await refusal("setxattr", m.fs.setxattr(inode, b"user.k", b"v")) == \
            errno.EROFS
        assert await refusal("unlink", m.fs.unlink(ROOT_INODE, b"disk")) == errno.EROFS
        assert await refusal("rename", m.fs.rename(ROOT_INODE, b"disk", ROOT_INODE, b"x",
                                                   0)) == errno.EROFS
        await m.fs.set_mtime(inode, 0)     # ignored
        assert len(service.calls) == 1
    run_mount(service, tmp_path, body, ro=True)


@pytest.mark.parametrize("name", [b".", b"..", b".by-id", b"a/b", b"n" * 256])
def test_names_a_file_cannot_be_created_under(service: MemoryImageService, tmp_path: Path,
                                              name: bytes) -> None:
    async def body(m: Mount) -> None:
        number = await refusal("create", m.fs.create(ROOT_INODE, name, CP_FLAGS))
        assert number in (errno.EINVAL, errno.ENAMETOOLONG)
        assert service.images == {}
    run_mount(service, tmp_path, body)


# -- a server that does not answer -------------------------------------------------------------


def test_ls_answers_from_the_listing_while_a_refresh_stalls(service: MemoryImageService,
                                                            tmp_path: Path) -> None:
    service.add("kept", b"k")

    async def body(m: Mount) -> None:
        release = service.stall_next("list_images")
        m.trio_clock.autojump_threshold = 0     # time passes whenever all wait
        try:
            m.advance(TTL)
            started = trio.current_time()
            assert await m.names() == [b"kept"]
            assert trio.current_time() - started <= FRESH_WAIT + 1e-9
            assert await m.names() == [b"kept"]   # later callers do not wait at all
            assert trio.current_time() - started <= FRESH_WAIT + 1e-9
        finally:
            release.set()
    run_mount(service, tmp_path, body)


def test_a_metadata_request_the_server_never_answers_is_etimedout_within_the_deadline(
        service: MemoryImageService, tmp_path: Path) -> None:
    service.add("disk", b"d")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        release = service.stall_next("get")
        m.trio_clock.autojump_threshold = 0
        try:
            started = trio.current_time()
            number = await refusal("setxattr", m.fs.setxattr(inode, b"user.k", b"v"))
            assert trio.current_time() - started <= m.fs.options.metadata_timeout + 1.0
        finally:
            release.set()
        assert number == errno.ETIMEDOUT
    run_mount(service, tmp_path, body)


def test_callers_at_the_same_time_share_one_refresh(service: MemoryImageService,
                                                    tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        service.add("new", b"n")
        m.advance(TTL)
        seen: list[list[bytes]] = []

        async def ls() -> None:
            seen.append(await m.names())

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(ls)
        assert seen == [[b"new"]] * 5
        assert service.count("list_images") == 2
    run_mount(service, tmp_path, body)


# -- more of the write path ---------------------------------------------------------------------


def test_a_written_file_reopened_soon_goes_on_and_its_next_close_replaces_the_image(
        service: MemoryImageService, tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        inode = await m.cp(b"out.qcow2", b"A" * 1000)
        [first] = service.images
        m.advance(30)                                # within the reopen window
        fh = await m.fs.open_write(inode, os.O_RDWR)
        await m.fs.write(fh, 0, b"B" * 10)           # qemu-img goes back to its header
        await m.fs.flush(fh)
        await m.fs.release(fh)
        [image] = service.images.values()
        assert image.id != first
        assert image.data == b"B" * 10 + b"A" * 990
        assert await m.inode(b"out.qcow2") == inode
    run_mount(service, tmp_path, body)


def test_after_the_reopen_window_a_written_file_is_an_ordinary_image(
        service: MemoryImageService, tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        inode = await m.cp(b"out", b"data")
        m.advance(REOPEN_WINDOW)
        assert await m.inode(b"out") == inode
        assert await refusal("open", m.fs.open(inode, os.O_RDWR)) == errno.EPERM
        assert len(service.images) == 1
    run_mount(service, tmp_path, body)


def test_truncating_an_active_image_is_eperm_and_to_its_size_a_no_op(
        service: MemoryImageService, tmp_path: Path) -> None:
    record = service.add("disk", b"12345")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        await m.fs.set_size(inode, 5, None)
        assert await refusal("setattr", m.fs.set_size(inode, 0, None)) == errno.EPERM
        assert service.stored(record.id).data == b"12345"
    run_mount(service, tmp_path, body)


def test_utimes_on_a_file_being_written_goes_up_with_the_upload(
        service: MemoryImageService, tmp_path: Path) -> None:
    when = 1_600_000_000 * modtime.NS

    async def body(m: Mount) -> None:
        fh, attr = await m.fs.create(ROOT_INODE, b"f", CP_FLAGS)
        await m.fs.write(fh, 0, b"data")
        await m.fs.set_mtime(attr.inode, when)
        assert (await m.fs.getattr(attr.inode)).mtime_ns == when
        await m.fs.flush(fh)
        await m.fs.release(fh)
        [image] = service.images.values()
        assert image.properties == {"mtime": modtime.format_ns(when)}
        assert service.count("set_property") == 0
        assert (await m.fs.getattr(attr.inode)).mtime_ns == when
    run_mount(service, tmp_path, body)


def test_rsync_temp_file_then_utimes_then_rename_keeps_the_time(
        service: MemoryImageService, tmp_path: Path) -> None:
    when = 1_600_000_000_5 * modtime.NS // 10

    async def body(m: Mount) -> None:
        inode = await m.cp(b".f.XyZ12", b"payload")
        await m.fs.set_mtime(inode, when)
        await m.fs.rename(ROOT_INODE, b".f.XyZ12", ROOT_INODE, b"f", 0)
        [image] = service.images.values()
        assert (image.name, image.data) == ("f", b"payload")
        assert image.properties["mtime"] == modtime.format_ns(when)
        attr = await m.lookup(b"f")
        assert (attr.inode, attr.size, attr.mtime_ns) == (inode, 7, when)
        assert await m.names() == [b"f"]
    run_mount(service, tmp_path, body)


def test_a_file_removed_while_open_for_writing_takes_no_more_writes(
        service: MemoryImageService, tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        fh, _attr = await m.fs.create(ROOT_INODE, b"f", CP_FLAGS)
        await m.fs.write(fh, 0, payload(100 * KiB))
        await m.fs.unlink(ROOT_INODE, b"f")
        assert await refusal("write", m.fs.write(fh, 100 * KiB, b"more")) == errno.ESTALE
        await m.fs.release(fh)
        assert service.images == {}
        assert await m.names() == []
    run_mount(service, tmp_path, body)


def test_a_file_that_never_got_data_is_removed_without_a_request(
        service: MemoryImageService, tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        fh, _attr = await m.fs.create(ROOT_INODE, b"touched", TOUCH_FLAGS)
        await m.fs.release(fh)
        await m.fs.unlink(ROOT_INODE, b"touched")
        assert await m.names() == []
        assert [c.method for c in service.calls] == ["list_images"]
    run_mount(service, tmp_path, body)


def test_mv_of_a_file_being_written_names_its_image(service: MemoryImageService,
                                                    tmp_path: Path) -> None:
    async def body(m: Mount) -> None:
        fh, attr = await m.fs.create(ROOT_INODE, b"part", CP_FLAGS)
        await m.fs.write(fh, 0, payload(100 * KiB))
        await m.fs.rename(ROOT_INODE, b"part", ROOT_INODE, b"final", 0)
        await m.fs.flush(fh)
        await m.fs.release(fh)
        [image] = service.images.values()
        assert image.name == "final"
        assert await m.names() == [b"final"]
        assert await m.inode(b"final") == attr.inode
    run_mount(service, tmp_path, body)


# -- handles and reading, more ----------------------------------------------------------------


def test_every_open_has_its_own_handle(service: MemoryImageService, tmp_path: Path) -> None:
    data = payload(2 * BLOCK)
    service.add("disk", data)

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        first, _ = await m.fs.open(inode, os.O_RDONLY)
        second, _ = await m.fs.open(inode, os.O_RDONLY)
        assert first != second
        await m.fs.release(first)
        assert bytes(await m.fs.read(second, BLOCK, 10)) == data[BLOCK:BLOCK + 10]
        await m.fs.release(second)
        assert await refusal("read", m.fs.read(second, 0, 1)) == errno.EBADF
    run_mount(service, tmp_path, body)


def test_a_sequential_reader_is_served_by_few_gets_and_no_byte_twice(
        service: MemoryImageService, tmp_path: Path) -> None:
    data = payload(32 * BLOCK)
    record = service.add("disk", data)

    async def body(m: Mount) -> None:
        assert await m.read_all(b"disk", step=32 * KiB) == data
        counted = await m.counters(record.id)
        assert counted["gets"] <= 12
        assert counted["bytes"] == len(data)
    run_mount(service, tmp_path, body)


def test_a_block_the_kernel_reads_late_is_still_in_the_cache(
        service: MemoryImageService, tmp_path: Path) -> None:
    """Under load the kernel skips the tail of a read-ahead and reads those pages
    later, behind its furthest read: their block is dropped once all of it was
    served, not once the reader passed it, so it is not fetched twice."""
    data = payload(32 * BLOCK)
    record = service.add("disk", data)
    step = 32 * KiB
    skipped = set(range(3 * BLOCK, 4 * BLOCK, step))
    ahead = [o for o in range(0, 8 * BLOCK, step) if o not in skipped]
    offsets = ahead + sorted(skipped) + list(range(8 * BLOCK, len(data), step))

    async def body(m: Mount) -> None:
        got = await m.read_in_order(b"disk", offsets, step)
        assert b"".join(got[o] for o in sorted(got)) == data
        assert (await m.counters(record.id))["bytes"] == len(data)
    # A window larger than how far behind the late reads come: still in order.
    run_mount(service, tmp_path, body, prefetch_max=8 * BLOCK)


def test_a_block_never_read_is_dropped_once_far_behind_the_reader(
        service: MemoryImageService, tmp_path: Path) -> None:
    """A block whose pages the kernel never asks for (its page cache has them) is
    dropped all the same once it is further behind the reader than the kernel
    reads late: after a whole read no block stays."""
    data = payload(LATE_READS + 8 * BLOCK)
    service.add("disk", data)
    step = 32 * KiB
    offsets = [o for o in range(0, len(data), step) if not 3 * BLOCK <= o < 4 * BLOCK]

    async def body(m: Mount) -> None:
        await m.read_in_order(b"disk", offsets, step)
        memory = json.loads(await m.fs.getxattr(ROOT_INODE, stats.XATTR_NAME))["memory"]
        assert memory["blocks_bytes"] == 0    # the last ones too: all are hashed
    # Room for the whole image: what is dropped is not merely evicted.
    run_mount(service, tmp_path, body, memory=2 * len(data))


# -- Images v1 ----------------------------------------------------------------------------------


def test_v1_refuses_tags_and_visibilities_it_cannot_store(tmp_path: Path) -> None:
    service = MemoryImageService(version="1")
    record = service.add("disk", b"d")

    async def body(m: Mount) -> None:
        inode = await m.inode(b"disk")
        assert await refusal("setxattr", m.fs.setxattr(inode, b"user.glance.tags", b"a")) == \
            errno.EPERM
        assert await refusal("setxattr", m.fs.setxattr(
            inode, b"user.glance.visibility", b"shared")) == errno.EINVAL
        await m.fs.setxattr(inode, b"user.glance.visibility", b"public")
        assert service.stored(record.id).visibility == "public"
        assert await m.fs.getxattr(inode, b"user.glance.visibility") == b"public"
    run_mount(service, tmp_path, body)


def test_v1_cp_makes_an_active_image_with_the_bytes(tmp_path: Path) -> None:
    service = MemoryImageService(version="1")
    data = payload(100 * KiB)

    async def body(m: Mount) -> None:
        await m.cp(b"v1.img", data)
        [image] = service.named("v1.img")
        assert (image.status, image.data) == ("active", data)
        assert image.checksum == hashlib.md5(data).hexdigest()
    run_mount(service, tmp_path, body)

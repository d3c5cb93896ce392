"""The views of issue 14 (``.shared``, ``.community``, ``.hidden``,
``.by-tag/<tag>``) in the fast tier: GlanceFS in-process against the
in-memory service (one project, ``memory_service.PROJECT``), fake clocks.
The same through the kernel mount against a real Glance:
tests/test_mount_views.py."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from glancefs.fs import names
from glancefs.fs.catalog import ROOT_INODE
from glancefs.testing.memory_service import PROJECT, MemoryImageService
from tests.fast_support import CP_FLAGS, Mount, refusal, run_mount

TTL = 30.0
OTHER = "other-project"
MEMBER_STATUS = b"user.glance.member_status"


@pytest.fixture
def service() -> MemoryImageService:
    return MemoryImageService()


async def inode_of(m: Mount, *path: bytes) -> int:
    inode = ROOT_INODE
    for part in path:
        inode = (await m.fs.lookup(inode, part)).inode
    return inode


async def names_in(m: Mount, *path: bytes) -> list[bytes]:
    return sorted(name for name, _attr in await m.fs.listdir(await inode_of(m, *path)))


def seed(service: MemoryImageService) -> dict[str, str]:
    """One image of each kind; their ids by what they are."""
    return {
        "own": service.add("own.raw", b"o", tags=["gold"]).id,
        "pending": service.add("pend.raw", b"p", owner=OTHER,
                               members={PROJECT: "pending"}).id,
        "accepted": service.add("acc.raw", b"a", owner=OTHER, tags=["gold", "x/y"],
                                members={PROJECT: "accepted"}).id,
        "rejected": service.add("rej.raw", b"r", owner=OTHER,
                                members={PROJECT: "rejected"}).id,
        "community": service.add("comm.raw", b"c", owner=OTHER, visibility="community").id,
        "hidden": service.add("hid.raw", b"h", os_hidden=True).id,
        "elsewhere": service.add("not-ours.raw", b"n", owner=OTHER, visibility="private").id,
    }


def test_each_view_lists_what_its_filter_selects(service: MemoryImageService,
                                                 tmp_path: Path) -> None:
    seed(service)

    async def body(m: Mount) -> None:
        assert await names_in(m) == [b".by-id", b".by-owner", b".by-tag", b".community",
                                     b".hidden", b".shared", b"acc.raw", b"own.raw"]
        assert await names_in(m, b".shared") == [b"acc.raw", b"pend.raw", b"rej.raw"]
        assert await names_in(m, b".community") == [b"comm.raw"]
        assert await names_in(m, b".hidden") == [b"hid.raw"]
        # Tags in use in the root's listing; names escaped as image names are.
        assert await names_in(m, b".by-tag") == [b"gold", b"x%2Fy"]
        assert await names_in(m, b".by-tag", b"gold") == [b"acc.raw", b"own.raw"]
        assert await names_in(m, b".by-tag", b"x%2Fy") == [b"acc.raw"]
        assert await refusal("lookup", m.fs.lookup(await inode_of(m, b".by-tag"),
                                                   b"silver")) == errno.ENOENT
        # Owners of what the project may list; each folder, that owner's images.
        assert await names_in(m, b".by-owner") == sorted([PROJECT.encode(), OTHER.encode()])
        assert await names_in(m, b".by-owner", OTHER.encode()) == [b"acc.raw", b"comm.raw"]
        assert await names_in(m, b".by-owner", PROJECT.encode()) == [b"own.raw"]
        for view in (b".shared", b".community", b".hidden", b".by-tag", b".by-owner"):
            attr = await m.fs.lookup(ROOT_INODE, view)
            assert stat.S_ISDIR(attr.mode)
    run_mount(service, tmp_path, body)


def test_views_cost_no_request_until_someone_looks(service: MemoryImageService,
                                                   tmp_path: Path) -> None:
    seed(service)

    async def body(m: Mount) -> None:
        await m.names()
        await m.fs.lookup(ROOT_INODE, b".shared")
        await m.fs.lookup(ROOT_INODE, b".by-tag")
        assert [c.method for c in service.calls] == ["list_images"]   # the root's, once
        await names_in(m, b".by-tag")        # tags come from the root's listing
        assert [c.method for c in service.calls] == ["list_images"]
        await names_in(m, b".shared")
        assert service.count("shared_images") == 1
    run_mount(service, tmp_path, body)


def test_a_view_is_trusted_for_the_ttl_then_refreshed(service: MemoryImageService,
                                                      tmp_path: Path) -> None:
    service.add("c1", b"1", owner=OTHER, visibility="community")

    async def body(m: Mount) -> None:
        assert await names_in(m, b".community") == [b"c1"]
        before = service.count("list_images")
        service.add("c2", b"2", owner=OTHER, visibility="community")
        m.advance(TTL - 1)
        assert await names_in(m, b".community") == [b"c1"]
        m.advance(1)
        assert await names_in(m, b".community") == [b"c1", b"c2"]
        # The view's own refresh, once; the root was not looked at.
        assert service.count("list_images") == before + 1
    run_mount(service, tmp_path, body)


def test_a_failed_view_refresh_keeps_its_listing(service: MemoryImageService,
                                                 tmp_path: Path) -> None:
    service.add("h1", b"1", os_hidden=True)

    async def body(m: Mount) -> None:
        assert await names_in(m, b".hidden") == [b"h1"]
        service.down = True
        m.advance(TTL)
        assert await names_in(m, b".hidden") == [b"h1"]
        service.down = False
        service.add("h2", b"2", os_hidden=True)
        m.advance(1.0)      # the back-off after one failure
        assert await names_in(m, b".hidden") == [b"h1", b"h2"]
    run_mount(service, tmp_path, body)


def test_an_image_is_one_inode_wherever_it_appears(service: MemoryImageService,
                                                   tmp_path: Path) -> None:
    ids = seed(service)

    async def body(m: Mount) -> None:
        root = await m.lookup(b"acc.raw")
        assert root.nlink == 1                         # no view listed yet
        shared = await m.fs.lookup(await inode_of(m, b".shared"), b"acc.raw")
        tagged = await m.fs.lookup(await inode_of(m, b".by-tag", b"gold"), b"acc.raw")
        by_id = await m.by_id(ids["accepted"])
        assert root.inode == shared.inode == tagged.inode == by_id.inode
        # Root, .shared, .by-tag/gold and .by-tag/x%2Fy (listed by the lookup of
        # x%2Fy's folder below): the places the mount knows of.
        await names_in(m, b".by-tag", b"x%2Fy")
        assert (await m.fs.getattr(root.inode)).nlink == 4
        assert (await m.lookup(b"own.raw")).nlink == 2   # root and .by-tag/gold
        pending = await m.fs.lookup(await inode_of(m, b".shared"), b"pend.raw")
        assert pending.nlink == 1
        data = await m.read_at(b"acc.raw", 0, 10)
        fh, _keep = await m.fs.open(shared.inode, os.O_RDONLY)
        try:
            assert bytes(await m.fs.read(fh, 0, 10)) == data == b"a"
        finally:
            await m.fs.release(fh)
    run_mount(service, tmp_path, body)


def test_member_status_is_an_xattr_and_setting_it_answers_the_share(
        service: MemoryImageService, tmp_path: Path) -> None:
    ids = seed(service)

    async def body(m: Mount) -> None:
        shared = await inode_of(m, b".shared")
        pending = (await m.fs.lookup(shared, b"pend.raw")).inode
        assert await m.fs.getxattr(pending, MEMBER_STATUS) == b"pending"
        assert MEMBER_STATUS in await m.fs.listxattr(pending)
        accepted = (await m.fs.lookup(shared, b"acc.raw")).inode
        assert await m.fs.getxattr(accepted, MEMBER_STATUS) == b"accepted"
        # The root's image knows its status once .shared was listed.
        assert await m.fs.getxattr(await m.inode(b"acc.raw"), MEMBER_STATUS) == b"accepted"

        await m.fs.setxattr(pending, MEMBER_STATUS, b"accepted")
        assert service.stored(ids["pending"]).members[PROJECT] == "accepted"
        assert await m.fs.getxattr(pending, MEMBER_STATUS) == b"accepted"
        m.advance(TTL)
        assert b"pend.raw" in await m.names()    # accepted: the default listing has it
        assert (await m.lookup(b"pend.raw")).inode == pending

        await m.fs.setxattr(accepted, MEMBER_STATUS, b"rejected")
        assert service.stored(ids["accepted"]).members[PROJECT] == "rejected"
        assert await refusal("setxattr", m.fs.setxattr(accepted, MEMBER_STATUS,
                                                       b"maybe")) == errno.EINVAL
        assert await refusal("removexattr",
                             m.fs.removexattr(accepted, MEMBER_STATUS)) == errno.EPERM
        # Our own image is shared with nobody: no status to set.
        own = await m.inode(b"own.raw")
        assert await refusal("getxattr", m.fs.getxattr(own, MEMBER_STATUS)) == errno.ENODATA
        assert await refusal("setxattr",
                             m.fs.setxattr(own, MEMBER_STATUS, b"accepted")) == errno.EPERM
    run_mount(service, tmp_path, body)


def test_an_image_no_longer_shared_has_no_member_status(service: MemoryImageService,
                                                         tmp_path: Path) -> None:
    ids = seed(service)

    async def body(m: Mount) -> None:
        assert b"acc.raw" in await names_in(m, b".shared")
        inode = await m.inode(b"acc.raw")
        assert await m.fs.getxattr(inode, MEMBER_STATUS) == b"accepted"
        service.stored(ids["accepted"]).visibility = "public"   # the owner made it public
        m.advance(TTL)
        assert b"acc.raw" not in await names_in(m, b".shared")
        assert await refusal("getxattr", m.fs.getxattr(inode, MEMBER_STATUS)) == errno.ENODATA
        assert (await m.lookup(b"acc.raw")).inode == inode
    run_mount(service, tmp_path, body)


def test_nothing_is_created_removed_or_renamed_in_a_view(service: MemoryImageService,
                                                         tmp_path: Path) -> None:
    seed(service)

    async def body(m: Mount) -> None:
        for view in ((b".shared",), (b".community",), (b".by-tag",), (b".by-tag", b"gold")):
            inode = await inode_of(m, *view)
            assert await refusal("create", m.fs.create(inode, b"new.raw",
                                                       CP_FLAGS)) == errno.EPERM
        shared = await inode_of(m, b".shared")
        assert await refusal("unlink", m.fs.unlink(shared, b"acc.raw")) == errno.EPERM
        assert await refusal("rename", m.fs.rename(shared, b"acc.raw", ROOT_INODE,
                                                   b"mine.raw", 0)) == errno.EPERM
        assert await refusal("rename", m.fs.rename(ROOT_INODE, b"own.raw", shared,
                                                   b"own.raw", 0)) == errno.EPERM
        assert b"acc.raw" in await names_in(m, b".shared")
    run_mount(service, tmp_path, body)


def test_images_named_like_a_view_are_shown_escaped(service: MemoryImageService,
                                                    tmp_path: Path) -> None:
    for name in (".shared", ".community", ".hidden", ".by-tag"):
        service.add(name, b"x")

    async def body(m: Mount) -> None:
        shown = await m.names()
        assert shown == sorted(names.escape(n) for n in (".shared", ".community", ".hidden",
                                                         ".by-tag"))
        assert b"%2Eshared" in shown
        assert names.unescape(b"%2Eshared") == ".shared"
    run_mount(service, tmp_path, body)


def test_no_views_on_images_v1(tmp_path: Path) -> None:
    service = MemoryImageService(version="1")
    service.add("one", b"1")

    async def body(m: Mount) -> None:
        assert await names_in(m) == [b".by-id", b"one"]
        assert await refusal("lookup", m.fs.lookup(ROOT_INODE, b".shared")) == errno.ENOENT
    run_mount(service, tmp_path, body)

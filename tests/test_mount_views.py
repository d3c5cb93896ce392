"""The views of issue 14 through the kernel mount, against a real Glance.

Two projects: the mount speaks as project B, another project A shares
images with it. The Glance of this module runs in ``headers`` auth mode
(identity from request headers, Glance's default policies: nobody is an
admin); the mount sends no identity of its own, so it goes through a
FaultProxy that adds B's identity headers to every request. The clients
that seed and check speak as A and B through keystoneauth1 sessions with
the same headers. Each view is compared with what the client lists.
"""
from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from keystoneauth1 import session as ks_session

from glancefs.api import Client, v2
from glancefs.fs import names
from glancefs.testing.faultproxy import FaultProxy
from glancefs.testing.glance_server import GlanceServer, identity_headers
from tests.conftest import fresh_glance
from tests.mount_support import make_image, mounted

pytestmark = [pytest.mark.mount, pytest.mark.slow]

A, B = "project-a", "project-b"
TTL = 1.0
DEADLINE = 30.0
MEMBER_STATUS = "user.glance.member_status"


@dataclass(frozen=True)
class Speaker:
    """Whom requests speak as: the identity headers this module's Glance trusts."""
    server: GlanceServer
    project: str
    roles: tuple[str, ...] = ("member", "reader")

    def session(self) -> ks_session.Session:
        return ks_session.Session(
            additional_headers=identity_headers(self.project, roles=self.roles))

    def client(self) -> v2.Client:
        """glancefs's client (it seeds the images)."""
        return Client("2", endpoint=self.server.endpoint, session=self.session())

    def glanceclient(self) -> Any:
        """python-glanceclient: the peer each view is checked against."""
        import glanceclient
        return glanceclient.Client("2", endpoint=self.server.endpoint, session=self.session())


@dataclass
class Cloud:
    server: GlanceServer
    a: v2.Client   # speaking as A
    b: v2.Client   # ... as B, the mount's project
    as_b: Speaker
    ids: dict[str, str]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with fresh_glance(tmp_path_factory, "glance-views", auth="headers") as server:
        as_b = Speaker(server, B)
        a, b = Speaker(server, A).client(), as_b.client()
        ids: dict[str, str] = {}
        for key, status in (("pending", "pending"), ("accepted", "accepted")):
            image = make_image(a, f"{key}.raw", key.encode() * 100)
            a.images.update(image.id, visibility="shared")
            a.image_members.create(image.id, B)
            if status == "accepted":
                b.image_members.update(image.id, B, "accepted")
            ids[key] = image.id
        ids["community"] = make_image(a, "comm.raw", b"community" * 10).id
        a.images.update(ids["community"], visibility="community")
        ids["hidden"] = make_image(b, "hid.raw", b"hidden" * 10).id
        b.images.update(ids["hidden"], os_hidden=True)
        ids["own"] = make_image(b, "own.raw", b"own" * 10).id
        # A tag with "/" cannot be a URL's last segment (image_tags): set the list.
        b.images.update(ids["own"], tags=["gold", "a/b"])
        a.image_tags.update(ids["accepted"], "gold")   # B sees A's tag on what it accepted
        yield Cloud(server, a, b, as_b, ids)


@pytest.fixture(scope="module")
def mnt(cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    proxy = FaultProxy("127.0.0.1", cloud.server.port, add_headers=identity_headers(B))
    with proxy, mounted(proxy.endpoint, tmp_path_factory.mktemp("views") / "mnt",
                        options=f"ttl={TTL:g}") as mount:
        yield mount.path


def listed(speaker: Speaker, not_owned_by: str | None = None,
           **filters: str) -> set[bytes]:
    """File names of what python-glanceclient lists speaking as ``speaker`` (the
    names rule of the mount; the names here are unique, so no suffixes)."""
    wanted: dict[str, object] = dict(filters)
    if "tag" in wanted:
        wanted["tag"] = [wanted["tag"]]   # glanceclient takes a list of tags
    return {names.escape(i["name"])
            for i in speaker.glanceclient().images.list(filters=wanted)
            if not_owned_by is None or i["owner"] != not_owned_by}


def shown(path: Path) -> set[bytes]:
    return set(os.listdir(os.fsencode(path)))


VIEWS = {b".by-id", b".shared", b".community", b".hidden", b".by-tag", b".by-owner"}


def test_the_root_shows_the_views(mnt: Path, cloud: Cloud) -> None:
    entries = shown(mnt)
    assert VIEWS <= entries
    assert entries - VIEWS == listed(cloud.as_b)


def test_by_owner_shows_every_projects_images_to_an_admin(
        cloud: Cloud, tmp_path: Path) -> None:
    """An admin's mount: one folder per project, each what the client lists
    for that owner; A's private image is there, which B never sees."""
    admin = ("admin", "member", "reader")
    private = make_image(cloud.a, "a-private.raw", b"private" * 10)
    as_admin = Speaker(cloud.server, "project-admin", admin)
    proxy = FaultProxy("127.0.0.1", cloud.server.port,
                       add_headers=identity_headers("project-admin", roles=admin))
    try:
        with proxy, mounted(proxy.endpoint, tmp_path / "mnt") as mount:
            owners = shown(mount.path / ".by-owner")
            assert {A.encode(), B.encode()} <= owners
            assert shown(mount.path / ".by-owner" / A) == \
                listed(as_admin, owner=A, visibility="all")
            assert b"a-private.raw" in shown(mount.path / ".by-owner" / A)
            assert (mount.path / ".by-owner" / A / "a-private.raw").read_bytes() == \
                b"private" * 10
        assert b"a-private.raw" not in listed(cloud.as_b, visibility="all")
    finally:
        cloud.a.images.delete(private.id)


def test_shared_shows_pending_and_accepted_as_the_client_lists_them(mnt: Path,
                                                                    cloud: Cloud) -> None:
    # Glance lists B's own images (visibility "shared" by default) under every
    # member status too: .shared leaves them out, shared *with* B only.
    pending = listed(cloud.as_b, B, visibility="shared", member_status="pending")
    accepted = listed(cloud.as_b, B, visibility="shared", member_status="accepted")
    assert pending >= {b"pending.raw"} and accepted >= {b"accepted.raw"}
    assert shown(mnt / ".shared") == pending | accepted
    assert os.getxattr(mnt / ".shared" / "accepted.raw", MEMBER_STATUS) == b"accepted"
    assert (mnt / ".shared" / "accepted.raw").read_bytes() == b"accepted" * 100


def test_community_hidden_and_tags_as_the_client_lists_them(mnt: Path, cloud: Cloud) -> None:
    assert shown(mnt / ".community") == listed(cloud.as_b, visibility="community")
    assert b"comm.raw" in shown(mnt / ".community")
    assert shown(mnt / ".hidden") == listed(cloud.as_b, os_hidden="true") == {b"hid.raw"}
    assert b"hid.raw" not in shown(mnt)
    assert shown(mnt / ".by-tag") >= {b"gold", b"a%2Fb"}
    assert shown(mnt / ".by-tag" / "gold") == listed(cloud.as_b, tag="gold")
    assert shown(mnt / ".by-tag" / "a%2Fb") == listed(cloud.as_b, tag="a/b") == {b"own.raw"}


def test_an_image_is_one_file_wherever_it_appears(mnt: Path, cloud: Cloud) -> None:
    places = [mnt / "accepted.raw", mnt / ".shared" / "accepted.raw",
              mnt / ".by-id" / cloud.ids["accepted"]]
    os.listdir(mnt / ".shared")
    assert len({os.stat(p).st_ino for p in places}) == 1
    assert os.stat(places[0]).st_nlink >= 2
    found = subprocess.run(["find", str(mnt), "-samefile", str(places[0])],
                           capture_output=True, text=True, check=True).stdout.split()
    assert {str(mnt / "accepted.raw"), str(mnt / ".shared" / "accepted.raw")} <= set(found)


def test_setfattr_accepts_a_shared_image(mnt: Path, cloud: Cloud) -> None:
    path = mnt / ".shared" / "pending.raw"
    assert os.getxattr(path, MEMBER_STATUS) == b"pending"
    subprocess.run(["setfattr", "-n", MEMBER_STATUS, "-v", "accepted", str(path)], check=True)
    member = cloud.a.image_members.get(cloud.ids["pending"], B)
    assert member["status"] == "accepted"
    assert os.getxattr(path, MEMBER_STATUS) == b"accepted"
    # Accepted: the default listing (the root) shows it once the ttl has passed.
    deadline = time.monotonic() + DEADLINE
    while b"pending.raw" not in shown(mnt):
        assert time.monotonic() < deadline, "the accepted image never appeared in the root"
        time.sleep(0.2)
    assert os.stat(mnt / "pending.raw").st_ino == os.stat(path).st_ino
    subprocess.run(["setfattr", "-n", MEMBER_STATUS, "-v", "rejected", str(path)], check=True)
    member = cloud.a.image_members.get(cloud.ids["pending"], B)
    assert member["status"] == "rejected"


def test_views_are_read_only(mnt: Path) -> None:
    for where in (mnt / ".shared", mnt / ".community", mnt / ".by-tag" / "gold"):
        with pytest.raises(PermissionError) as refused:
            (where / "new.raw").write_bytes(b"x")
        assert refused.value.errno == errno.EPERM
    with pytest.raises(PermissionError):
        os.unlink(mnt / ".shared" / "accepted.raw")
    assert (mnt / ".shared" / "accepted.raw").exists()

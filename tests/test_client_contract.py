"""The client's contract, run against the real v2 Glance and the v1 server.

Every test here talks to a real server over HTTP; outcomes are checked by
bytes, hashes and the server's state read back through the API.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from glancefs import Client
from glancefs.api import exceptions as exc
from glancefs.api.service import ImageService
from glancefs.testing.faultproxy import Fault, FaultProxy, http_response
from glancefs.testing.glance_server import GlanceServer

SEED_EXAMPLE = '''
from glancefs import Client
glance = Client({version!r}, endpoint=OS_IMAGE_ENDPOINT, token=OS_AUTH_TOKEN)
image = glance.images.create(name="My Test Image")
print(image.status)
image.update(data=open('/tmp/myimage.iso', 'rb'))
print(image.status)
image.update(properties=dict(my_custom_property='value'))
with open('/tmp/copyimage.iso', 'wb') as f:
    for chunk in image.data():
        f.write(chunk)
image.delete()
'''


def test_seed_example_runs_as_written(api, tmp_path: Path) -> None:
    """The founding document's example, in Python 3, against both versions."""
    source = os.urandom(3 * 1024 * 1024 + 17)
    Path("/tmp/myimage.iso").write_bytes(source)
    Path("/tmp/copyimage.iso").unlink(missing_ok=True)
    script = tmp_path / "seed.py"
    script.write_text(f"OS_IMAGE_ENDPOINT = {api.endpoint!r}\nOS_AUTH_TOKEN = 'secret-token'\n"
                      + SEED_EXAMPLE.format(version=api.version))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["queued", "active"]
    assert Path("/tmp/copyimage.iso").read_bytes() == source


def test_update_sets_properties_and_refreshes_the_same_object(api) -> None:
    glance = api.client()
    image = glance.images.create(name="props")
    image.update(data=io.BytesIO(b"x" * 1000))
    image.update(properties=dict(my_custom_property="value", os_distro="debian"))
    seen = glance.images.get(image.id)
    props = seen["properties"] if api.version == "1" else seen
    assert props["my_custom_property"] == "value" and props["os_distro"] == "debian"
    own = image["properties"] if api.version == "1" else image
    assert own["my_custom_property"] == "value"
    glance.images.update(image.id, remove_props=["os_distro"])
    seen = glance.images.get(image.id)
    props = seen["properties"] if api.version == "1" else seen
    assert "os_distro" not in props and props["my_custom_property"] == "value"
    image.delete()


@pytest.mark.parametrize("kind", ["file", "iterator-without-size", "bytes"])
def test_round_trip_is_byte_exact(api, kind: str) -> None:
    source = os.urandom(5 * 1024 * 1024 + 3)
    data = {"file": io.BytesIO(source),
            "iterator-without-size": (source[i:i + 65536] for i in range(0, len(source), 65536)),
            "bytes": source}[kind]
    glance = api.client()
    image = glance.images.create(name=f"rt-{kind}", disk_format="raw", container_format="bare")
    image.update(data=data)
    assert image.status == "active"
    assert image.size == len(source)
    assert image.checksum == hashlib.md5(source).hexdigest()
    if api.version == "2":
        assert image.os_hash_value == hashlib.sha512(source).hexdigest()
    assert b"".join(glance.images.data(image.id)) == source
    image.delete()


def test_ranged_reads_at_random_offsets(api) -> None:
    source = os.urandom(4 * 1024 * 1024)
    glance = api.client()
    image = glance.images.create(name="ranges", disk_format="raw", container_format="bare",
                                 data=source)
    rng = random.Random(1234)
    for _ in range(12):
        offset = rng.randrange(0, len(source))
        length = rng.randrange(1, 300_000)
        got = b"".join(glance.images.data(image, offset=offset, length=length))
        assert got == source[offset:offset + length], (offset, length)
    tail = b"".join(glance.images.data(image, byte_range=(len(source) - 10, len(source) - 1)))
    assert tail == source[-10:]
    glance.images.delete(image)


def test_listing_follows_pages_past_the_server_page(api) -> None:
    glance = api.client()
    tag = f"page-{random.randrange(10**9)}"
    made = {glance.images.create(name=f"{tag}-{i:02d}", disk_format="raw",
                                 container_format="bare").id for i in range(32)}
    listed = [i for i in glance.images.list(page_size=7) if (i.name or "").startswith(tag)]
    assert {i.id for i in listed} == made
    assert len(listed) == len(made)
    # Asking for more than the server's page still yields everything.
    assert made <= {i.id for i in glance.images.list(page_size=1000)}
    assert len(list(glance.images.list(limit=5))) == 5
    by_name = list(glance.images.list(filters={"name": f"{tag}-03"}))
    assert [i.id for i in by_name] and all(i.name == f"{tag}-03" for i in by_name)
    names = [i.name for i in glance.images.list(sort_key="name", sort_dir="asc", page_size=5)
             if (i.name or "").startswith(tag)]
    assert names == sorted(names)
    for image_id in made:
        glance.images.delete(image_id)


def test_errors_carry_status_and_server_message(api) -> None:
    glance = api.client()
    with pytest.raises(exc.HTTPNotFound) as missing:
        glance.images.get("00000000-0000-0000-0000-000000000000")
    assert missing.value.code == 404
    with pytest.raises(exc.HTTPBadRequest) as bad:
        glance.images.create(name="bad", disk_format="not-a-format", container_format="bare")
    assert bad.value.code == 400 and bad.value.details
    image = glance.images.create(name="twice", disk_format="raw", container_format="bare",
                                 data=b"first")
    with pytest.raises(exc.HTTPConflict) as conflict:
        glance.images.update(image.id, data=b"second")
    assert conflict.value.code == 409 and conflict.value.details
    glance.images.update(image.id, protected=True)
    with pytest.raises(exc.HTTPForbidden) as protected:
        glance.images.delete(image.id)
    assert protected.value.code == 403 and protected.value.details
    glance.images.update(image.id, protected=False)
    glance.images.delete(image.id)


def test_v2_unsupported_media_type_and_range_not_satisfiable(glance_v2) -> None:
    glance = Client("2", endpoint=glance_v2.endpoint)
    image = glance.images.create(name="liar", disk_format="qcow2", container_format="bare")
    with pytest.raises(exc.HTTPUnsupportedMediaType) as mislabelled:
        glance.images.upload(image.id, os.urandom(70000))
    assert mislabelled.value.code == 415 and "qcow2" in mislabelled.value.details
    assert glance.images.get(image.id).status == "queued"
    glance.images.upload(glance.images.create(name="r", disk_format="raw",
                                              container_format="bare").id, b"abc")
    small = next(glance.images.list(filters={"name": "r"}))
    with pytest.raises(exc.HTTPRequestedRangeNotSatisfiable):
        glance.http.request("GET", f"/v2/images/{small.id}/file", headers={"Range": "bytes=10-20"})


def test_v2_over_limit_is_413(tmp_path: Path) -> None:
    from glancefs.testing.glance_server import free_port

    with GlanceServer(tmp_path / "capped", free_port(), image_size_cap=1000) as server:
        glance = Client("2", endpoint=server.endpoint)
        image = glance.images.create(name="big", disk_format="raw", container_format="bare")
        with pytest.raises(exc.HTTPOverLimit) as big:
            glance.images.upload(image.id, os.urandom(5000))
        assert big.value.code == 413 and big.value.details


def test_v1_unauthorized_and_over_limit(tmp_path: Path) -> None:
    from glancefs.testing.v1server import V1Server

    with V1Server(store_dir=tmp_path, token="tok-R1ght-7f3a", image_size_cap=1000) as server:
        with pytest.raises(exc.HTTPUnauthorized) as unauthorized:
            list(Client("1", endpoint=server.endpoint, token="tok-Wr0ng-9c2e").images.list())
        assert unauthorized.value.code == 401
        glance = Client("1", endpoint=server.endpoint, token="tok-R1ght-7f3a")
        with pytest.raises(exc.HTTPOverLimit):
            glance.images.create(name="big", disk_format="raw", container_format="bare",
                                 data=os.urandom(5000))
        assert "tok-Wr0ng-9c2e" not in str(unauthorized.value)


def test_tampered_store_is_detected_on_download(api) -> None:
    source = os.urandom(2 * 1024 * 1024)
    glance = api.client()
    image = glance.images.create(name="tamper", disk_format="raw", container_format="bare",
                                 data=source)
    stored = api.stored_file(image.id)
    with open(stored, "r+b") as f:
        f.seek(1_000_000)
        f.write(b"\xff" * 16)
    with pytest.raises(exc.HashMismatch):
        b"".join(glance.images.data(image.id))
    # Without verification the (wrong) bytes come through: the check is what caught it.
    assert len(b"".join(glance.images.data(image.id, do_checksum=False))) == len(source)
    glance.images.delete(image.id)


def test_download_cut_mid_stream_resumes_and_verifies(api) -> None:
    source = os.urandom(6 * 1024 * 1024)
    glance = api.client()
    image = glance.images.create(name="cut", disk_format="raw", container_format="bare",
                                 data=source)
    host, port = api.endpoint.rsplit("/", 1)[1].split(":")
    with FaultProxy(host, int(port)) as proxy:
        data_path = "/file " if api.version == "2" else f"GET /v1/images/{image.id} "
        proxy.add(Fault(match=data_path, cut_after=1_500_000, times=2))
        via_proxy = api.client(endpoint=proxy.endpoint)
        got = b"".join(via_proxy.images.data(image.id))
        assert got == source
        data_gets = [r for r in proxy.stats.requests if r.startswith("GET") and data_path in r]
        assert len(data_gets) == 3  # two cut, then a resumed one
    glance.images.delete(image.id)


def test_safe_requests_retry_on_503_and_429_honouring_retry_after(glance_v2) -> None:
    glance = Client("2", endpoint=glance_v2.endpoint)
    image = glance.images.create(name="retry", disk_format="raw", container_format="bare")
    with FaultProxy("127.0.0.1", glance_v2.port) as proxy:
        proxy.add(Fault(match="GET /v2/images/", respond=http_response(
            503, "Service Unavailable", b"busy", {"Retry-After": "1"})))
        proxy.add(Fault(match="GET /v2/images/", respond=http_response(
            429, "Too Many Requests", b"slow down")))
        assert Client("2", endpoint=proxy.endpoint).images.get(image.id).id == image.id
        # Unsafe requests are never retried: the 503 comes straight back.
        proxy.add(Fault(match="POST /v2/images", respond=http_response(
            503, "Service Unavailable", b"busy now")))
        with pytest.raises(exc.HTTPServiceUnavailable) as unavailable:
            Client("2", endpoint=proxy.endpoint, retries=3).images.create(name="never")
        assert unavailable.value.details == "busy now"
    assert not list(glance.images.list(filters={"name": "never"}))


def test_unreachable_server_is_a_communication_error() -> None:
    from glancefs.testing.glance_server import free_port

    glance = Client("2", endpoint=f"http://127.0.0.1:{free_port()}", retries=1)
    with pytest.raises(exc.CommunicationError):
        glance.images.get("x")


def test_v2_tags_members_deactivate_and_info(glance_v2) -> None:
    glance = Client("2", endpoint=glance_v2.endpoint)
    image = glance.images.create(name="extras", disk_format="raw", container_format="bare",
                                 visibility="shared", data=b"z" * 4096)
    glance.image_tags.update(image.id, "blue")
    glance.image_tags.update(image.id, "green")
    glance.image_tags.delete(image.id, "blue")
    assert glance.images.get(image.id).tags == ["green"]
    glance.image_members.create(image.id, "project-b")
    assert [m.member_id for m in glance.image_members.list(image.id)] == ["project-b"]
    glance.image_members.delete(image.id, "project-b")
    assert list(glance.image_members.list(image.id)) == []
    glance.images.deactivate(image.id)
    assert glance.images.get(image.id).status == "deactivated"
    glance.images.reactivate(image.id)
    assert glance.images.get(image.id).status == "active"
    assert "import-methods" in glance.images.get_import_info()
    assert glance.schemas.get("image")["name"] == "image"
    # This Glance has no keystone limits, so it publishes no usage figures.
    assert isinstance(glance.info.get_usage()["usage"], dict)
    glance.images.delete(image.id)


def test_v2_stage_and_import(glance_v2) -> None:
    glance = Client("2", endpoint=glance_v2.endpoint)
    source = os.urandom(300_000)
    image = glance.images.create(name="imported", disk_format="raw", container_format="bare")
    glance.images.stage(image.id, io.BytesIO(source))
    assert glance.images.get(image.id).status == "uploading"
    glance.images.image_import(image.id, method="glance-direct")
    import time
    deadline = time.time() + 60
    while glance.images.get(image.id).status != "active" and time.time() < deadline:
        time.sleep(0.3)
    assert b"".join(glance.images.data(image.id)) == source
    glance.images.delete(image.id)


def test_v1_members(glance_v1) -> None:
    glance = Client("1", endpoint=glance_v1.endpoint)
    image = glance.images.create(name="shared", disk_format="raw", container_format="bare")
    glance.image_members.create(image, "tenant-b", can_share=True)
    members = glance.image_members.list(image=image.id)
    assert [(m.member_id, m.can_share) for m in members] == [("tenant-b", True)]
    assert [s.image_id for s in glance.image_members.list(member="tenant-b")] == [image.id]
    glance.image_members.delete(image.id, "tenant-b")
    assert glance.image_members.list(image=image.id) == []
    glance.images.delete(image)


def test_one_record_shape_from_both_versions(api) -> None:
    service = ImageService(api.client())
    made = service.create("record", "raw", "bare", {"os_distro": "debian"})
    assert made.status == "queued" and made.properties == {"os_distro": "debian"}
    active = service.upload(made.id, iter([b"a" * 1000, b"b" * 24]), None)
    assert active.status == "active" and active.size == 1024
    assert active.checksum == hashlib.md5(b"a" * 1000 + b"b" * 24).hexdigest()
    renamed = service.rename(active, "record2")
    assert renamed.name == "record2" and service.get(made.id).name == "record2"
    changed = service.set_property(renamed, "hw_disk_bus", "scsi")
    assert service.get(made.id).properties["hw_disk_bus"] == "scsi"
    removed = service.remove_property(changed, "os_distro")
    assert "os_distro" not in service.get(made.id).properties
    assert removed.properties == {"hw_disk_bus": "scsi"}
    assert b"".join(service.read(active, 990, 20)) == b"a" * 10 + b"b" * 10
    assert made.id in {r.id for r in service.list_images()}
    service.delete(made.id)
    with pytest.raises(exc.HTTPNotFound):
        service.get(made.id)


@pytest.mark.parametrize("status,reason,cls", [
    (500, "Internal Server Error", exc.HTTPInternalServerError),
    (502, "Bad Gateway", exc.HTTPBadGateway),
    (504, "Gateway Timeout", exc.HTTPGatewayTimeout),
])
def test_server_errors_map_to_their_exception_with_the_message(
        glance_v2: GlanceServer, status: int, reason: str,
        cls: type[exc.ClientException]) -> None:
    page = (f"<html><head><title>{status} {reason}</title></head><body><h1>{status} "
            f"{reason}</h1>The backend store is on fire.</body></html>").encode()
    with FaultProxy("127.0.0.1", glance_v2.port) as proxy:
        proxy.add(Fault(match="POST /v2/images", respond=http_response(
            status, reason, page, {"Content-Type": "text/html"})))
        with pytest.raises(cls) as raised:
            Client("2", endpoint=proxy.endpoint).images.create(name="x")
    assert raised.value.code == status
    assert raised.value.details == "The backend store is on fire."


def test_the_client_reports_whether_the_server_honours_range(api) -> None:
    glance = api.client()
    image = glance.images.create(name="range-flag", disk_format="raw", container_format="bare",
                                 data=os.urandom(100_000))
    assert b"".join(glance.images.data(image.id, offset=50_000, length=10)) != b""
    assert glance.http.range_ignored == (api.version == "1")
    glance.images.delete(image.id)

"""Image locations and the image cache through ``glancefs`` against a real Glance that shows
locations (with an http store, so a local HTTP server's URL can be a location) and caches
downloads; every effect checked through python-glanceclient.

Both settings change what image requests do, so this module has a Glance of its own.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from glancefs.api import Client
from glancefs.api import exceptions as exc
from glancefs.testing.glance_server import GlanceServer
from tests.cli_support import CliResult, glanceclient_for, run_glancefs
from tests.conftest import fresh_glance

pytestmark = pytest.mark.slow

SIZE = 100_000
DEADLINE = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    # Room for one SIZE image, not two: cache-prune has something to remove.
    with fresh_glance(tmp_path_factory, "glance-loc-cache", image_cache=True,
                      image_cache_max_size=SIZE + SIZE // 2, locations=True) as s:
        yield s


class Files:
    """A local HTTP server of a directory: where location URLs point."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def put(self, data: bytes) -> str:
        name = uuid.uuid4().hex
        (self.root / name).write_bytes(data)
        return f"http://127.0.0.1:{self.httpd.server_port}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Files]:
    f = Files(tmp_path_factory.mktemp("location-files"))
    yield f
    f.close()


@pytest.fixture(scope="module")
def gc(server: GlanceServer) -> Any:
    return glanceclient_for(server.endpoint)


@pytest.fixture
def g(server: GlanceServer) -> Callable[..., CliResult]:
    def run(*argv: str, **kwargs: Any) -> CliResult:
        return run_glancefs(server.endpoint, *argv, **kwargs)
    return run


def ok(result: CliResult) -> CliResult:
    assert result.rc == 0, result.err
    return result


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {DEADLINE} s")
        time.sleep(0.2)


def active_image(gc: Any, data: bytes | None = None) -> Any:
    image = gc.images.create(name=f"glancefs-{uuid.uuid4().hex[:8]}", disk_format="raw",
                             container_format="bare")
    gc.images.upload(image.id, io.BytesIO(data if data is not None else os.urandom(SIZE)))
    return gc.images.get(image.id)


# -- locations -------------------------------------------------------------------------------


def locations(gc: Any, image_id: str) -> dict[str, dict[str, Any]]:
    """URL -> metadata, without the store name Glance adds to the metadata itself."""
    return {loc["url"]: {k: v for k, v in loc["metadata"].items() if k != "store"}
            for loc in gc.images.get(image_id).locations}



def test_location_add_update_delete(g: Any, gc: Any, files: Files) -> None:
    data = os.urandom(SIZE)
    image = active_image(gc, data)
    url = files.put(data)
    shown = ok(g("-f", "json", "location-add", image.id, "--url", url, "--metadata",
                 '{"zone": "a"}')).json()
    assert {"url": url, "metadata": {"zone": "a", "store": "web"}} in shown["locations"]
    seen = locations(gc, image.id)
    assert seen[url] == {"zone": "a"} and len(seen) == 2

    ok(g("location-update", image.id, "--url", url, "--metadata", '{"zone": "b"}'))
    seen = locations(gc, image.id)
    assert seen[url] == {"zone": "b"}

    ok(g("location-delete", image.id, "--url", url))
    assert [loc["url"] for loc in gc.images.get(image.id).locations] == \
        [u for u in seen if u != url]


def test_location_commands_refuse_bad_input(g: Any, gc: Any, files: Files) -> None:
    image = active_image(gc)
    before = gc.images.get(image.id).locations
    cases = [
        ("location-add", image.id, "--url", files.put(b"x" * 10), "--metadata", "[1]"),
        ("location-update", image.id, "--url", "http://127.0.0.1:9/none", "--metadata",
         '{"a": 1}'),
        ("location-delete", image.id, "--url", "http://127.0.0.1:9/none"),
        ("location-add", image.id, "--url", "file:///etc/passwd"),  # Glance refuses: 400
    ]
    for argv in cases:
        result = g(*argv)
        assert result.rc == 1, (argv, result.err)
        result.error_line()
    assert gc.images.get(image.id).locations == before
    missing = g("location-add", image.id)
    assert missing.rc == 2


def test_add_location_gives_a_queued_image_its_data(g: Any, gc: Any, files: Files) -> None:
    data = os.urandom(SIZE)
    url = files.put(data)
    image = gc.images.create(name="glancefs-add-location", disk_format="raw",
                             container_format="bare")
    sha512 = hashlib.sha512(data).hexdigest()
    ok(g("add-location", image.id, "--url", url, "--validation-data",
         f'{{"os_hash_algo": "sha512", "os_hash_value": "{sha512}"}}'))
    done = wait_for("active", lambda: (lambda i: i if i.status == "active" else None)(
        gc.images.get(image.id)))
    assert (done.size, done.os_hash_value) == (len(data), sha512)
    assert b"".join(gc.images.data(image.id)) == data


def test_add_location_refuses_bad_validation_data(g: Any, gc: Any, files: Files) -> None:
    image = gc.images.create(name="glancefs-add-location-bad", disk_format="raw",
                             container_format="bare")
    url = files.put(b"y" * 100)
    for text, reason in (('{"checksum": "abc"}', "`checksum` is not allowed"),
                         ('{"os_hash_algo": "crc32", "os_hash_value": "0"}',
                          "os_hash_algo: `crc32` is incorrect"),
                         ("nope", "validation-data is not a valid JSON object")):
        result = g("add-location", image.id, "--url", url, "--validation-data", text)
        assert result.rc == 1 and reason in result.error_line()
    assert gc.images.get(image.id).status == "queued"


def test_python_api_location_methods(server: GlanceServer, gc: Any, files: Files) -> None:
    client = Client("2", endpoint=server.endpoint)
    data = os.urandom(SIZE)
    image = active_image(gc, data)
    url = files.put(data)
    after = client.images.add_location(image.id, url, {"k": "v"})
    assert url in [loc["url"] for loc in after["locations"]]
    assert locations(gc, image.id)[url] == {"k": "v"}
    client.images.update_location(image.id, url, {"k": "w", "store": "web"})
    assert locations(gc, image.id)[url] == {"k": "w"}
    with pytest.raises(exc.HTTPNotFound):
        client.images.delete_locations(image.id, {url, "http://127.0.0.1:9/x"})
    assert url in [loc["url"] for loc in client.images.get_image_locations(image.id)]
    client.images.delete_locations(image.id, {url})
    assert url not in [loc["url"] for loc in gc.images.get(image.id).locations]


# -- the image cache -------------------------------------------------------------------------


def cache_state(gc: Any) -> tuple[set[str], set[str]]:
    state = gc.cache.list()
    return ({c["image_id"] for c in state.get("cached_images", [])},
            set(state.get("queued_images", [])))


def is_cached(gc: Any, image_id: str) -> bool:
    return image_id in cache_state(gc)[0]


def table_rows(text: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return rows[1:]


def test_cache_queue_list_delete(g: Any, gc: Any) -> None:
    """Glance 33 starts caching a queued image at once: it is queued, then cached."""
    ok(g("cache-clear"))
    one, two = active_image(gc), active_image(gc)
    ok(g("cache-queue", one.id, two.id))
    wait_for("cached", lambda: {one.id, two.id} <= cache_state(gc)[0])
    rows = {r[0]: r[1:] for r in table_rows(ok(g("cache-list")).out)}
    assert rows[one.id][0] == "cached" and rows[one.id][3] == str(SIZE)
    listed = ok(g("-f", "json", "cache-list")).json()
    assert {c["image_id"] for c in listed["cached_images"]} == cache_state(gc)[0]

    ok(g("cache-delete", one.id))
    assert one.id not in cache_state(gc)[0] and two.id in cache_state(gc)[0]
    ok(g("cache-clear", "--target", "cache"))
    assert cache_state(gc) == (set(), set())


def test_cache_of_downloaded_images_nodes_prune_clean_clear(g: Any, gc: Any,
                                                            server: GlanceServer) -> None:
    ok(g("cache-clear"))
    first, second = active_image(gc), active_image(gc)
    for image in (first, second):
        assert len(b"".join(gc.images.data(image.id))) == SIZE  # the middleware caches it
        wait_for("cached", functools.partial(is_cached, gc, image.id))
    rows = {r[0]: r for r in table_rows(ok(g("cache-list")).out)}
    assert rows[first.id][1] == "cached" and rows[first.id][4] == str(SIZE)

    nodes = [r[0] for r in table_rows(ok(g("cache-nodes-list", first.id)).out)]
    assert nodes == gc.cache.list_cached_nodes(first.id) == [server.url]

    # What a failed caching leaves behind (the cache's "invalid" directory) goes; the
    # cached images stay.
    invalid = Path(server.data_dir) / "cache" / "invalid" / str(uuid.uuid4())
    invalid.write_bytes(b"half an image")
    ok(g("cache-clean"))
    assert not invalid.exists()
    assert {first.id, second.id} <= cache_state(gc)[0]

    # Two images in a cache that has room for one: the least recently used goes.
    pruned = ok(g("cache-prune")).out.strip()
    assert pruned == f"Pruned 1 file(s), {SIZE} byte(s)."
    assert len(cache_state(gc)[0] & {first.id, second.id}) == 1

    ok(g("cache-clear", "--target", "cache"))
    assert cache_state(gc)[0] == set()


def test_cache_commands_report_each_failure(g: Any, gc: Any) -> None:
    good = active_image(gc)
    missing = str(uuid.uuid4())
    result = g("cache-queue", missing, good.id)
    assert result.rc == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 2 and missing in lines[0] and "404" in lines[0]
    assert "1 of 2 images failed" in lines[1]
    wait_for("cached", lambda: good.id in cache_state(gc)[0])  # the good one was queued
    ok(g("cache-clear"))


def test_cache_commands_need_a_direct_endpoint(server: GlanceServer) -> None:
    env = {"OS_AUTH_URL": "http://127.0.0.1:9/v3", "OS_USERNAME": "u", "OS_PASSWORD": "pw",
           "OS_PROJECT_NAME": "p", "OS_IMAGE_API_VERSION": "2"}
    for argv in (["cache-list"], ["cache-clear"], ["cache-queue", str(uuid.uuid4())]):
        result = run_glancefs(None, *argv, environ=env)
        assert result.rc == 1
        assert "Direct server endpoint needs to be provided" in result.error_line()

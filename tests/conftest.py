"""Real servers for the tests: one real Glance (v2) and one v1 server per
test session, each on a free port of 127.0.0.1, their data removed after."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from glancefs.api import Client, v1, v2
from glancefs.testing import stress
from glancefs.testing.glance_server import GlanceServer, free_port
from glancefs.testing.v1server import V1Server


def pytest_configure(config: pytest.Config) -> None:
    if stress.wanted():   # GLANCEFS_STRESS=1: threads interleave more often
        stress.apply()


@contextlib.contextmanager
def fresh_glance(tmp_path_factory: pytest.TempPathFactory, name: str,
                 **options: object) -> Iterator[GlanceServer]:
    """A real Glance of its own on a free port; its data removed after."""
    data_dir = tmp_path_factory.mktemp(name)
    server = GlanceServer(data_dir, free_port(), **options)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def glance_v2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    with fresh_glance(tmp_path_factory, "glance-v2") as server:
        yield server


# The cloud that converts: two file stores, the import methods the mount and the CLI use,
# and the image_conversion plugin turning every import into raw (as a Ceph-backed cloud does).
CONVERT_STORES = ("fast", "slow")


@pytest.fixture(scope="session")
def glance_convert(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    with fresh_glance(tmp_path_factory, "glance-convert", stores=CONVERT_STORES,
                      import_methods=("glance-direct", "web-download", "copy-image"),
                      convert_to="raw") as server:
        yield server


@pytest.fixture(scope="session")
def glance_v1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V1Server]:
    store = tmp_path_factory.mktemp("glance-v1")
    server = V1Server(store_dir=store)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(store, ignore_errors=True)


@pytest.fixture(scope="module")
def client(glance_v2: GlanceServer) -> v2.Client:
    """A v2 client of the shared real Glance."""
    return Client("2", endpoint=glance_v2.endpoint)


class ApiServer:
    """A server of either version, as the contract tests see it."""

    def __init__(self, version: str, server: GlanceServer | V1Server) -> None:
        self.version = version
        self.server = server
        self.endpoint = server.endpoint

    def client(self, endpoint: str | None = None, **kwargs: Any) -> v1.Client | v2.Client:
        return Client(self.version, endpoint=endpoint or self.endpoint, **kwargs)

    def stored_file(self, image_id: str) -> Path:
        """Where the server keeps the image's bytes (to tamper with them)."""
        if isinstance(self.server, GlanceServer):
            return Path(self.server.images_dir) / image_id
        return Path(self.server.store_dir) / image_id


@pytest.fixture(params=["1", "2"], ids=["v1", "v2"])
def api(request: pytest.FixtureRequest) -> ApiServer:
    name = "glance_v1" if request.param == "1" else "glance_v2"
    return ApiServer(request.param, request.getfixturevalue(name))


def sha512_of(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


@pytest.fixture
def random_bytes() -> Callable[[int], bytes]:
    def make(size: int) -> bytes:
        return os.urandom(size)
    return make

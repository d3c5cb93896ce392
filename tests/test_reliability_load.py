"""Bounded load through one mount: many readers with every byte checked, the
mount's memory and connections sampled over the run, and ``ls -l`` of a
large listing. Each test stops by itself (about a minute at most) and prints
the numbers it measured (run with ``-s`` to see them).
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from glancefs.api import Client
from glancefs.testing.glance_server import GlanceServer
from tests.conftest import fresh_glance
from tests.mount_support import ResourceSampler, images_with_copies, mounted

pytestmark = [pytest.mark.mount, pytest.mark.slow]

MiB = 1024 * 1024
READERS = 16
RUN_SECONDS = 25.0

READER = r'''
import hashlib, json, os, random, sys, time
path, copy, want, mode, seconds, seed = sys.argv[1:7]
deadline = time.monotonic() + float(seconds)
rng = random.Random(int(seed))
size = os.path.getsize(copy)
ref = os.open(copy, os.O_RDONLY)
done = {"whole": 0, "random": 0, "bytes": 0, "bad": []}
while time.monotonic() < deadline:
    if mode == "seq":
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
                done["bytes"] += len(block)
        if digest.hexdigest() != want:
            done["bad"].append("whole")
        done["whole"] += 1
    else:
        fd = os.open(path, os.O_RDONLY)
        try:
            for _ in range(50):
                off = rng.randrange(size)
                n = rng.randrange(1, 300_000)
                got = os.pread(fd, n, off)
                done["bytes"] += len(got)
                if got != os.pread(ref, n, off):
                    done["bad"].append((off, n))
                done["random"] += 1
        finally:
            os.close(fd)
print(json.dumps(done))
'''


@pytest.fixture(scope="module")
def own_glance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    """A server of its own: thousands of images must not slow the other tests."""
    with fresh_glance(tmp_path_factory, "glance-load") as server:
        yield server


def test_16_readers_every_byte_verified_memory_and_connections_flat(
        own_glance: GlanceServer, tmp_path: Path) -> None:
    glance = Client("2", endpoint=own_glance.endpoint)
    images = images_with_copies(glance, "load", 8, 12 * MiB, tmp_path)
    script = tmp_path / "reader.py"
    script.write_text(READER)
    with mounted(own_glance.endpoint, tmp_path / "mnt", options="ttl=5,memory=64M") as m, \
            ResourceSampler(m.proc.pid) as sampler:
        procs = []
        for r in range(READERS):
            image, copy = images[r % len(images)]
            mode = "seq" if r % 2 == 0 else "random"
            procs.append(subprocess.Popen(
                [sys.executable, str(script), str(m.path / f"load-{r % len(images)}.raw"),
                 str(copy), image.sha256, mode, str(RUN_SECONDS), str(r)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=RUN_SECONDS + 60)
            assert proc.returncode == 0, err
            results.append(json.loads(out))
        log = m.log_text()
    samples = [(s.at, s.rss_kib, s.tcp) for s in sampler.samples]
    assert all(not r["bad"] for r in results), [r["bad"] for r in results if r["bad"]]
    wholes = sum(r["whole"] for r in results)
    randoms = sum(r["random"] for r in results)
    total = sum(r["bytes"] for r in results)
    assert wholes >= 8 and randoms >= 400, (wholes, randoms)
    rss = [s[1] for s in samples]
    conns = [s[2] for s in samples]
    print(f"\nload: {READERS} readers, {RUN_SECONDS:.0f}s: {wholes} whole reads verified, "
          f"{randoms} random reads verified, {total / MiB:.0f} MiB read; "
          f"RSS KiB min/max/last {min(rss)}/{max(rss)}/{rss[-1]}; "
          f"TCP connections max {max(conns)}; samples {samples}")
    half = len(samples) // 2
    # Flat: the second half of the run grows no more than a little over the first.
    assert max(rss[half:]) < max(rss[:half]) * 1.3 + 32 * 1024, samples
    # Bounded by the client's pool (32 connections): a leak (one per reopen, and the
    # readers reopen all the time) goes past it within the run. Not "the second half
    # like the first": sequential readers add ranged streams when they wait, which on
    # a loaded machine happens later in the run as well (found in a fresh-clone run).
    assert max(conns) <= 40, samples
    assert "Traceback" not in log


def test_ls_l_of_many_images(own_glance: GlanceServer, tmp_path: Path) -> None:
    """``ls -l`` of 10,000 images, the issue's number.

    Glance (one worker, SQLite) creates about 20 images a second through the
    API, so 10,000 would take some 8 minutes: a few hundred are created through
    the API (to measure that rate) and the rest are copies of one of them
    written straight into the server's database, which the API then lists like
    any other image.
    """
    glance = Client("2", endpoint=own_glance.endpoint)
    prefix, target, through_api = "many-", 10_000, 300

    def create(n: int) -> str:
        return glance.images.create(name=f"{prefix}{n:05d}", disk_format="raw",
                                    container_format="bare").id

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(create, range(through_api)))
    rate = through_api / (time.monotonic() - start)
    con = sqlite3.connect(own_glance.db_file)
    try:
        cols = [row[1] for row in con.execute("PRAGMA table_info(images)")]
        template = dict(zip(cols, con.execute("SELECT * FROM images WHERE id = ?",
                                              (ids[0],)).fetchone(), strict=True))
        rows = []
        for n in range(through_api, target):
            row = dict(template, id=str(uuid.uuid4()), name=f"{prefix}{n:05d}")
            rows.append(tuple(row[c] for c in cols))
        with con:
            con.executemany(f"INSERT INTO images ({', '.join(cols)}) VALUES "
                            f"({', '.join('?' * len(cols))})", rows)
    finally:
        con.close()
    # The mount lists the first page before it serves: beside the rest of the suite on
    # 2 cores, Glance's answer for 10,000 images once took longer than the default
    # metadata_timeout (10 s) and the mount refused to start. What is timed here is the
    # listing, asserted below; deadlines have tests of their own (test_mount_deadlines).
    with mounted(own_glance.endpoint, tmp_path / "mnt",
                 options="ttl=600,metadata_timeout=60") as m:
        t0 = time.monotonic()
        done = subprocess.run(["ls", "-l", str(m.path)], capture_output=True, text=True,
                              timeout=120, check=False)
        listing = time.monotonic() - t0
        assert done.returncode == 0, done.stderr
        t0 = time.monotonic()
        again = subprocess.run(["ls", "-l", str(m.path)], capture_output=True, text=True,
                               timeout=120, check=False)
        relisting = time.monotonic() - t0
        t0 = time.monotonic()
        by_id = len(os.listdir(m.path / ".by-id"))
        by_id_time = time.monotonic() - t0
    shown = [ln for ln in done.stdout.splitlines() if re.search(rf" {prefix}\d{{5}}$", ln)]
    assert len(shown) == target
    assert all(ln.startswith("-r--r--r--") for ln in shown)
    assert len(again.stdout.splitlines()) == len(done.stdout.splitlines())
    assert by_id >= target
    print(f"\nls -l: API creates {rate:.0f} images/s ({target} would take "
          f"{target / rate:.0f}s); ls -l of {target}: {listing:.2f}s, again {relisting:.2f}s, "
          f".by-id listing {by_id_time:.2f}s")
    assert listing < 60

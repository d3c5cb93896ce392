"""Memory stays flat: a 1 GiB upload and download hold a few chunks at most.

The client runs in a subprocess so its peak RSS (VmHWM) is its own; the
figure is compared with the same process's RSS right after start-up.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GIB = 1024 ** 3
MIB = 1024 ** 2
# Budget above the start-up RSS: a few 1 MiB chunks plus the HTTP stack's
# buffers. A client that held the image would need 1024 MiB.
BUDGET = 64 * MIB

CLIENT = r'''
import hashlib, json, sys
from glancefs import Client

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

version, endpoint, path = sys.argv[1:4]
glance = Client(version, endpoint=endpoint)
baseline = rss("VmRSS:")
with open(path, "rb") as f:
    image = glance.images.create(name="memory-1gib", disk_format="raw",
                                 container_format="bare")
    image.update(data=f)
after_upload = rss("VmHWM:")
digest = hashlib.md5()
size = 0
for chunk in image.data():
    digest.update(chunk)
    size += len(chunk)
peak = rss("VmHWM:")
image.delete()
print(json.dumps({"baseline": baseline, "after_upload": after_upload, "peak": peak,
                  "md5": digest.hexdigest(), "size": size}))
'''


@pytest.fixture(scope="module")
def one_gib_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("big") / "one-gib.raw"
    digest = hashlib.md5()
    block = bytearray(os.urandom(MIB))
    with open(path, "wb") as f:
        for i in range(GIB // MIB):
            block[:8] = i.to_bytes(8, "little")  # every MiB differs
            digest.update(block)
            f.write(block)
    return path, digest.hexdigest()


@pytest.mark.slow
def test_one_gib_upload_and_download_stay_flat(api, one_gib_file) -> None:
    path, md5 = one_gib_file
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, api.version, api.endpoint, str(path)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["size"] == GIB and figures["md5"] == md5
    growth = figures["peak"] - figures["baseline"]
    print(f"\nv{api.version}: baseline RSS {figures['baseline'] / MIB:.1f} MiB, peak after "
          f"upload {figures['after_upload'] / MIB:.1f} MiB, peak after download "
          f"{figures['peak'] / MIB:.1f} MiB (growth {growth / MIB:.1f} MiB)")
    assert growth < BUDGET

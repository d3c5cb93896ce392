"""Times that tools set are kept (the ``mtime`` property): rsync, cp -p, touch.

Through the kernel mount, against the real Glance (v2) and the v1 server.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from glancefs.api.service import parse_time
from tests.conftest import ApiServer
from tests.mount_support import mounted

pytestmark = pytest.mark.slow

PAST = [1_000_000_000_123_456_789, 1_300_000_000_000_000_000, 1_600_000_000_987_654_321]


def rsync(src: Path, dst: Path, only: str = "*") -> dict[str, int]:
    """rsync -a of the files named ``only`` (the shared Glance holds other
    tests' images too, some unreadable on purpose)."""
    done = subprocess.run(["rsync", "-a", "--stats", f"--include={only}", "--exclude=*",
                           f"{src}/", f"{dst}/"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    stats = {}
    for key, label in (("files", "Number of regular files transferred"),
                       ("bytes", "Total transferred file size")):
        found = re.search(rf"{label}: ([\d,]+)", done.stdout)
        assert found, done.stdout
        stats[key] = int(found.group(1).replace(",", ""))
    return stats


def by_name(api: ApiServer, prefix: str) -> dict[str, dict]:
    return {i["name"]: i for i in api.client().images.list() if
            (i.get("name") or "").startswith(prefix)}


def test_rsync_twice_sends_nothing_the_second_time(api: ApiServer, tmp_path: Path) -> None:
    prefix = f"rs{api.version}-"
    src = tmp_path / "src"
    src.mkdir()
    for n, when in enumerate(PAST):
        path = src / f"{prefix}{n}.raw"
        path.write_bytes(os.urandom(300_000 + n * 1000))
        os.utime(path, ns=(when, when))
    with mounted(api.endpoint, tmp_path / "mnt", options="ttl=1",
                 api_version=api.version) as m:
        first = rsync(src, m.path)
        assert first["files"] == len(PAST)
        before = {name: image["id"] for name, image in by_name(api, prefix).items()}
        assert sorted(before) == sorted(p.name for p in src.iterdir())
        second = rsync(src, m.path)
        assert second == {"files": 0, "bytes": 0}
        assert {name: image["id"] for name, image in by_name(api, prefix).items()} == before
        for path in src.iterdir():
            assert os.stat(m.path / path.name).st_mtime_ns == path.stat().st_mtime_ns
        # And out of the mount: the times come along.
        back = tmp_path / "back"
        assert rsync(m.path, back, only=f"{prefix}*")["files"] == len(PAST)
        for path in src.iterdir():
            assert (back / path.name).stat().st_mtime_ns == path.stat().st_mtime_ns


def test_cp_p_and_touch_keep_the_time_and_no_modtime_shows_updated_at(
        api: ApiServer, tmp_path: Path) -> None:
    name = f"cpp{api.version}.raw"
    src = tmp_path / name
    src.write_bytes(os.urandom(200_000))
    os.utime(src, ns=(PAST[0], PAST[0]))
    with mounted(api.endpoint, tmp_path / "mnt", options="ttl=1",
                 api_version=api.version) as m:
        subprocess.run(["cp", "-p", str(src), str(m.path / name)], check=True, timeout=120)
        assert os.stat(m.path / name).st_mtime_ns == PAST[0]
        image = by_name(api, name)[name]
        properties = image.get("properties") or image
        assert properties["mtime"] == "1000000000.123456789"
        subprocess.run(["touch", "-d", "2001-02-03 04:05:06 UTC", str(m.path / name)],
                       check=True, timeout=60)
        shown = os.stat(m.path / name).st_mtime_ns
        assert shown == 981_173_106 * 1_000_000_000
        out = tmp_path / "out.raw"
        subprocess.run(["cp", "-p", str(m.path / name), str(out)], check=True, timeout=120)
        assert out.stat().st_mtime_ns == shown
        # find sees the kept time: February 2001 is older than the source's
        # September 2001 (it would be newer with updated_at, which is now).
        newer = subprocess.run(["find", str(m.path), "-name", name, "-newer", str(src)],
                               capture_output=True, text=True, check=True).stdout
        assert name not in newer
    with mounted(api.endpoint, tmp_path / "mnt2", options="ttl=1,no_modtime",
                 api_version=api.version) as m:
        image = by_name(api, name)[name]
        assert os.stat(m.path / name).st_mtime == pytest.approx(
            parse_time(image["updated_at"]), abs=1)
        # utimes is accepted without effect, as before this option existed.
        subprocess.run(["touch", "-d", "1999-01-01", str(m.path / name)], check=True,
                       timeout=60)
        image = by_name(api, name)[name]
        assert (image.get("properties") or image)["mtime"] == "981173106.000000000"

"""scripts/bench runs end to end with tiny sizes and reports every figure it promises.

Times are never asserted (they belong to the benchmark's report, not to the suite): this only
shows the benchmark still works, so the README's command does not rot between full runs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_runs_with_small_sizes(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--size-mib", "4",
         "--images", "30", "--repeat", "1", "--hash-mib", "16", "--json", str(out),
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["errors"] == []
    figures = report["figures"]
    for key in ("sha512_rate", "md5_rate", "dl_glancefs", "dl_curl", "dl_glanceclient",
                "up_glancefs", "up_curl", "up_glanceclient", "client_rss_download",
                "list_glance_cli", "far_rtt", "far_glanceclient", "far_glancefs",
                "far_glancefs_streams1", "far_glancefs_streams", "far_curl",
                "far_glancefs_curl", "far_parts_bound"):
        assert figures[key]["value"] is not None and figures[key]["value"] > 0, key
    # The mount figures, when the mount works here (a note says why otherwise).
    if not any(note.startswith("mount: not available") for note in report["notes"]):
        for key in ("mount_cold_verify_on", "mount_cold_verify_off", "random_kib_per_read",
                    "list_ls_warm", "mount_cold_verify_on_cpu_bound", "dl_curl_cpu_bound",
                    "fuse_ceiling", "mount_cold_verify_on_gets", "far_mount_cold",
                    "far_mount_bound", "mount_cold_verify_on_streams1", "mount_read_streams",
                    "far_mount_cold_streams1", "far_mount_streams", "clouds_pipe",
                    "clouds_cp", "clouds_cp_pipe", "receive_floor", "receive_chunks",
                    "far_qemu_info_requests", "import_cp", "import_glanceclient",
                    "apart", "apart_vs_glanceclient", "mount_read_apart", "far_apart",
                    "apart_noverify", "apart_noverify_vs_curl",
                    "far_mount_apart", "mount_hash_busy", "far_mount_hash_busy",
                    "fresh_pages_before", "fresh_pages_after", "fresh_pages_floors"):
            assert figures[key]["value"] is not None, key
        # From the mount's counters, not its log: a tiny image hashes in very little CPU
        # time, which is a figure (or, below the clock's resolution, a note), never missing.
        hashed = figures["mount_hash_rate"]
        assert hashed["value"] is not None or hashed["note"].startswith("below measurable"), \
            hashed
        assert figures["mount_cold_verify_on_fetched"]["value"] >= 1
        paired = figures["mount_cpu_floor_paired"]
        assert paired["value"] is not None or paired["note"].startswith("not measured"), paired
    # The far link's delay is in every round trip (20 ms each way by default).
    assert figures["far_rtt"]["value"] >= 40
    assert "figure" in done.stdout and "sha512 rate" in done.stdout
    # Nothing is left behind: no mount, and the work directory is removed.
    with open("/proc/self/mounts") as mounts:
        assert str(tmp_path) not in mounts.read()
    assert not any((tmp_path / "work").iterdir())

"""The counters' JSON (glancefs.fs.stats) stays within what an xattr may hold."""
from __future__ import annotations

import json
import threading

from glancefs.fs.stats import XATTR_SIZE_MAX, MountStats


def test_counts_add_up_from_many_threads() -> None:
    stats = MountStats()

    def count() -> None:
        for _ in range(10_000):
            stats.add("a", "name-a", bytes=3, gets=1)
    threads = [threading.Thread(target=count) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats.add(None, upload_failures=1)      # no image: the totals only
    data = json.loads(stats.to_json(retries=2))
    assert data["images"]["a"]["bytes"] == 120_000 and data["images"]["a"]["gets"] == 40_000
    assert data["totals"]["bytes"] == 120_000 and data["totals"]["upload_failures"] == 1
    assert data["retries"] == 2 and data["images_omitted"] == 0


def test_many_images_keep_the_most_recent_within_the_xattr_limit() -> None:
    stats = MountStats()
    for n in range(3000):
        stats.add(f"{n:036d}", f"image-{n}", bytes=n, gets=1)
    stats.add(f"{5:036d}", gets=1)          # active again: among the most recent
    text = stats.to_json()
    assert len(text) <= XATTR_SIZE_MAX
    data = json.loads(text)
    kept = list(data["images"])
    assert data["images_omitted"] == 3000 - len(kept) > 0
    assert kept[-1] == f"{5:036d}" and f"{2999:036d}" in kept and f"{0:036d}" not in kept
    assert data["totals"]["gets"] == 3001 and data["totals"]["bytes"] == sum(range(3000))

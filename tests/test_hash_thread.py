"""The hashing thread's own account of its time (glancefs.api.download.BackgroundHash):
what the mount's counters and scripts/bench report of a verified read."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from glancefs.api.download import BackgroundHash

MiB = 1024 * 1024


def spinning_on(core: int) -> subprocess.Popen[bytes]:
    """A process that keeps ``core`` busy, once it has started spinning (it says so
    on its stdout just before)."""
    spinner = subprocess.Popen([sys.executable, "-c", "print(flush=True)\nwhile True: pass"],
                               stdout=subprocess.PIPE)
    os.sched_setaffinity(spinner.pid, {core})
    assert spinner.stdout is not None and spinner.stdout.readline() == b"\n"
    return spinner


@pytest.mark.skipif(not Path("/proc/thread-self/schedstat").exists(),
                    reason="the kernel keeps no scheduler statistics")
def test_a_hash_sharing_its_core_says_how_long_it_waited_for_one() -> None:
    core = min(os.sched_getaffinity(0))
    spinner = spinning_on(core)
    try:
        mask = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {core})   # the hashing thread inherits this thread's
        try:
            hashing = BackgroundHash(hashlib.sha512(), depth=4)
        finally:
            os.sched_setaffinity(0, mask)
        block = os.urandom(MiB)
        for _ in range(64):
            hashing.update(block)
        hashing.hexdigest()
    finally:
        spinner.kill()
        spinner.communicate()    # reaps it and closes its stdout
    # Two busy tasks on one core take turns: the hash waits about as long as it runs.
    assert hashing.core_wait_seconds > 0.25 * hashing.cpu_seconds > 0, (
        hashing.core_wait_seconds, hashing.cpu_seconds)

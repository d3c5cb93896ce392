"""The hashing thread's own account of its time (glancefs.api.download.BackgroundHash):
what the mount's counters and scripts/bench report of a verified read."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glancefs.api.download import BackgroundHash

MiB = 1024 * 1024


def spinning_on(core: int) -> subprocess.Popen[bytes]:
    """A process that keeps ``core`` busy, once it has started spinning."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    os.sched_setaffinity(spinner.pid, {core})
    deadline = time.monotonic() + 10
    while True:
        fields = Path(f"/proc/{spinner.pid}/stat").read_text().rsplit(")", 1)[1].split()
        if int(fields[11]) > 0:     # utime: it has run a clock tick in user space
            return spinner
        assert time.monotonic() < deadline, "the spinning process never ran"
        time.sleep(0.01)


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
        spinner.wait()
    # Two busy tasks on one core take turns: the hash waits about as long as it runs.
    assert hashing.core_wait_seconds > 0.25 * hashing.cpu_seconds > 0, (
        hashing.core_wait_seconds, hashing.cpu_seconds)

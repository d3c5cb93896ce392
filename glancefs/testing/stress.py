"""Threads interleaved where they rarely do: a stress mode for tests (GLANCEFS_STRESS=1).

Why it is shaped this way:

* The mount's read path hands blocks from fetch threads to trio, and its upload
  from trio to a sending thread. A race between them shows only when a thread
  runs on at the wrong moment: the reader's hand-over (a thread's position read
  before its block was queued, so the block was fetched a second time) failed
  one CI run, and no run on a developer's machine in 16.
* Two delays widen those moments without changing what the code does. Python
  switches threads every 0.1 ms instead of 5, and a worker thread holds the
  mount's counters' lock 1 ms longer after it counts (``MountStats.add``; fetch
  threads count every chunk), so trio, counting meanwhile, gives up the GIL and
  the thread runs on to its next step. With both, that race's test failed in 5
  of 6 runs before the fix, and passed 6 of 6 after it.
* Only delays: right code passes under them as it does without, and they
  change no decision that rests on a deadline (seconds are not reached by
  milliseconds). Decisions that rest on measured rates (whether the reader
  gives a whole try of streams back) do see the delays, so tests do not ask
  for those verdicts under stress (README.rst, the test section).
* Applied in the test process (tests/conftest.py) and, through
  ``tests/stress/sitecustomize.py`` on the PYTHONPATH, in the mounts the tests
  start (tests/mount_support.py), so races of the real mount show too.
  ``scripts/test`` runs the threads' tests once more so.
"""
from __future__ import annotations

import os
import sys
import threading
import time

from glancefs.fs.stats import MountStats

ENV = "GLANCEFS_STRESS"
SWITCH_INTERVAL = 1e-4   # seconds between Python's thread switches (5e-3 by default)
LOCK_HOLD = 0.001        # seconds a worker thread holds the counters' lock after counting


def wanted() -> bool:
    return os.environ.get(ENV) == "1"


def apply() -> None:
    """Interleave threads more often in this process (once; idempotent)."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    if getattr(MountStats.add, "stressed", False):
        return
    add = MountStats.add

    def add_slowly(self: MountStats, image_id: str | None, name: str | None = None,
                   **counts: float) -> None:
        add(self, image_id, name, **counts)
        if threading.current_thread() is not threading.main_thread():
            with self._lock:
                time.sleep(LOCK_HOLD)

    add_slowly.stressed = True  # type: ignore[attr-defined]
    MountStats.add = add_slowly  # type: ignore[method-assign]

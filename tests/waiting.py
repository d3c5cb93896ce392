"""Waiting in a test for something the system does on its own time: poll the
condition with a deadline, never sleep a fixed time and hope. The deadline is
generous (a loaded 2-core CI machine), the poll is frequent, so a fast machine
waits no longer than it needs."""
from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.2) -> None:
    """Return once ``check()`` is true; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(interval)

"""glancefs.procfs: what /proc says of real processes (this one and children it starts)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from glancefs.procfs import (
    cpu_seconds,
    group_cpu_seconds,
    is_mounted,
    is_running,
    start_ticks,
    stat_fields,
    status_kib,
)
from tests.waiting import wait_until


def test_a_command_name_with_parentheses_and_spaces_does_not_shift_the_fields(
        tmp_path: Path) -> None:
    odd = tmp_path / "a) b (c"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", odd)
    child = subprocess.Popen([str(odd), "60"], start_new_session=True)
    try:
        fields = stat_fields(child.pid)
        assert fields is not None and fields[0] in ("R", "S")
        assert int(fields[1]) == os.getpid()                  # field 4: the parent
        mine = start_ticks(os.getpid())
        assert mine is not None and (start_ticks(child.pid) or 0) >= mine
        assert is_running(child.pid)
        assert group_cpu_seconds(os.getpgid(child.pid)) >= cpu_seconds(child.pid) >= 0.0
        child.send_signal(signal.SIGKILL)
        # Killed, not yet reaped: a zombie, which does not run.
        wait_until(lambda: (stat_fields(child.pid) or ["?"])[0] == "Z", 10,
                   "the child is a zombie", interval=0.01)
        assert not is_running(child.pid)
    finally:
        child.kill()
        child.wait()
    assert stat_fields(child.pid) is None and start_ticks(child.pid) is None
    assert not is_running(child.pid) and cpu_seconds(child.pid) == 0.0
    assert status_kib(child.pid, "VmRSS") is None


def test_cpu_seconds_are_the_process_user_and_system_time() -> None:
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    times = os.times()
    # Clock ticks (1/100 s) against the kernel's finer account of the same time.
    assert abs(cpu_seconds(os.getpid()) - (times.user + times.system)) < 0.1


def test_memory_figures_and_mounts() -> None:
    rss, peak = status_kib(os.getpid(), "VmRSS"), status_kib(os.getpid(), "VmHWM")
    assert rss is not None and peak is not None and peak >= rss > 1024
    assert status_kib(os.getpid(), "NoSuchField") is None
    assert is_mounted("/proc") and not is_mounted("/proc/self")

"""What Linux's ``/proc`` says of a process or of the mounts: one reader per file, so
each file's quirks are handled in one place (the write journal, the bench and the
tests read them).

* ``/proc/PID/stat``: the command name (field 2) may hold spaces and parentheses,
  so the fields are counted from its last ``)``. :func:`stat_fields` returns them
  from field 3 (the state) on: ``fields[n]`` is field ``n + 3`` of proc(5).
* ``/proc/PID/status``: ``Name:  value kB`` lines (:func:`status_kib`).
* ``/proc/self/mounts``: one mount a line, its mount point second
  (:func:`is_mounted`; octal escapes aside, which no path here holds).

A reader answers None (or False, or 0) once the process is gone; it never raises for
that, since a process may end between any two reads.

Not here: ``glancefs.testing.gunicorn_server`` has its own check that a process runs,
because it is run by path under a bare interpreter that cannot import this package;
``glancefs.api.download.core_wait`` reads the calling thread's ``schedstat``.
"""
from __future__ import annotations

import os
from pathlib import Path

_STATE = 0          # field 3: R, S, D, Z (zombie), X (dead), ...
_PGRP = 2           # field 5
_UTIME, _STIME = 11, 12   # fields 14 and 15, in clock ticks
_START = 19         # field 22: start time, clock ticks after boot


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name; None once gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = text[text.rfind(b")") + 1:].decode("ascii", "replace").split()
    return fields or None


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot): with the boot, what tells a
    process from a later one given the same pid. None if there is no such process."""
    fields = stat_fields(pid)
    try:
        return int(fields[_START]) if fields else None
    except (IndexError, ValueError):
        return None


def is_running(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (a killed child not yet reaped is dead)."""
    fields = stat_fields(pid)
    return fields is not None and fields[_STATE] not in ("Z", "X")


def _cpu(fields: list[str]) -> float:
    return (int(fields[_UTIME]) + int(fields[_STIME])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str) -> float:
    """CPU seconds (user and system, all its threads) ``pid`` has used; 0.0 once gone."""
    fields = stat_fields(pid)
    return _cpu(fields) if fields else 0.0


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds of every process in a process group (a gunicorn master and its
    workers), as :func:`cpu_seconds`."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(entry.name)
            if fields and int(fields[_PGRP]) == pgid:
                total += _cpu(fields)
    return total


def status_kib(pid: int | str, field: str) -> int | None:
    """A KiB figure of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``); None once gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """True if something is mounted on ``path`` (as seen from this process)."""
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)

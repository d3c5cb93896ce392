"""Helpers for the tests that mount glancefs through the real kernel.

The mount runs as a separate process (``python -m glancefs.cli.mount_helper
... -f``), as a user would run it, and is always unmounted afterwards, even
when a test fails. Without /dev/fuse the mount tests fail (CI has it and runs
as root) unless ``GLANCEFS_ALLOW_SKIP_MOUNT=1`` asks to skip them.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import mmap
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from glancefs.api import v1, v2
from glancefs.procfs import is_mounted, status_kib
from glancefs.testing import stress

ROOT = Path(__file__).resolve().parent.parent
MOUNT_TIMEOUT = 30.0
FAILURE_LOG_LINES = 60   # of the mount's log, printed when a test fails inside mounted()


def require_fuse() -> None:
    if os.path.exists("/dev/fuse") and os.access("/dev/fuse", os.R_OK | os.W_OK):
        return
    if os.environ.get("GLANCEFS_ALLOW_SKIP_MOUNT") == "1":
        pytest.skip("/dev/fuse is not usable here (GLANCEFS_ALLOW_SKIP_MOUNT=1)")
    pytest.fail("/dev/fuse is not usable: the mount tests need it "
                "(set GLANCEFS_ALLOW_SKIP_MOUNT=1 to skip them outside CI)")


def mount_env(endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_IMAGE_URL"] = endpoint
    # Under GLANCEFS_STRESS=1 the mount interleaves its threads as the tests do
    # (glancefs.testing.stress, applied by tests/stress/sitecustomize.py).
    stressed = str(ROOT / "tests" / "stress") if stress.wanted() else None
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), stressed,
                                                      env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def unmount(path: Path) -> None:
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", str(path)], capture_output=True)
    if is_mounted(path):
        subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True)


@dataclass
class Mounted:
    path: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        unmount(self.path)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            return None
        finally:
            unmount(self.path)


@contextlib.contextmanager
def mounted(endpoint: str, where: Path, options: str = "", api_version: str = "2",
            source: str = "glance", env: dict[str, str] | None = None) -> Iterator[Mounted]:
    """Mount ``endpoint`` at ``where`` in the foreground in a child process."""
    require_fuse()
    where.mkdir(parents=True, exist_ok=True)
    log = where.parent / f"{where.name}.log"
    opts = ",".join(filter(None, [f"api_version={api_version}", f"log={log}", options]))
    cmd = [sys.executable, "-m", "glancefs.cli.mount_helper", source, str(where), "-f",
           "-o", opts]
    proc = subprocess.Popen(cmd, env=env or mount_env(endpoint), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    mount = Mounted(where, proc, log)
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(where):
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise AssertionError(f"mount exited with {proc.returncode}: {out}\n"
                                     f"{mount.log_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not mounted after {MOUNT_TIMEOUT}s\n{mount.log_text()}")
            time.sleep(0.05)
        yield mount
    except BaseException:
        # pytest shows this with the failure: what the mount saw is most of why.
        print(f"--- the mount's log ({log}), last {FAILURE_LOG_LINES} lines ---\n"
              + "\n".join(mount.log_text().splitlines()[-FAILURE_LOG_LINES:]))
        raise
    finally:
        mount.stop()


@contextlib.contextmanager
def held_fifo(path: Path, mib: int) -> Iterator[threading.Event]:
    """A FIFO at ``path`` that gives ``mib`` MiB of random data and then stays open, so a
    reader (``cp``) waits for more: a copy surely still running. Closed when the event
    it yields is set, or when the block ends."""
    os.mkfifo(path)
    stop = threading.Event()

    def feed() -> None:
        try:
            with open(path, "wb") as fifo:
                for _ in range(mib):
                    fifo.write(os.urandom(1 << 20))
                fifo.flush()
                stop.wait(120)
        except BrokenPipeError:
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield stop
    finally:
        stop.set()
        feeder.join(timeout=10)


# -- images ----------------------------------------------------------------------------


@dataclass
class Image:
    id: str
    name: str | None
    data: bytes
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def make_image(client: v1.Client | v2.Client, name: str | None, data: bytes,
               disk_format: str = "raw", properties: dict[str, str] | None = None) -> Image:
    """Create and upload an image with either API version."""
    props = dict(properties or {})
    fields: dict[str, Any] = {"disk_format": disk_format, "container_format": "bare"}
    if name is not None:
        fields["name"] = name
    if isinstance(client, v2.Client):
        image = client.images.create(**fields, **props)
        client.images.upload(image["id"], data)
    else:
        image = client.images.create(data=data, properties=props, **fields)
    return Image(image["id"], name, data, props)


def images_with_copies(client: v1.Client | v2.Client, prefix: str, count: int, size: int,
                       where: Path) -> list[tuple[Image, Path]]:
    """``count`` random images of about ``size`` bytes (each a little longer than
    the one before, so no two are alike), each with a local copy to compare
    reads against."""
    made = []
    for n in range(count):
        data = os.urandom(size + n * 4099)
        image = make_image(client, f"{prefix}-{n}.raw", data)
        copy = where / f"{image.id}.bin"
        copy.write_bytes(data)
        made.append((image, copy))
    return made


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# -- the mount process's memory and connections over a run ------------------------------


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (0 once it is gone)."""
    return status_kib(pid, "VmRSS") or 0


def tcp_connections(pid: int) -> int:
    """TCP connections ``pid`` holds, in any state but LISTEN (``ss``)."""
    out = subprocess.run(["ss", "-tnpH", "state", "all", "exclude", "listening"],
                         capture_output=True, text=True, check=False).stdout
    return sum(1 for line in out.splitlines() if f"pid={pid}," in line)


def socket_fds(pid: int) -> int:
    """Open socket descriptors of ``pid``: a leaked socket shows here whatever its state."""
    count = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    count += 1
    return count


@dataclass(frozen=True)
class Sample:
    at: float          # seconds since sampling began
    rss_kib: int
    tcp: int
    sockets: int


class ResourceSampler:
    """Samples a process's RSS, TCP connections and socket descriptors every
    ``interval`` seconds in a thread, from ``with`` until its end."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ResourceSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            self.samples.append(Sample(round(time.monotonic() - start, 1), rss_kib(self.pid),
                                       tcp_connections(self.pid), socket_fds(self.pid)))
            self._stop.wait(self.interval)

    def window(self, first: float, last: float) -> list[Sample]:
        """The samples from fraction ``first`` to ``last`` of the run (0.0 to 1.0)."""
        n = len(self.samples)
        return self.samples[int(n * first):max(int(n * last), int(n * first) + 1)]


@contextlib.contextmanager
def held_in_page_cache(path: Path) -> Iterator[None]:
    """Keep ``path``'s pages in the kernel's page cache while inside (mapped, and
    locked with ``mlock``). A test whose point is that a file read before comes from
    the page cache needs it: the kernel may page out cache nobody touched (this
    machine's kernel runs DAMON's ``pageout`` scheme, which took pages of a file read
    ten seconds before), and the mount would then be asked for them again."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mlock.argtypes = libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address is None or address == ctypes.c_void_p(-1).value:
            raise OSError(ctypes.get_errno(), f"mmap of {path}")
        try:
            if libc.mlock(address, size) != 0:
                raise OSError(ctypes.get_errno(), f"mlock of {path}")
            yield
        finally:
            libc.munmap(address, size)
    finally:
        os.close(fd)

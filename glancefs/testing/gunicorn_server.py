"""A WSGI app served by gunicorn from a data dir on 127.0.0.1: what the real servers the tests
start (``glance_server``, ``keystone_server``) have in common.

* ``ensure_venv`` installs the app and gunicorn once into their own venv under ``cache_dir()``.
* ``GunicornServer`` starts gunicorn in the background (its own session, so the master and its
  worker are signalled as a group), with a pid file, a log and a state file in the data dir,
  waits until it answers, and stops, kills or restarts it. A subclass says what to serve.
* ``cli_parser``, ``cli_start`` and ``cli_stop_or_status`` make the ``start DIR PORT``,
  ``stop DIR`` and ``status DIR`` command lines.

Standard library only: the servers' modules, run by path under a bare python3, import it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

_MARKER_NAME = ".glancefs-installed"

_S = TypeVar("_S", bound="GunicornServer")


def cache_dir() -> Path:
    """Where the servers' venvs are kept: GLANCEFS_CACHE, else the user's cache
    directory (``~/.cache/glancefs``: /root/.cache/glancefs for root, as before;
    a pip-installed glancefs.testing may run as any user)."""
    if os.environ.get("GLANCEFS_CACHE"):
        return Path(os.environ["GLANCEFS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "glancefs"


def ensure_venv(venv: Path, pins: tuple[str, ...], scripts: tuple[str, ...] = ("gunicorn",),
                pip_options: tuple[str, ...] = ()) -> Path:
    """Create ``venv`` with ``pins`` installed once; later calls only check the marker and
    that the console ``scripts`` are there (milliseconds)."""
    marker = venv / _MARKER_NAME
    wanted = "\n".join(pins) + "\n"

    def ready() -> bool:
        try:
            return marker.read_text() == wanted and all(
                (venv / "bin" / script).exists() for script in scripts)
        except OSError:
            return False

    if ready():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Several test processes may get here at once: one installs, the others wait.
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready():
            return venv
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        proc = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *pip_options, *pins],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pip install {' '.join(pins)} failed in {venv}:\n"
                               f"{proc.stdout[-4000:]}")
        marker.write_text(wanted)
    return venv


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (a killed child not yet reaped is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def is_our_gunicorn(pid: int, data_dir: Path) -> bool:
    """Guard against pid reuse: only signal a gunicorn serving this data dir."""
    # gunicorn rewrites its title ("gunicorn: master [...]"), so match the working directory.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return "gunicorn" in cmdline and Path(cwd) == Path(data_dir)


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def read_state(path: Path) -> dict[str, Any]:
    """The state file a server wrote when it started; empty if there is none."""
    state: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        state = json.loads(Path(path).read_text())
    return state


class GunicornServer:
    """One gunicorn serving ``<wsgi_module>:application`` from ``data_dir`` on 127.0.0.1.

    Subclasses set the class attributes and implement ``_install`` (the venv), ``_bin`` (a
    console script in it), ``_write_config`` and ``_setup`` (what runs before gunicorn).
    """

    what = "server"                   # "a <what> already runs from DIR"
    process = "gunicorn"              # in errors, and gunicorn's --name <process>-<port>
    file_stem = "gunicorn"            # <file_stem>.pid and <file_stem>.log in data_dir
    state_file_name = "glancefs-gunicorn.json"
    wsgi_module = "wsgi"              # written into data_dir, which is on gunicorn's path
    config_dir_var = ""               # environment variable that names etc_dir
    threads = 8
    timeout = 600
    keep_alive = 2                    # seconds an idle connection is kept (gunicorn's default)
    ready_path = "/"                  # GET this until it answers with one of ready_statuses
    ready_statuses: tuple[int, ...] = (200,)

    def __init__(self, data_dir: Path | str, port: int) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = int(port)
        self._proc: subprocess.Popen[bytes] | None = None

    # -- hooks -------------------------------------------------------------------------------

    def _install(self) -> None:
        raise NotImplementedError

    def _bin(self, name: str) -> Path:
        raise NotImplementedError

    def _write_config(self) -> None:
        raise NotImplementedError

    def _setup(self) -> None:
        pass

    def _access_logfile(self) -> str:
        return "-"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[self.config_dir_var] = str(self.etc_dir)
        env.pop("PYTHONPATH", None)
        return env

    def _state(self, pid: int) -> dict[str, Any]:
        return {"port": self.port, "pid": pid}

    # -- paths -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def etc_dir(self) -> Path:
        return self.data_dir / "etc"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / f"{self.file_stem}.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / f"{self.file_stem}.log"

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        pid = self.pid
        return pid is not None and pid_alive(pid) and is_our_gunicorn(pid, self.data_dir)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self: _S) -> _S:
        if self.is_running():
            raise RuntimeError(f"a {self.what} already runs from {self.data_dir} "
                               f"(pid {self.pid})")
        if port_in_use(self.port):
            raise RuntimeError(f"port {self.port} on 127.0.0.1 is already in use")
        self._install()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._setup()
        cmd = [
            str(self._bin("gunicorn")),
            "--workers", "1", "--threads", str(self.threads), "--timeout", str(self.timeout),
            "--graceful-timeout", "5", "--keep-alive", str(self.keep_alive),
            # gunicorn 23+ otherwise opens one control socket per user at a
            # fixed path, which several servers at once fight over.
            "--no-control-socket",
            "--bind", f"127.0.0.1:{self.port}",
            "--pythonpath", str(self.data_dir),
            "--access-logfile", self._access_logfile(),
            "--name", f"{self.process}-{self.port}",
            f"{self.wsgi_module}:application",
        ]
        with open(self.log_file, "ab") as log:
            log.write(f"\n=== glancefs: starting {' '.join(cmd)}\n".encode())
            log.flush()
            # Own session: stop()/kill() signal the whole group (master and worker).
            self._proc = subprocess.Popen(cmd, cwd=self.data_dir, env=self._env(),
                                          stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(f"{self._proc.pid}\n")
        (self.data_dir / self.state_file_name).write_text(
            json.dumps(self._state(self._proc.pid)) + "\n")
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"{self.process} exited with {self._proc.returncode} while starting; "
                    f"log {self.log_file}:\n{tail(self.log_file)}")
            try:
                with urllib.request.urlopen(f"{self.url}{self.ready_path}", timeout=5) as r:
                    if r.status in self.ready_statuses:
                        return
                    last = f"HTTP {r.status}"
            except urllib.error.HTTPError as e:
                if e.code in self.ready_statuses:  # e.g. 300 from /versions
                    return
                last = f"HTTP {e.code}"
            except (OSError, ValueError) as e:
                last = repr(e)
            time.sleep(0.2)
        raise RuntimeError(f"{self.process} did not answer GET {self.ready_path} within "
                           f"{START_TIMEOUT:.0f} s (last: {last}); log {self.log_file}:\n"
                           f"{tail(self.log_file)}")

    def _signal_group(self, sig: int) -> bool:
        pid = self.pid
        if pid is None or not pid_alive(pid) or not is_our_gunicorn(pid, self.data_dir):
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        return True

    def _wait_gone(self, timeout: float) -> bool:
        pid = self.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=0.1)
            if pid is None or not pid_alive(pid):
                return True
            time.sleep(0.05)
        return False

    def _forget(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None
        self.pid_file.unlink(missing_ok=True)
        # The worker may outlive the master by a moment; wait for the port to be free so
        # an immediate restart() can bind it again.
        deadline = time.monotonic() + 10
        while port_in_use(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL. Does nothing when the server is not running."""
        if self._signal_group(signal.SIGTERM) and not self._wait_gone(STOP_TIMEOUT):
            self._signal_group(signal.SIGKILL)
            self._wait_gone(5)
        self._forget()

    def kill(self) -> None:
        """SIGKILL at once, as a crash would (for fault tests)."""
        if self._signal_group(signal.SIGKILL):
            self._wait_gone(5)
        self._forget()

    def freeze(self) -> None:
        """SIGSTOP the whole server (for fault tests): the kernel still accepts
        connections on its port, and nothing ever answers them."""
        self._signal_group(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`: the server goes on where it stopped."""
        self._signal_group(signal.SIGCONT)

    def restart(self: _S) -> _S:
        self.stop()
        return self.start()

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _status_line(self) -> str:
        """What ``status`` prints when the server runs."""
        return f"running: {self.url} (pid {self.pid})"


# -- the command lines ----------------------------------------------------------------------


def cli_parser(prog: str, description: str,
               start_help: str) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The parser for ``start DIR PORT``, ``stop DIR`` and ``status DIR``, and the ``start``
    subparser (to add options to)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help=start_help)
    p_start.add_argument("dir", type=Path)
    p_start.add_argument("port", type=int)
    for name, text in (("stop", "stop the server started from DIR"),
                       ("status", "say whether the server of DIR runs")):
        sub.add_parser(name, help=text).add_argument("dir", type=Path)
    return parser, p_start


def cli_start(server: GunicornServer, prog: str) -> bool:
    """Start ``server`` and detach from it (it must outlive the command); False, with the
    reason on stderr, if it did not start."""
    try:
        server.start()
    except RuntimeError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return False
    server._proc = None
    return True


def cli_stop_or_status(server: GunicornServer, command: str) -> int:
    """``stop`` or ``status`` of the server of a data dir; the exit status."""
    if command == "stop":
        was_running = server.is_running()
        server.stop()
        print("stopped" if was_running else "not running")
        return 0
    if server.is_running():
        print(server._status_line())
        return 0
    print("not running")
    return 3

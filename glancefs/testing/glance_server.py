"""Run a real Glance API (``glance`` from PyPI) on 127.0.0.1 for tests, benchmarks and demos.

Why a real server: Glance's behaviour (status changes, format inspection, Range handling,
policy, quotas) is what glancefs has to cope with; a fake would only encode our guesses.

How it runs (facts in shared/notes/real-glance.md):

* Glance lives in its own venv (``ensure_glance_venv``) so the project's interpreter does not
  need Glance's ~260 MB of dependencies.
* ``glance-api`` no longer runs standalone; ``glance.wsgi.api:application`` is served by
  gunicorn (``--workers 1 --threads 8``), which handles chunked uploads and keep-alive
  connections without the tuning uwsgi needs.
* SQLite + one process + 8 threads gives "database is locked" under concurrent writes, because
  oslo.db opens transactions with a deferred ``BEGIN`` and SQLite cannot upgrade a read lock
  while another writer waits. A tiny WSGI module written into the data dir installs a
  SQLAlchemy ``begin`` listener that issues ``BEGIN IMMEDIATE`` instead (and a ``connect``
  listener that turns off pysqlite's own transaction handling and sets a busy timeout), then
  imports the Glance app.

Auth modes:

* ``noauth``: every request is an admin request (``UnauthenticatedContextMiddleware`` plus a
  policy file with ``"context_is_admin": ""``).
* ``headers``: Glance's ``ContextMiddleware`` trusts the identity headers that
  keystonemiddleware would set (see ``identity_headers``); policies are Glance's defaults, so
  ownership and visibility behave as in a real cloud. Keystone expands ``member`` into
  ``member,reader``; here the caller must send both roles itself.
* ``keystone``: ``keystonemiddleware.auth_token`` validates tokens against a real Keystone.

Command line: ``python -m glancefs.testing.glance_server start DIR PORT [--auth MODE]
[--image-size-cap N] [--user-storage-quota Q]``, ``stop DIR``, ``status DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Iterator, Mapping

GLANCE_PINS: tuple[str, ...] = ("glance==33.0.0", "gunicorn==27.0.1", "python-glanceclient==4.13.0")
AUTH_MODES: tuple[str, ...] = ("noauth", "headers", "keystone")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

_MARKER_NAME = ".glancefs-installed"
_WSGI_MODULE = "glancefs_glance_wsgi"
_STATE_FILE = "glancefs-server.json"

# Loaded by gunicorn before Glance: see the module docstring for why.
_WSGI_SOURCE = '''\
"""Glance WSGI entry point with SQLite write locking fixed (written by glancefs)."""
import sqlite3

from sqlalchemy import event
from sqlalchemy.engine import Engine


@event.listens_for(Engine, "connect", insert=True)
def _glancefs_sqlite_connect(dbapi_con, con_record):
    if isinstance(dbapi_con, sqlite3.Connection):
        # pysqlite must not emit its own (deferred) BEGIN: we emit ours below.
        dbapi_con.isolation_level = None
        dbapi_con.execute("PRAGMA busy_timeout = 60000")


@event.listens_for(Engine, "begin", insert=True)
def _glancefs_sqlite_begin(conn):
    # Same marker as oslo.db's own sqlite begin listener, which then stays quiet.
    if conn.dialect.name == "sqlite" and "in_transaction" not in conn.info:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        conn.info["in_transaction"] = True


@event.listens_for(Engine, "commit")
@event.listens_for(Engine, "rollback")
def _glancefs_sqlite_end(conn):
    conn.info.pop("in_transaction", None)


def default_identity_filter(global_conf, **local_conf):
    """noauth mode: requests without identity headers act as an admin of one
    project, so everything that needs an owner (import tasks, usage) works."""
    project = local_conf.get("project_id", "glancefs-local")

    def make(app):
        def middleware(environ, start_response):
            if "HTTP_X_PROJECT_ID" not in environ:
                environ["HTTP_X_IDENTITY_STATUS"] = "Confirmed"
                environ["HTTP_X_PROJECT_ID"] = project
                environ["HTTP_X_TENANT_ID"] = project
                environ["HTTP_X_USER_ID"] = "glancefs-local-admin"
                environ["HTTP_X_ROLES"] = "admin,member,reader"
            return app(environ, start_response)
        return middleware
    return make


from glance.wsgi.api import application  # noqa: E402
'''


def cache_dir() -> Path:
    return Path(os.environ.get("GLANCEFS_CACHE") or "/root/.cache/glancefs")


def venv_dir() -> Path:
    return cache_dir() / "venv-glance"


def glance_bin(name: str) -> Path:
    """Path of a console script (``glance``, ``glance-manage``, ``gunicorn``) in the venv."""
    return venv_dir() / "bin" / name


def ensure_glance_venv() -> Path:
    """Create the Glance venv once; later calls only check the marker (milliseconds)."""
    venv = venv_dir()
    marker = venv / _MARKER_NAME
    wanted = "\n".join(GLANCE_PINS) + "\n"

    def ready() -> bool:
        try:
            return marker.read_text() == wanted and (venv / "bin" / "gunicorn").exists()
        except OSError:
            return False

    if ready():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Several test processes may get here at once: one installs, the others wait.
    with open(venv.parent / "venv-glance.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready():
            return venv
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        proc = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *GLANCE_PINS],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pip install {' '.join(GLANCE_PINS)} failed in {venv}:\n"
                               f"{proc.stdout[-4000:]}")
        marker.write_text(wanted)
    return venv


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def identity_headers(project_id: str, user_id: str | None = None,
                     roles: tuple[str, ...] | list[str] = ("member", "reader")) -> dict[str, str]:
    """Headers that make a request authenticated in ``headers`` mode (what keystonemiddleware
    would set after validating a token of that user in that project)."""
    return {
        "X-Identity-Status": "Confirmed",
        "X-Project-Id": project_id,
        "X-Tenant-Id": project_id,
        "X-User-Id": user_id or f"user-{project_id}",
        "X-Roles": ",".join(roles),
    }


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (a killed child not yet reaped is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _is_our_gunicorn(pid: int, data_dir: Path) -> bool:
    """Guard against pid reuse: only signal a gunicorn serving this data dir."""
    # gunicorn rewrites its title ("gunicorn: master [...]"), so match the working directory.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return "gunicorn" in cmdline and Path(cwd) == Path(data_dir)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


class GlanceServer:
    """One glance-api process with its own SQLite database and file store under ``data_dir``."""

    def __init__(self, data_dir: Path, port: int, auth: str = "noauth",
                 image_size_cap: int | None = None, user_storage_quota: str | None = None,
                 keystone: dict | None = None) -> None:
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, not {auth!r}")
        if auth == "keystone" and not keystone:
            raise ValueError("auth='keystone' needs the keystone dict")
        self.data_dir = Path(data_dir).resolve()
        self.port = int(port)
        self.auth = auth
        self.image_size_cap = image_size_cap
        self.user_storage_quota = user_storage_quota
        self.keystone = dict(keystone or {})
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths -------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.endpoint

    @property
    def etc_dir(self) -> Path:
        return self.data_dir / "etc"

    @property
    def config_file(self) -> Path:
        return self.etc_dir / "glance-api.conf"

    @property
    def images_dir(self) -> Path:
        """The file store: one file per image, named by image id."""
        return self.data_dir / "images"

    @property
    def db_file(self) -> Path:
        return self.data_dir / "glance.sqlite"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "glance.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "glance.log"

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        pid = self.pid
        return pid is not None and _pid_alive(pid) and _is_our_gunicorn(pid, self.data_dir)

    # -- configuration -----------------------------------------------------------------------

    def _write_config(self) -> None:
        d = self.data_dir
        for sub in ("etc", "images", "staging", "tasks", "locks", "cache"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        default = [
            "enabled_backends = fs:file",
            "use_stderr = true",
            f"image_cache_dir = {d / 'cache'}",
        ]
        if self.image_size_cap is not None:
            default.append(f"image_size_cap = {int(self.image_size_cap)}")
        if self.user_storage_quota is not None:
            default.append(f"user_storage_quota = {self.user_storage_quota}")
        conf = [
            "[DEFAULT]", *default, "",
            "[database]",
            f"connection = sqlite:///{self.db_file}",
            # Durability against an OS crash is worthless for a test server; speed is not.
            "sqlite_synchronous = false", "",
            "[paste_deploy]",
            f"config_file = {self.etc_dir / 'glance-api-paste.ini'}", "",
            "[glance_store]", "default_backend = fs", "",
            "[fs]", f"filesystem_store_datadir = {d / 'images'}", "",
            "[os_glance_staging_store]", f"filesystem_store_datadir = {d / 'staging'}", "",
            "[os_glance_tasks_store]", f"filesystem_store_datadir = {d / 'tasks'}", "",
            "[oslo_concurrency]", f"lock_path = {d / 'locks'}", "",
            "[oslo_policy]", f"policy_file = {self.etc_dir / 'policy.json'}", "",
        ]
        if self.auth == "keystone":
            k = self.keystone
            conf += [
                "[keystone_authtoken]",
                f"www_authenticate_uri = {k.get('www_authenticate_uri', k['auth_url'])}",
                f"auth_url = {k['auth_url']}",
                "auth_type = password",
                f"username = {k.get('username', 'glance')}",
                f"password = {k['password']}",
                f"project_name = {k.get('project_name', 'service')}",
                f"user_domain_id = {k.get('user_domain_id', 'default')}",
                f"project_domain_id = {k.get('project_domain_id', 'default')}",
                "",
            ]
        self.config_file.write_text("\n".join(conf))
        self.config_file.chmod(0o600)

        context = {"noauth": "default-identity context", "headers": "context",
                   "keystone": "authtoken context"}[self.auth]
        paste = f"""\
[pipeline:glance-api]
pipeline = versionnegotiation {context} rootapp

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource

[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory

[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory

[filter:context]
paste.filter_factory = glance.api.middleware.context:ContextMiddleware.factory

[filter:unauthenticated-context]
paste.filter_factory = glance.api.middleware.context:UnauthenticatedContextMiddleware.factory

[filter:default-identity]
paste.filter_factory = {_WSGI_MODULE}:default_identity_filter

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
delay_auth_decision = true
"""
        (self.etc_dir / "glance-api-paste.ini").write_text(paste)
        # noauth: the default policies demand roles an unauthenticated context lacks.
        policy = {"context_is_admin": ""} if self.auth == "noauth" else {}
        (self.etc_dir / "policy.json").write_text(json.dumps(policy) + "\n")
        (d / f"{_WSGI_MODULE}.py").write_text(_WSGI_SOURCE)

    def _db_sync(self) -> None:
        """Create the schema; a fresh data dir copies a cached empty database (db_sync takes
        2-3 s, and test suites start many servers)."""
        marker = self.data_dir / ".db-synced"
        if marker.exists() and self.db_file.exists():
            return
        template = cache_dir() / f"glance-empty-{GLANCE_PINS[0].split('==')[-1]}.sqlite"
        if not self.db_file.exists() and template.exists():
            shutil.copyfile(template, self.db_file)
            marker.touch()
            return
        fresh = not self.db_file.exists()
        proc = subprocess.run(
            [str(glance_bin("glance-manage")), "--config-file", str(self.config_file),
             "db_sync"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self.data_dir)
        if proc.returncode != 0:
            raise RuntimeError(f"glance-manage db_sync failed:\n{proc.stdout[-4000:]}")
        marker.touch()
        if fresh and not template.exists():
            tmp = template.with_name(f"{template.name}.{os.getpid()}.tmp")
            shutil.copyfile(self.db_file, tmp)
            os.replace(tmp, template)  # atomic: a concurrent reader never sees half a file

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> GlanceServer:
        if self.is_running():
            raise RuntimeError(f"a Glance server already runs from {self.data_dir} "
                               f"(pid {self.pid})")
        if _port_in_use(self.port):
            raise RuntimeError(f"port {self.port} on 127.0.0.1 is already in use")
        ensure_glance_venv()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._db_sync()
        env = dict(os.environ)
        env["OS_GLANCE_CONFIG_DIR"] = str(self.etc_dir)
        env.pop("PYTHONPATH", None)
        cmd = [
            str(glance_bin("gunicorn")),
            "--workers", "1", "--threads", "8", "--timeout", "600",
            "--graceful-timeout", "5",
            # gunicorn 27 otherwise opens one control socket per user at a
            # fixed path, which several servers at once fight over.
            "--no-control-socket",
            "--bind", f"127.0.0.1:{self.port}",
            "--pythonpath", str(self.data_dir),
            "--access-logfile", "-",
            "--name", f"glance-api-{self.port}",
            f"{_WSGI_MODULE}:application",
        ]
        with open(self.log_file, "ab") as log:
            log.write(f"\n=== glancefs: starting {' '.join(cmd)}\n".encode())
            log.flush()
            # Own session: stop()/kill() signal the whole group (master and worker).
            self._proc = subprocess.Popen(cmd, cwd=self.data_dir, env=env,
                                          stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(f"{self._proc.pid}\n")
        (self.data_dir / _STATE_FILE).write_text(json.dumps(
            {"port": self.port, "auth": self.auth, "pid": self._proc.pid}) + "\n")
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
                    f"glance-api exited with {self._proc.returncode} while starting; "
                    f"log {self.log_file}:\n{_tail(self.log_file)}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/versions", timeout=5) as r:
                    if r.status in (200, 300):
                        return
                    last = f"HTTP {r.status}"
            except urllib.error.HTTPError as e:
                if e.code == 300:  # multiple choices is a valid /versions answer
                    return
                last = f"HTTP {e.code}"
            except (OSError, ValueError) as e:
                last = repr(e)
            time.sleep(0.2)
        raise RuntimeError(f"glance-api did not answer GET /versions within {START_TIMEOUT:.0f}"
                           f" s (last: {last}); log {self.log_file}:\n{_tail(self.log_file)}")

    def _signal_group(self, sig: int) -> bool:
        pid = self.pid
        if pid is None or not _pid_alive(pid) or not _is_our_gunicorn(pid, self.data_dir):
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
            if pid is None or not _pid_alive(pid):
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
        while _port_in_use(self.port) and time.monotonic() < deadline:
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

    def restart(self) -> GlanceServer:
        self.stop()
        return self.start()

    def __enter__(self) -> GlanceServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"GlanceServer({str(self.data_dir)!r}, {self.port}, auth={self.auth!r})"


@contextlib.contextmanager
def running_glance(data_dir: Path, port: int | None = None,
                   **kwargs: object) -> Iterator[GlanceServer]:
    """A started server on a free port (or ``port``), stopped on exit."""
    server = GlanceServer(data_dir, port or free_port(), **kwargs)  # type: ignore[arg-type]
    with server:
        yield server


def _server_from_dir(data_dir: Path) -> GlanceServer:
    state: Mapping[str, object] = {}
    with contextlib.suppress(OSError, ValueError):
        state = json.loads((Path(data_dir) / _STATE_FILE).read_text())
    return GlanceServer(Path(data_dir), int(state.get("port", 0)),  # type: ignore[arg-type]
                        auth=str(state.get("auth", "noauth")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glance-server",
                                     description="Run a real Glance API on 127.0.0.1.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start glance-api in the background")
    p_start.add_argument("dir", type=Path)
    p_start.add_argument("port", type=int)
    p_start.add_argument("--auth", choices=("noauth", "headers"), default="noauth")
    p_start.add_argument("--image-size-cap", type=int, default=None)
    p_start.add_argument("--user-storage-quota", default=None)
    for name, text in (("stop", "stop the server started from DIR"),
                       ("status", "say whether the server of DIR runs")):
        sub.add_parser(name, help=text).add_argument("dir", type=Path)
    args = parser.parse_args(argv)

    if args.command == "start":
        server = GlanceServer(args.dir, args.port, auth=args.auth,
                              image_size_cap=args.image_size_cap,
                              user_storage_quota=args.user_storage_quota)
        try:
            server.start()
        except RuntimeError as e:
            print(f"glance-server: {e}", file=sys.stderr)
            return 1
        # Detach: the server must outlive this command.
        server._proc = None
        print(f"glance-api running: {server.endpoint} (pid {server.pid}, auth {args.auth}, "
              f"log {server.log_file})")
        return 0
    server = _server_from_dir(args.dir)
    if args.command == "stop":
        was_running = server.is_running()
        server.stop()
        print("stopped" if was_running else "not running")
        return 0
    if server.is_running():
        print(f"running: {server.endpoint} (pid {server.pid}, auth {server.auth})")
        return 0
    print("not running")
    return 3


if __name__ == "__main__":
    sys.exit(main())

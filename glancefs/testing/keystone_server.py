"""Run a real Keystone (``keystone`` from PyPI) on 127.0.0.1 for tests and demos.

Why a real one: token lifetimes, the catalog, keystonemiddleware's checks in
front of Glance and keystoneauth's renewal are what the client must cope with;
a fake would only encode our guesses. Facts measured are in
shared/notes/real-glance.md:

* Keystone lives in its own venv (``ensure_keystone_venv``), like Glance.
* Keystone 30 has no ``keystone-wsgi-public`` script: gunicorn serves
  ``keystone.wsgi.api:application``, which reads
  ``$OS_KEYSTONE_CONFIG_DIR/keystone.conf``.
* SQLite, fernet tokens; ``keystone-manage db_sync``, ``fernet_setup``,
  ``credential_setup`` and ``bootstrap`` run once per data dir (about 9 s).
* ``[token] expiration`` accepts any value >= 0 (seconds); tests use a few
  seconds to see tokens expire. keystoneauth renews a token that has less
  than 120 s left before each request, so with a lifetime that short it
  authenticates for every request, and with the default hour only once.

``register_glance`` then puts the image service in the catalog, creates the
``glance`` service user that keystonemiddleware in Glance logs in with, and a
``demo`` project and user (roles member and reader) to act as an ordinary
user. It uses the standard library only, so this module runs under a bare
python3: ``python3 glancefs/testing/keystone_server.py start DIR PORT``.
"""
from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import secrets
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__:
    from glancefs.testing import gunicorn_server
else:  # run by path (scripts/keystone-server): importing the glancefs package would need the
    # client's dependencies, so import the sibling module on its own.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gunicorn_server  # type: ignore[no-redef]  # the same module, by its path

KEYSTONE_PINS: tuple[str, ...] = ("keystone==30.0.0", "gunicorn==27.0.1")
START_TIMEOUT = gunicorn_server.START_TIMEOUT
STOP_TIMEOUT = gunicorn_server.STOP_TIMEOUT
REGION = "RegionOne"
ADMIN_USER = "admin"
ADMIN_PROJECT = "admin"
ACCESS_LOG = "access.log"

_STATE_FILE = "glancefs-keystone.json"
_WSGI_MODULE = "glancefs_keystone_wsgi"

# Loaded by gunicorn: keystone's WSGI set-up parses sys.argv with oslo.config
# and would choke on gunicorn's own arguments.
_WSGI_SOURCE = '''\
"""Keystone WSGI entry point (written by glancefs)."""
import sys

_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    from keystone.wsgi.api import application  # noqa: F401 - what gunicorn serves
finally:
    sys.argv = _argv
'''


cache_dir = gunicorn_server.cache_dir
free_port = gunicorn_server.free_port


def venv_dir() -> Path:
    return cache_dir() / "venv-keystone"


def keystone_bin(name: str) -> Path:
    return venv_dir() / "bin" / name


def ensure_keystone_venv() -> Path:
    """Create the Keystone venv once; later calls only check the marker."""
    return gunicorn_server.ensure_venv(venv_dir(), KEYSTONE_PINS,
                                       scripts=("gunicorn", "keystone-manage"),
                                       pip_options=("--disable-pip-version-check",))


class KeystoneError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class KeystoneServer(gunicorn_server.GunicornServer):
    """One Keystone process with its own SQLite database and fernet keys under ``data_dir``.

    ``admin_credentials`` are those of the bootstrap admin (project ``admin``,
    domain ``default``); the password is made up once per data dir and kept in
    it (mode 0600).
    """

    what = "Keystone"
    process = "keystone"
    file_stem = "keystone"
    state_file_name = _STATE_FILE
    wsgi_module = _WSGI_MODULE
    config_dir_var = "OS_KEYSTONE_CONFIG_DIR"
    threads = 4
    timeout = 120
    ready_path = "/v3"
    ready_statuses = (200,)

    def __init__(self, data_dir: Path | str, port: int, token_expiration: int = 3600) -> None:
        if token_expiration < 0:
            raise ValueError("token_expiration must be >= 0 seconds")
        super().__init__(data_dir, port)
        self.token_expiration = int(token_expiration)

    # -- paths and credentials -----------------------------------------------------------

    @property
    def auth_url(self) -> str:
        return f"{self.url}/v3"

    @property
    def config_file(self) -> Path:
        return self.etc_dir / "keystone.conf"

    @property
    def access_log(self) -> Path:
        """gunicorn's access log: one line per request, with the user agent."""
        return self.data_dir / ACCESS_LOG

    @property
    def admin_password(self) -> str:
        path = self.data_dir / "admin-password"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(18))
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def admin_credentials(self) -> dict[str, str]:
        return {"auth_url": self.auth_url, "username": ADMIN_USER,
                "password": self.admin_password, "project_name": ADMIN_PROJECT,
                "user_domain_id": "default", "project_domain_id": "default"}

    # -- set-up ------------------------------------------------------------------------------

    def _install(self) -> None:
        ensure_keystone_venv()

    def _bin(self, name: str) -> Path:
        return keystone_bin(name)

    def _access_logfile(self) -> str:
        return str(self.access_log)

    def _env(self) -> dict[str, str]:
        env = super()._env()
        for key in [k for k in env if k.startswith("OS_") and k != self.config_dir_var]:
            env.pop(key)
        return env

    def _state(self, pid: int) -> dict[str, Any]:
        return {"port": self.port, "pid": pid, "token_expiration": self.token_expiration}

    def _write_config(self) -> None:
        d = self.data_dir
        for sub in ("etc", "fernet-keys", "credential-keys"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        conf = [
            "[DEFAULT]", "use_stderr = true", "",
            "[database]", f"connection = sqlite:///{d / 'keystone.sqlite'}", "",
            "[token]", "provider = fernet", f"expiration = {self.token_expiration}", "",
            "[fernet_tokens]", f"key_repository = {d / 'fernet-keys'}", "",
            "[fernet_receipts]", f"key_repository = {d / 'fernet-keys'}", "",
            "[credential]", f"key_repository = {d / 'credential-keys'}", "",
            "[cache]", "enabled = false", "",
            # bcrypt's default cost makes every password login take most of a
            # second; a test server wants them fast.
            "[identity]", "password_hash_rounds = 4", "",
        ]
        self.config_file.write_text("\n".join(conf))
        self.config_file.chmod(0o600)
        (d / f"{_WSGI_MODULE}.py").write_text(_WSGI_SOURCE)

    def _manage(self, *args: str) -> None:
        cmd = [str(keystone_bin("keystone-manage")), "--config-file", str(self.config_file),
               *args]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=self.data_dir, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"keystone-manage {args[0]} failed:\n{proc.stdout[-4000:]}")

    def _setup(self) -> None:
        marker = self.data_dir / ".bootstrapped"
        if marker.exists() and marker.read_text() == self.url:
            return
        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        self._manage("db_sync")
        self._manage("fernet_setup", "--keystone-user", user, "--keystone-group", group)
        self._manage("credential_setup", "--keystone-user", user, "--keystone-group", group)
        # The password travels in the environment, not in argv (ps shows argv).
        env_password = self.admin_password
        cmd = [str(keystone_bin("keystone-manage")), "--config-file", str(self.config_file),
               "bootstrap", "--bootstrap-username", ADMIN_USER,
               "--bootstrap-project-name", ADMIN_PROJECT, "--bootstrap-role-name", "admin",
               "--bootstrap-service-name", "keystone", "--bootstrap-region-id", REGION,
               "--bootstrap-admin-url", self.url, "--bootstrap-public-url", self.url,
               "--bootstrap-internal-url", self.url]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=self.data_dir, stdin=subprocess.DEVNULL,
                              env={**os.environ, "OS_BOOTSTRAP_PASSWORD": env_password})
        if proc.returncode != 0:
            raise RuntimeError(f"keystone-manage bootstrap failed:\n{proc.stdout[-4000:]}")
        marker.write_text(self.url)

    # -- lifecycle ---------------------------------------------------------------------------

    def restart(self, token_expiration: int | None = None) -> KeystoneServer:
        """Stop and start again, optionally with another token lifetime. Tokens
        already issued stay valid (same fernet keys) until they expire."""
        self.stop()
        if token_expiration is not None:
            self.token_expiration = int(token_expiration)
        return self.start()

    def __repr__(self) -> str:
        return f"KeystoneServer({str(self.data_dir)!r}, {self.port})"

    def _status_line(self) -> str:
        return f"running: {self.auth_url} (pid {self.pid})"

    # -- the identity API (standard library only) -------------------------------------------

    def token_requests(self, user_agent: str | None = None) -> int:
        """POST /v3/auth/tokens seen so far (optionally only from ``user_agent``)."""
        try:
            lines = self.access_log.read_text(errors="replace").splitlines()
        except OSError:
            return 0
        return sum(1 for line in lines if '"POST /v3/auth/tokens' in line
                   and (user_agent is None or user_agent in line))

    def authenticate(self, username: str, password: str, project_name: str,
                     domain_id: str = "default") -> tuple[str, dict[str, Any]]:
        """(token, token body) for a user scoped to a project."""
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": username, "domain": {"id": domain_id}, "password": password}}},
            "scope": {"project": {"name": project_name, "domain": {"id": domain_id}}}}}
        req = urllib.request.Request(f"{self.auth_url}/auth/tokens",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "glancefs-keystone-server"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.headers["X-Subject-Token"], json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise KeystoneError(e.code, e.read().decode(errors="replace")[:300]) from None

    def admin_token(self) -> str:
        return self.authenticate(ADMIN_USER, self.admin_password, ADMIN_PROJECT)[0]

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """One identity API call as admin; ``path`` is relative to /v3."""
        req = urllib.request.Request(
            f"{self.auth_url}/{path.lstrip('/')}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json",
                     "X-Auth-Token": token or self.admin_token(),
                     "User-Agent": "glancefs-keystone-server"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raise KeystoneError(e.code, e.read().decode(errors="replace")[:300]) from None
        return json.loads(raw) if raw else None


def _find(ks: KeystoneServer, token: str, collection: str, **query: str) -> dict | None:
    qs = "&".join(f"{k}={urllib.parse.quote(v)}" for k, v in query.items())
    found = ks.api("GET", f"{collection}?{qs}", token=token)[collection]
    return found[0] if found else None


def _ensure(ks: KeystoneServer, token: str, collection: str, single: str,
            body: dict[str, Any], **query: str) -> dict[str, Any]:
    existing = _find(ks, token, collection, **query)
    if existing:
        return existing
    return ks.api("POST", collection, {single: body}, token=token)[single]


def _ensure_role(ks: KeystoneServer, token: str, name: str) -> dict[str, Any]:
    return _ensure(ks, token, "roles", "role", {"name": name}, name=name)


def _ensure_user(ks: KeystoneServer, token: str, name: str, password: str,
                 project_id: str) -> dict[str, Any]:
    user = _find(ks, token, "users", name=name, domain_id="default")
    if user:
        ks.api("PATCH", f"users/{user['id']}", {"user": {"password": password}}, token=token)
        return user
    return ks.api("POST", "users", {"user": {
        "name": name, "password": password, "domain_id": "default",
        "default_project_id": project_id, "enabled": True}}, token=token)["user"]


def _password() -> str:
    # token_urlsafe may start with "-", which a command line then takes for
    # an option; tests pass these passwords as separate arguments.
    return "p" + secrets.token_urlsafe(12)


def register_glance(keystone: KeystoneServer, glance_url: str,
                    service_password: str | None = None,
                    demo_password: str | None = None) -> dict[str, Any]:
    """Put Glance in Keystone's catalog and create the users tests need.

    Creates (or updates, so it can run again): the ``image`` service named
    ``glance`` with public/internal/admin endpoints at ``glance_url``; a
    ``service`` project with a ``glance`` user (roles admin and service), the
    user keystonemiddleware in Glance authenticates as; a ``demo`` project with
    a ``demo`` user (roles member and reader).

    Returns ``{"glance": <the keystone dict GlanceServer(auth="keystone")
    takes>, "demo": <credentials>, "admin": <credentials>, "demo_project_id",
    "service_project_id", "image_url"}``.
    """
    token = keystone.admin_token()
    service_password = service_password or _password()
    demo_password = demo_password or _password()
    service = _ensure(keystone, token, "services", "service",
                      {"type": "image", "name": "glance", "description": "Images (glancefs)",
                       "enabled": True}, type="image")
    endpoints = keystone.api("GET", f"endpoints?service_id={service['id']}",
                             token=token)["endpoints"]
    for interface in ("public", "internal", "admin"):
        mine = [e for e in endpoints if e["interface"] == interface]
        if mine:
            for e in mine:
                if e["url"] != glance_url:
                    keystone.api("PATCH", f"endpoints/{e['id']}",
                                 {"endpoint": {"url": glance_url}}, token=token)
        else:
            keystone.api("POST", "endpoints", {"endpoint": {
                "service_id": service["id"], "interface": interface, "url": glance_url,
                "region_id": REGION, "enabled": True}}, token=token)
    roles = {name: _ensure_role(keystone, token, name)
             for name in ("admin", "service", "member", "reader")}
    service_project = _ensure(keystone, token, "projects", "project",
                              {"name": "service", "domain_id": "default",
                               "description": "Service users"},
                              name="service", domain_id="default")
    demo_project = _ensure(keystone, token, "projects", "project",
                           {"name": "demo", "domain_id": "default",
                            "description": "An ordinary user's project"},
                           name="demo", domain_id="default")
    glance_user = _ensure_user(keystone, token, "glance", service_password,
                               service_project["id"])
    demo_user = _ensure_user(keystone, token, "demo", demo_password, demo_project["id"])
    for project, user, names in ((service_project, glance_user, ("admin", "service")),
                                 (demo_project, demo_user, ("member", "reader"))):
        for name in names:
            keystone.api("PUT", f"projects/{project['id']}/users/{user['id']}/roles/"
                                f"{roles[name]['id']}", token=token)
    return {
        "glance": {"auth_url": keystone.auth_url, "www_authenticate_uri": keystone.auth_url,
                   "username": "glance", "password": service_password,
                   "project_name": "service", "user_domain_id": "default",
                   "project_domain_id": "default"},
        "demo": {"auth_url": keystone.auth_url, "username": "demo", "password": demo_password,
                 "project_name": "demo", "user_domain_id": "default",
                 "project_domain_id": "default"},
        "admin": keystone.admin_credentials,
        "demo_project_id": demo_project["id"],
        "service_project_id": service_project["id"],
        "image_url": glance_url,
    }


@contextlib.contextmanager
def running_keystone(data_dir: Path, port: int | None = None,
                     **kwargs: Any) -> Iterator[KeystoneServer]:
    server = KeystoneServer(data_dir, port or free_port(), **kwargs)
    with server:
        yield server


class KeystoneCloud:
    """A Keystone with a real Glance behind keystonemiddleware, as tests use them.

    ``info`` is what :func:`register_glance` returned (``info["demo"]`` are
    an ordinary user's credentials, ``info["admin"]`` the admin's).
    """

    def __init__(self, data_dir: Path | str, token_expiration: int = 3600) -> None:
        from glancefs.testing.glance_server import GlanceServer

        self.data_dir = Path(data_dir)
        self.keystone = KeystoneServer(self.data_dir / "keystone", free_port(),
                                       token_expiration=token_expiration)
        # Chosen in start(), once Keystone runs: a port chosen here stayed free for
        # Keystone's whole start-up (seconds), and in one CI run another worker's
        # server had taken it by the time Glance started ("already in use").
        self._glance_port = 0
        self.glance: GlanceServer | None = None
        self.info: dict[str, Any] = {}

    @property
    def image_url(self) -> str:
        return f"http://127.0.0.1:{self._glance_port}"

    def start(self) -> KeystoneCloud:
        from glancefs.testing.glance_server import GlanceServer

        self.keystone.start()
        try:
            self._glance_port = free_port()
            self.info = register_glance(self.keystone, self.image_url)
            self.glance = GlanceServer(self.data_dir / "glance", self._glance_port,
                                       auth="keystone", keystone=self.info["glance"])
            self.glance.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.glance is not None:
            self.glance.stop()
        self.keystone.stop()

    def os_env(self, who: str = "demo") -> dict[str, str]:
        """OS_* variables logging in as ``who`` (demo or admin)."""
        creds = self.info[who]
        return {"OS_AUTH_URL": creds["auth_url"], "OS_USERNAME": creds["username"],
                "OS_PASSWORD": creds["password"], "OS_PROJECT_NAME": creds["project_name"],
                "OS_USER_DOMAIN_ID": creds["user_domain_id"],
                "OS_PROJECT_DOMAIN_ID": creds["project_domain_id"]}

    def __enter__(self) -> KeystoneCloud:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def _server_from_dir(data_dir: Path) -> KeystoneServer:
    state = gunicorn_server.read_state(Path(data_dir) / _STATE_FILE)
    return KeystoneServer(Path(data_dir), int(state.get("port", 0)),
                          int(state.get("token_expiration", 3600)))


def main(argv: list[str] | None = None) -> int:
    parser, p_start = gunicorn_server.cli_parser(
        "keystone-server", "Run a real Keystone on 127.0.0.1.",
        "start keystone in the background")
    p_start.add_argument("--token-expiration", type=int, default=3600,
                         help="token lifetime in seconds (default 3600)")
    p_start.add_argument("--glance-url", default=None,
                         help="register the image service at this URL, with the glance "
                              "service user and a demo project/user; prints their "
                              "credentials as JSON")
    args = parser.parse_args(argv)

    if args.command != "start":
        return gunicorn_server.cli_stop_or_status(_server_from_dir(args.dir), args.command)
    server = KeystoneServer(args.dir, args.port, token_expiration=args.token_expiration)
    if not gunicorn_server.cli_start(server, "keystone-server"):
        return 1
    print(f"keystone running: {server.auth_url} (pid {server.pid}, log {server.log_file}; "
          f"admin password in {server.data_dir / 'admin-password'})")
    if args.glance_url:
        print(json.dumps(register_glance(server, args.glance_url), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

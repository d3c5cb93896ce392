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
[--image-size-cap N] [--user-storage-quota Q] [--metadefs] [--image-cache] [--locations]
[--stores a,b] [--import-methods m,n] [--convert-to FORMAT]``, ``stop DIR``, ``status DIR``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

if __package__:
    from glancefs.testing import gunicorn_server
else:  # run by path (scripts/glance-server): importing the glancefs package would need the
    # client's dependencies, so import the sibling module on its own.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gunicorn_server  # type: ignore[no-redef]  # the same module, by its path

GLANCE_PINS: tuple[str, ...] = ("glance==33.0.0", "gunicorn==27.0.1", "python-glanceclient==4.13.0")
AUTH_MODES: tuple[str, ...] = ("noauth", "headers", "keystone")
START_TIMEOUT = gunicorn_server.START_TIMEOUT
STOP_TIMEOUT = gunicorn_server.STOP_TIMEOUT

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


from glance.wsgi.api import application  # noqa: E402 - after the config is in place
'''


cache_dir = gunicorn_server.cache_dir
free_port = gunicorn_server.free_port


def venv_dir() -> Path:
    return cache_dir() / "venv-glance"


def glance_bin(name: str) -> Path:
    """Path of a console script (``glance``, ``glance-manage``, ``gunicorn``) in the venv."""
    return venv_dir() / "bin" / name


def ensure_glance_venv() -> Path:
    """Create the Glance venv once; later calls only check the marker (milliseconds)."""
    return gunicorn_server.ensure_venv(venv_dir(), GLANCE_PINS)


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


class GlanceServer(gunicorn_server.GunicornServer):
    """One glance-api process with its own SQLite database and file store under ``data_dir``."""

    what = "Glance server"
    process = "glance-api"
    file_stem = "glance"
    state_file_name = _STATE_FILE
    wsgi_module = _WSGI_MODULE
    config_dir_var = "OS_GLANCE_CONFIG_DIR"
    threads = 8
    timeout = 600
    ready_path = "/versions"
    ready_statuses = (200, 300)  # 300 (multiple choices) is a valid /versions answer

    def __init__(self, data_dir: Path, port: int, auth: str = "noauth",
                 image_size_cap: int | None = None, user_storage_quota: str | None = None,
                 keystone: dict | None = None, metadefs: bool = False,
                 image_cache: bool = False, image_cache_max_size: int | None = None,
                 locations: bool = False, stores: tuple[str, ...] = ("fs",),
                 import_methods: tuple[str, ...] | None = None,
                 convert_to: str | None = None, policy: dict[str, str] | None = None,
                 keep_alive: int | None = None) -> None:
        """``metadefs``: load Glance's shipped metadata definitions (``glance-manage
        db_load_metadefs``). ``image_cache``: put the cache middleware in the pipeline, so
        downloads fill the image cache, which ``cache-prune`` shrinks to
        ``image_cache_max_size`` bytes (the cache API answers on every server, because
        ``image_cache_dir`` is always set). ``locations``: show and let callers change
        image ``locations`` (show_multiple_locations), with a read-only ``http`` store named
        ``web`` and any port allowed, so an http://127.0.0.1:PORT/ URL can be a location.
        The last two change what image requests do, so tests that need them start a server
        of their own.

        ``stores``: file stores (the first is the default), each in ``images-<id>``
        except a lone ``fs`` (``images``, where tests look for stored files);
        ``import_methods``: Glance's enabled_import_methods (None: its default);
        ``convert_to``: turn the image_conversion import plugin on with this
        output format (what a Ceph-backed cloud does with ``raw``); ``policy``: rules
        added to the policy file (e.g. ``{"upload_image": "!"}``: no direct upload);
        ``keep_alive``: seconds gunicorn keeps an idle connection (its default 2)."""
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}, not {auth!r}")
        if auth == "keystone" and not keystone:
            raise ValueError("auth='keystone' needs the keystone dict")
        super().__init__(data_dir, port)
        self.auth = auth
        self.image_size_cap = image_size_cap
        self.user_storage_quota = user_storage_quota
        self.keystone = dict(keystone or {})
        self.metadefs = metadefs
        self.image_cache = image_cache
        self.locations = locations
        self.image_cache_max_size = image_cache_max_size
        if not stores:
            raise ValueError("at least one store is needed")
        self.stores = tuple(stores)
        self.import_methods = tuple(import_methods) if import_methods is not None else None
        self.convert_to = convert_to
        self.policy = dict(policy or {})
        if keep_alive is not None:
            self.keep_alive = keep_alive

    # -- paths -------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self.url

    @property
    def config_file(self) -> Path:
        return self.etc_dir / "glance-api.conf"

    @property
    def images_dir(self) -> Path:
        """The (default) file store: one file per image, named by image id."""
        return self.store_dir(self.stores[0])

    def store_dir(self, store: str) -> Path:
        """Where the file store ``store`` keeps its images."""
        if self.stores == ("fs",):
            return self.data_dir / "images"
        return self.data_dir / f"images-{store}"

    @property
    def db_file(self) -> Path:
        return self.data_dir / "glance.sqlite"

    # -- configuration -----------------------------------------------------------------------

    def _install(self) -> None:
        ensure_glance_venv()

    def _bin(self, name: str) -> Path:
        return glance_bin(name)

    def _write_config(self) -> None:
        d = self.data_dir
        locations_on = self.locations
        for sub in ("etc", "staging", "tasks", "locks", "cache"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for store in self.stores:
            self.store_dir(store).mkdir(parents=True, exist_ok=True)
        default = [
            "enabled_backends = " + ", ".join(f"{store}:file" for store in self.stores)
            + (", web:http" if locations_on else ""),
            "use_stderr = true",
            f"image_cache_dir = {d / 'cache'}",
        ]
        if self.image_size_cap is not None:
            default.append(f"image_size_cap = {int(self.image_size_cap)}")
        if self.user_storage_quota is not None:
            default.append(f"user_storage_quota = {self.user_storage_quota}")
        if self.image_cache:
            # The cache keeps who holds an image by this URL (cache-nodes-list).
            default.append(f"worker_self_reference_url = {self.url}")
        if self.image_cache_max_size is not None:
            default.append(f"image_cache_max_size = {int(self.image_cache_max_size)}")
        if locations_on:
            default.append("show_multiple_locations = true")
        if self.import_methods is not None:
            default.append(f"enabled_import_methods = [{','.join(self.import_methods)}]")
        store_sections: list[str] = []
        for store in self.stores:
            store_sections += [f"[{store}]",
                               f"filesystem_store_datadir = {self.store_dir(store)}", ""]
        plugins: list[str] = []
        if self.convert_to is not None:
            plugins = ["[image_import_opts]", "image_import_plugins = ['image_conversion']", "",
                       "[image_conversion]", f"output_format = {self.convert_to}", ""]
        conf = [
            "[DEFAULT]", *default, "",
            "[database]",
            f"connection = sqlite:///{self.db_file}",
            # Durability against an OS crash is worthless for a test server; speed is not.
            "sqlite_synchronous = false", "",
            "[paste_deploy]",
            f"config_file = {self.etc_dir / 'glance-api-paste.ini'}", "",
            "[glance_store]", f"default_backend = {self.stores[0]}", "",
            *store_sections, *plugins,
            "[os_glance_staging_store]", f"filesystem_store_datadir = {d / 'staging'}", "",
            "[os_glance_tasks_store]", f"filesystem_store_datadir = {d / 'tasks'}", "",
            "[oslo_concurrency]", f"lock_path = {d / 'locks'}", "",
            "[oslo_policy]", f"policy_file = {self.etc_dir / 'policy.json'}", "",
        ]
        if locations_on:
            # Glance only takes http locations on ports 80 and 443, and never on loopback,
            # unless told otherwise (its guard against requests to internal services).
            conf += ["[import_filtering_opts]", "allowed_ports = []",
                     "allowed_hosts = [127.0.0.1]",
                     ""]
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
            ]
            if k.get("token_cache_time") is not None:
                # How long keystonemiddleware trusts a token it validated (default 300 s,
                # in-process); tests shorten it to see what happens after it lapses.
                conf.append(f"token_cache_time = {int(k['token_cache_time'])}")
            conf.append("")
        self.config_file.write_text("\n".join(conf))
        self.config_file.chmod(0o600)

        context = {"noauth": "default-identity context", "headers": "context",
                   "keystone": "authtoken context"}[self.auth]
        cache = " cache" if self.image_cache else ""
        paste = f"""\
[pipeline:glance-api]
pipeline = versionnegotiation {context}{cache} rootapp

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

[filter:cache]
paste.filter_factory = glance.api.middleware.cache:CacheFilter.factory

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
delay_auth_decision = true
"""
        (self.etc_dir / "glance-api-paste.ini").write_text(paste)
        # noauth: the default policies demand roles an unauthenticated context lacks.
        policy = {"context_is_admin": ""} if self.auth == "noauth" else {}
        policy.update(self.policy)
        (self.etc_dir / "policy.json").write_text(json.dumps(policy) + "\n")
        (d / f"{_WSGI_MODULE}.py").write_text(_WSGI_SOURCE)

    def _setup(self) -> None:
        """Create the schema; a fresh data dir copies a cached empty database (db_sync takes
        2-3 s, and test suites start many servers)."""
        self._create_db()
        marker = self.data_dir / ".metadefs-loaded"
        if self.metadefs and not marker.exists():
            self._manage("db_load_metadefs", str(venv_dir() / "etc" / "glance" / "metadefs"))
            marker.touch()

    def _manage(self, *command: str) -> None:
        proc = subprocess.run(
            [str(glance_bin("glance-manage")), "--config-file", str(self.config_file),
             *command],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self.data_dir)
        if proc.returncode != 0:
            raise RuntimeError(f"glance-manage {command[0]} failed:\n{proc.stdout[-4000:]}")

    def _create_db(self) -> None:
        marker = self.data_dir / ".db-synced"
        if marker.exists() and self.db_file.exists():
            return
        template = cache_dir() / f"glance-empty-{GLANCE_PINS[0].split('==')[-1]}.sqlite"
        if not self.db_file.exists() and template.exists():
            shutil.copyfile(template, self.db_file)
            marker.touch()
            return
        fresh = not self.db_file.exists()
        self._manage("db_sync")
        marker.touch()
        if fresh and not template.exists():
            tmp = template.with_name(f"{template.name}.{os.getpid()}.tmp")
            shutil.copyfile(self.db_file, tmp)
            os.replace(tmp, template)  # atomic: a concurrent reader never sees half a file

    def __repr__(self) -> str:
        return f"GlanceServer({str(self.data_dir)!r}, {self.port}, auth={self.auth!r})"

    def _status_line(self) -> str:
        return f"running: {self.endpoint} (pid {self.pid}, auth {self.auth})"

    def _state(self, pid: int) -> dict[str, object]:
        return {"port": self.port, "auth": self.auth, "pid": pid, "stores": list(self.stores)}


@contextlib.contextmanager
def running_glance(data_dir: Path, port: int | None = None,
                   **kwargs: object) -> Iterator[GlanceServer]:
    """A started server on a free port (or ``port``), stopped on exit."""
    # The options are GlanceServer's keywords, passed through unchecked.
    server = GlanceServer(data_dir, port or free_port(), **kwargs)  # type: ignore[arg-type]
    with server:
        yield server


def _server_from_dir(data_dir: Path) -> GlanceServer:
    state = gunicorn_server.read_state(Path(data_dir) / _STATE_FILE)
    stores = state.get("stores") or ["fs"]
    return GlanceServer(Path(data_dir), int(state.get("port", 0)),
                        auth=str(state.get("auth", "noauth")),
                        stores=tuple(str(s) for s in stores))


def main(argv: list[str] | None = None) -> int:
    parser, p_start = gunicorn_server.cli_parser(
        "glance-server", "Run a real Glance API on 127.0.0.1.",
        "start glance-api in the background")
    p_start.add_argument("--auth", choices=("noauth", "headers"), default="noauth")
    p_start.add_argument("--image-size-cap", type=int, default=None)
    p_start.add_argument("--user-storage-quota", default=None)
    p_start.add_argument("--metadefs", action="store_true",
                         help="load Glance's shipped metadata definitions")
    p_start.add_argument("--image-cache", action="store_true",
                         help="cache downloaded images (cache middleware)")
    p_start.add_argument("--locations", action="store_true",
                         help="show image locations and accept http ones")
    p_start.add_argument("--stores", default="fs",
                         help="comma-separated file stores, the first the default")
    p_start.add_argument("--import-methods", default=None,
                         help="comma-separated enabled_import_methods")
    p_start.add_argument("--convert-to", default=None,
                         help="turn the image_conversion import plugin on (e.g. raw)")
    args = parser.parse_args(argv)

    if args.command != "start":
        return gunicorn_server.cli_stop_or_status(_server_from_dir(args.dir), args.command)
    server = GlanceServer(args.dir, args.port, auth=args.auth,
                          image_size_cap=args.image_size_cap,
                          user_storage_quota=args.user_storage_quota,
                          metadefs=args.metadefs, image_cache=args.image_cache,
                          locations=args.locations,
                          stores=tuple(args.stores.split(",")),
                          import_methods=(tuple(args.import_methods.split(","))
                                          if args.import_methods else None),
                          convert_to=args.convert_to)
    if not gunicorn_server.cli_start(server, "glance-server"):
        return 1
    print(f"glance-api running: {server.endpoint} (pid {server.pid}, auth {args.auth}, "
          f"log {server.log_file})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

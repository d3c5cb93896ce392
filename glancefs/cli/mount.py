"""``glancefs mount`` and the shared start-up of ``mount.glancefs``.

The promise: the command returns 0 only once the mount works and keeps
serving in the background (``-f`` stays in the foreground). Bad
credentials, an unreachable server or a bad mount point fail before that
with one line on stderr and exit status 1.

How: the parent forks at once (before any HTTP client or thread exists, so
the child starts clean) and waits on a pipe. The child starts a new session,
logs in, lists the images, mounts, and only then writes ``OK`` to the pipe;
any failure before that is written as one line instead and the parent
prints it. No secret is read from the command line: credentials come from
``OS_*`` variables, clouds.yaml/secure.yaml (``--os-cloud``/``-o os_cloud=``)
or ``OS_IMAGE_URL`` + ``OS_AUTH_TOKEN``.
"""
from __future__ import annotations

import argparse
import functools
import logging
import logging.handlers
import os
import shutil
import sys
import textwrap
from collections.abc import Callable
from typing import Any

from glancefs.api.values import major_version
from glancefs.fs.options import MountOptions, apply_option_string, parse_size

PROG = "glancefs"
LOG = logging.getLogger("glancefs.mount")
# Placeholder sources meaning "credentials from the environment".
PLACEHOLDER_SOURCES = {"", "glance", "glancefs", "none", "images", "default"}
_SECRET_ARGS = ("os_password", "os_auth_token", "os_application_credential_secret", "os_key")


def add_mount_arguments(parser: argparse.ArgumentParser) -> None:
    """The mount command's own arguments (credentials are the caller's --os-*).
    Defaults are shown as the -o list shows them (one place: MountOptions)."""
    from glancefs.fs.options import option_docs

    default = {doc.name: doc.default for doc in option_docs()}
    add_path_arguments(parser)
    add_option_argument(parser)
    parser.add_argument("-f", "--foreground", action="store_true", default=False,
                        help="stay in the foreground (logs on stderr)")
    parser.add_argument("-d", "--debug", action="store_true", default=argparse.SUPPRESS,
                        help="debug log; implies -f")
    parser.add_argument("--ttl", type=float, default=None,
                        help=f"seconds the image list and attributes are cached ({default['ttl']})")
    parser.add_argument("--prefetch-max", type=parse_size, default=None,
                        help=f"largest read-ahead window per open file ({default['prefetch_max']})")
    parser.add_argument("--memory", type=parse_size, default=None,
                        help=f"RAM for cached and prefetched data, all files ({default['memory']})")
    parser.add_argument("--cache-dir", default=None, help="on-disk data cache directory (off)")
    parser.add_argument("--cache-size", type=parse_size, default=None,
                        help=f"size limit of the on-disk cache ({default['cache_size']})")
    parser.add_argument("--no-verify", dest="verify", action="store_false", default=None,
                        help="do not check full reads against the image hash")
    parser.add_argument("--ro", action="store_true", default=None, help="read-only mount")
    parser.add_argument("--allow-other", action="store_true", default=None,
                        help="let other users see the mount")
    parser.add_argument("--log-file", dest="log", default=None,
                        help="log file (default: syslog when in the background)")


def add_option_argument(parser: argparse.ArgumentParser) -> None:
    """``-o``, with every mount option listed after the arguments, grouped."""
    parser.add_argument("-o", dest="mount_options", action="append", default=[],
                        metavar="OPT[,OPT...]",
                        help="mount options, listed at the end (and in mount.glancefs(8))")
    parser.epilog = mount_options_help()
    # Keep the list's own line breaks; argparse would refill the epilog.
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def mount_options_help(width: int | None = None) -> str:
    """The -o options of MountOptions, grouped, each with its default: what
    ``mount.glancefs --help`` and ``glancefs help mount`` print."""
    from glancefs.fs.options import group_title, option_docs

    if width is None:
        width = min(100, max(70, shutil.get_terminal_size((100, 24)).columns - 2))
    col = 30
    lines = ["mount options (-o OPT,OPT...; sizes as 512K, 64M or 2G; a flag may also be",
             "given as flag=on|off; secrets are refused: use OS_* or clouds.yaml):"]
    group = None
    for doc in option_docs():
        if doc.group != group:
            group = doc.group
            lines += ["", f"{group_title(group)}:"]
        text = f"{doc.meaning} [default: {doc.default}]"
        if doc.aliases:
            text += f" (also: {', '.join(doc.aliases)})"
        head = f"  {doc.form}"
        wrapped = textwrap.wrap(text, width - col, break_on_hyphens=False) or [""]
        if len(head) + 2 > col:
            lines.append(head)
        else:
            lines.append(head.ljust(col) + wrapped.pop(0))
        lines += [" " * col + rest for rest in wrapped]
    lines += ["", "Generic mount flags (nosuid, nodev, noexec, noatime, ...) go to the kernel; "
              "_netdev, nofail,", "noauto, user, defaults and x-* are accepted and ignored. "
              "See mount.glancefs(8)."]
    return "\n".join(lines)


def add_path_arguments(parser: argparse.ArgumentParser) -> None:
    # Two optional positionals: one given is the mount point, two are SOURCE MOUNTPOINT.
    parser.add_argument("first", nargs="?", metavar="SOURCE",
                        help="optional: an Images API URL, a clouds.yaml cloud name, or "
                             "'glance' to use the OS_* variables")
    parser.add_argument("second", nargs="?", metavar="MOUNTPOINT", help="where to mount")


def mount_options_from_args(args: argparse.Namespace) -> MountOptions:
    opts = MountOptions()
    for text in getattr(args, "mount_options", None) or []:
        apply_option_string(opts, text)
    for name in ("ttl", "prefetch_max", "memory", "cache_dir", "cache_size", "verify", "ro",
                 "allow_other", "log"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(opts, name, value)
    if getattr(args, "foreground", False):
        opts.foreground = True
    if getattr(args, "debug", False):
        opts.debug = True
        opts.foreground = True
    opts.check()
    return opts


def auth_from(args: argparse.Namespace, opts: MountOptions, source: str | None) -> Any:
    """AuthOptions: the caller's (environment + --os-* flags), then -o os_*, then SOURCE."""
    from glancefs.auth import AuthOptions

    base = getattr(args, "auth_options", None) or AuthOptions.from_env()
    overrides: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith("os_") and key not in _SECRET_ARGS and value not in (None, ""):
            overrides[key[3:]] = value
    for name in ("os_cloud", "os_image_url", "os_auth_url", "os_region_name", "os_interface",
                 "os_project_name", "os_project_id", "os_username", "os_user_domain_name",
                 "os_project_domain_name", "os_cacert"):
        value = getattr(opts, name)
        if value:
            overrides[name[3:]] = value
    if opts.insecure:
        overrides["insecure"] = True
    if source and source.lower() not in PLACEHOLDER_SOURCES:
        if source.startswith(("http://", "https://")):
            overrides["image_url"] = source
        else:
            overrides["cloud"] = source
    return base.merged(overrides)


def api_version_for(args: argparse.Namespace, opts: MountOptions, auth: Any) -> str:
    return major_version(opts.api_version or getattr(args, "image_api_version", None)
                         or os.environ.get("OS_IMAGE_API_VERSION") or auth.image_api_version
                         or "2")


def setup_logging(opts: MountOptions, background: bool) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if opts.log:
        handler = logging.FileHandler(opts.log)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    elif not background:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(levelname)s %(name)s: %(message)s" if opts.debug else f"{PROG}: %(message)s"))
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler("/dev/log")
        handler.setFormatter(logging.Formatter(f"glancefs[{os.getpid()}]: %(message)s"))
    else:
        handler = logging.NullHandler()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if opts.debug else logging.INFO)
    logging.getLogger("glancefs").setLevel(logging.DEBUG if opts.debug else logging.INFO)
    for noisy in ("urllib3", "keystoneauth", "requests", "pyfuse3"):
        logging.getLogger(noisy).setLevel(logging.INFO if opts.debug else logging.WARNING)


def failure_text(error: BaseException) -> str:
    """One line for the user: what failed, and what the server said."""
    from glancefs.api import exceptions as exc

    text = exc.describe(error)
    if isinstance(error, exc.HTTPForbidden):
        return f"not allowed to list images: {text}"   # the mount's first request
    return text


def run_mount(args: argparse.Namespace) -> int:
    """Mount as ``args`` say; returns the exit status."""
    from glancefs.fs.session import MountError, check_mountpoint

    paths = [p for p in (getattr(args, "first", None), getattr(args, "second", None)) if p]
    if not paths:
        print(f"{PROG}: mount: give the mount point: mount [SOURCE] MOUNTPOINT",
              file=sys.stderr)
        return 2
    source = paths[0] if len(paths) == 2 else None
    mountpoint = os.path.abspath(paths[-1])
    try:
        opts = mount_options_from_args(args)
        if opts.cache_dir:
            opts.cache_dir = os.path.abspath(opts.cache_dir)
        if opts.log:
            opts.log = os.path.abspath(opts.log)
        if opts.journal_dir:
            # The daemon works from /: a relative path would move.
            opts.journal_dir = os.path.abspath(opts.journal_dir)
        check_mountpoint(mountpoint)
    except (ValueError, MountError) as error:
        print(f"{PROG}: mount: {error}", file=sys.stderr)
        return 1 if isinstance(error, MountError) else 2
    fsname = opts.fsname or source or "glancefs"
    if opts.foreground:
        setup_logging(opts, background=False)
        try:
            return _serve(args, opts, source, mountpoint, fsname, ready=None)
        except Exception as error:
            LOG.debug("mount failed", exc_info=True)
            print(f"{PROG}: mount: {failure_text(error)}", file=sys.stderr)
            return 1
    return _daemonize(args, opts, source, mountpoint, fsname)


def _serve(args: argparse.Namespace, opts: MountOptions, source: str | None,
           mountpoint: str, fsname: str, ready: Callable[[], None] | None) -> int:
    from glancefs.api.service import ImageService
    from glancefs.auth import client_from_options
    from glancefs.fs.session import prepare, serve

    if opts.clouds:
        serve(several_clouds(args, opts), mountpoint, fsname, ready=ready)
        return 0
    auth = auth_from(args, opts, source)
    version = api_version_for(args, opts, auth)
    # Every request the mount makes has an overall deadline (retries inside
    # it): a stalled server costs a reader `timeout`, never the retry schedule.
    client = client_from_options(auth, version=version, timeout=opts.timeout,
                                 deadline=opts.timeout, connect_timeout=opts.connect_timeout,
                                 upload_timeout=opts.upload_timeout)
    service = ImageService(client)
    try:
        fs = prepare(service, opts)
    except Exception as error:  # noqa: BLE001 - re-raised, with the endpoint it concerns
        raise _with_endpoint(error, auth) from None
    serve(fs, mountpoint, fsname, ready=ready)
    return 0


def several_clouds(args: argparse.Namespace, opts: MountOptions) -> Any:
    """``-o clouds=a,b`` (or ``all``): one folder per cloud of clouds.yaml, and
    per region where a cloud lists several. Each cloud's credentials come
    from clouds.yaml and secure.yaml only (OS_* variables name one cloud, not
    several). The mount fails only when no cloud at all can be reached."""
    from glancefs.auth import AuthConfigError, cloud_names, cloud_regions
    from glancefs.fs.clouds import Cloud, CloudsFS, connect_all
    from glancefs.fs.session import MountError

    wanted = [n.strip() for n in opts.clouds if n.strip()]
    names = cloud_names() if [n.lower() for n in wanted] == ["all"] else wanted
    if not names:
        raise MountError("clouds=all: there is no cloud in any clouds.yaml")
    clouds = []
    for name in dict.fromkeys(names):
        try:
            regions: list[str | None] = list(cloud_regions(name)) or [None]
        except AuthConfigError:
            regions = [None]          # connecting says why, on the cloud's folder
        for region in regions:
            path = (_folder_name(name),) + ((_folder_name(region),) if region else ())
            clouds.append(Cloud(path, functools.partial(
                _connect_cloud, args, opts, name, region, "-".join(path))))
    connect_all(clouds)
    if all(c.fs is None for c in clouds):
        raise MountError("no cloud could be reached: " + "; ".join(
            f"{c.label}: {c.error}" for c in clouds))
    return CloudsFS(clouds, opts)


def _folder_name(name: str) -> str:
    return name.replace("/", "_") if name not in (".", "..") else f"_{name}"


def _connect_cloud(args: argparse.Namespace, opts: MountOptions, name: str,
                   region: str | None, label: str) -> Any:
    from glancefs.api.service import ImageService
    from glancefs.auth import AuthOptions, client_from_options
    from glancefs.fs.session import prepare

    auth = AuthOptions(cloud=name, region_name=region, insecure=opts.insecure,
                       cacert=opts.os_cacert).with_cloud()
    version = api_version_for(args, opts, auth)
    client = client_from_options(auth, version=version, timeout=opts.timeout,
                                 deadline=opts.timeout, connect_timeout=opts.connect_timeout,
                                 upload_timeout=opts.upload_timeout)
    try:
        return prepare(ImageService(client), opts, label)
    except Exception as error:  # noqa: BLE001 - re-raised, with the endpoint it concerns
        raise _with_endpoint(error, auth) from None


def _with_endpoint(error: Exception, auth: Any) -> Exception:
    from glancefs.api import exceptions as exc

    if isinstance(error, exc.CommunicationError) and not getattr(error, "url", None):
        error.url = auth.image_url or auth.auth_url
    return error


def _daemonize(args: argparse.Namespace, opts: MountOptions, source: str | None,
               mountpoint: str, fsname: str) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        chunks = []
        while chunk := os.read(read_end, 4096):
            chunks.append(chunk)
        os.close(read_end)
        answer = b"".join(chunks).decode("utf-8", "replace")
        if answer.startswith("OK"):
            return 0
        message = answer.strip() or "the mount process ended before the mount was ready"
        # Reap the child if it already exited (it writes its error, then exits).
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        print(f"{PROG}: mount: {message}", file=sys.stderr)
        return 1
    # The child: the daemon.
    os.close(read_end)
    status = 1
    try:
        os.setsid()
        os.chdir("/")
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        setup_logging(opts, background=True)

        def ready() -> None:
            os.write(write_end, b"OK\n")
            os.close(write_end)
            # Nobody reads our terminal any more.
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)

        try:
            status = _serve(args, opts, source, mountpoint, fsname, ready=ready)
        except Exception as error:  # noqa: BLE001 - reported through the pipe
            LOG.error("mount failed: %s", failure_text(error))
            try:
                os.write(write_end, failure_text(error).encode() + b"\n")
            except OSError:
                pass
            status = 1
    finally:
        logging.shutdown()
        os._exit(status)

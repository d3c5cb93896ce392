"""``glancefs``: the image commands of the ``glance`` command, and ``mount``.

How a run goes: the global ``--os-*`` options are parsed first, to learn the
Images API version (flag, ``OS_IMAGE_API_VERSION``, clouds.yaml, else 2); then
the full parser for that version's commands parses the line. Credentials are
the flags on top of ``OS_*`` variables on top of clouds.yaml
(glancefs.auth.AuthOptions), and the client is only built when a command
needs it, so ``glancefs help`` works with no cloud at all.

Failures print one line, ``glancefs: COMMAND: reason``, and exit 1 (2 for
a wrong command line); ``--debug`` adds the traceback and HTTP log. Secrets
given on the command line draw a warning (``ps`` shows them to every user),
and are masked in anything this program prints.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from glancefs.cli import commands as cmds
from glancefs.cli import commands_admin, commands_metadefs  # noqa: F401 - register in cmds.V2
from glancefs.cli.output import Printer

PROG = "glancefs"
MOUNT_HELP = "Mount the images of a cloud as a filesystem."
HELP_HELP = "Display help about this program or one of its commands."
COMPLETION_HELP = "Prints arguments for bash_completion."
SECRET_FLAGS = {"os_password": "--os-password", "os_auth_token": "--os-auth-token",
                "os_application_credential_secret": "--os-application-credential-secret"}
SECRET_ENV = {"--os-password": "OS_PASSWORD", "--os-auth-token": "OS_AUTH_TOKEN",
              "--os-application-credential-secret": "OS_APPLICATION_CREDENTIAL_SECRET"}


class ParserExit(Exception):
    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, with one-line errors."""

    def __init__(self, *args: Any, command: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.command = command

    def error(self, message: str) -> NoReturn:
        hint = f"see '{PROG} help {self.command}'" if self.command else f"see '{PROG} help'"
        where = f"{self.command}: " if self.command else ""
        raise ParserExit(2, f"{PROG}: {where}{message} ({hint})")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise ParserExit(status, (message or "").rstrip("\n"))

    def print_help(self, file: Any = None) -> NoReturn:
        # -h/--help: hand the text to run(), which writes it to its own stdout.
        raise ParserExit(0, self.format_help().rstrip("\n"))


# -- global options -------------------------------------------------------------------------

def add_global_options(parser: argparse.ArgumentParser, hidden: bool = False) -> None:
    """The glance command's global options. ``hidden``: the copy each
    command's parser gets, so they work after the command name too
    (``glancefs image-show x -f json``) without overriding what was given
    before it (default SUPPRESS) or cluttering the command's help."""

    def env_help(text: str, var: str) -> str:
        return argparse.SUPPRESS if hidden else f"{text} Defaults to env[{var}]."

    class _Group:
        def __init__(self, group: Any) -> None:
            self.group = group

        def add_argument(self, *flags: str, **kwargs: Any) -> None:
            if hidden:
                kwargs["default"] = argparse.SUPPRESS
                kwargs["help"] = argparse.SUPPRESS
            self.group.add_argument(*flags, **kwargs)

    g = _Group(parser.add_argument_group("Global options"))
    g.add_argument("-d", "--debug", action="store_true", default=False,
                   help="Print the HTTP conversation (tokens masked) and tracebacks.")
    g.add_argument("-v", "--verbose", action="store_true", default=False,
                   help="Print more columns in lists.")
    g.add_argument("-f", "--format", choices=("table", "json"), default="table",
                   help="Output format: table (default) or json (for scripts).")
    g.add_argument("--version", action="store_true", default=False,
                   help="Print the versions of glancefs, Python, pyfuse3 and libfuse, "
                        "and exit.")
    g.add_argument("--os-image-api-version", metavar="<IMAGE_API_VERSION>", default=None,
                   help=env_help("Images API version, 1 or 2 (default 2).",
                                 "OS_IMAGE_API_VERSION"))
    g.add_argument("--os-image-url", metavar="<IMAGE_URL>", default=None,
                   help=env_help("Glance endpoint; with --os-auth-token, Keystone is not used.",
                                 "OS_IMAGE_URL"))
    g.add_argument("--os-cloud", metavar="<CLOUD>", default=None,
                   help=env_help("Cloud name in clouds.yaml.", "OS_CLOUD"))
    a = _Group(parser.add_argument_group("Authentication options (Keystone v3)"))
    for flag, var, text in (
            ("--os-auth-url", "OS_AUTH_URL", "Keystone URL."),
            ("--os-username", "OS_USERNAME", "User name."),
            ("--os-user-id", "OS_USER_ID", "User ID."),
            ("--os-password", "OS_PASSWORD",
             "Password; prefer the variable: command lines are visible in ps."),
            ("--os-project-id", "OS_PROJECT_ID", "Project ID."),
            ("--os-project-name", "OS_PROJECT_NAME", "Project name."),
            ("--os-tenant-id", "OS_TENANT_ID", "Old name of --os-project-id."),
            ("--os-tenant-name", "OS_TENANT_NAME", "Old name of --os-project-name."),
            ("--os-user-domain-id", "OS_USER_DOMAIN_ID", "Domain ID of the user."),
            ("--os-user-domain-name", "OS_USER_DOMAIN_NAME", "Domain name of the user."),
            ("--os-project-domain-id", "OS_PROJECT_DOMAIN_ID", "Domain ID of the project."),
            ("--os-project-domain-name", "OS_PROJECT_DOMAIN_NAME",
             "Domain name of the project."),
            ("--os-application-credential-id", "OS_APPLICATION_CREDENTIAL_ID",
             "Application credential ID."),
            ("--os-application-credential-name", "OS_APPLICATION_CREDENTIAL_NAME",
             "Application credential name (with a user)."),
            ("--os-application-credential-secret", "OS_APPLICATION_CREDENTIAL_SECRET",
             "Application credential secret; prefer the variable."),
            ("--os-auth-token", "OS_AUTH_TOKEN",
             "A token; with --os-image-url Keystone is skipped. Prefer the variable."),
            ("--os-region-name", "OS_REGION_NAME", "Region of the image endpoint."),
            ("--os-interface", "OS_INTERFACE", "Endpoint interface: public (default), "
                                               "internal or admin."),
            ("--os-endpoint-type", "OS_ENDPOINT_TYPE", "Old name of --os-interface."),
            ("--os-cacert", "OS_CACERT", "CA bundle to verify TLS servers with."),
            ("--os-cert", "OS_CERT", "Client certificate for TLS."),
            ("--os-key", "OS_KEY", "Client key for TLS."),
    ):
        a.add_argument(flag, metavar=f"<{flag[5:].upper().replace('-', '_')}>", default=None,
                       help=env_help(text, var))
    a.add_argument("--insecure", action="store_true", default=False,
                   help="Do not verify TLS certificates (unsafe). Defaults to env[OS_INSECURE].")


def auth_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The credential flags given, as glancefs.auth.AuthOptions names."""
    overrides: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith("os_") and value not in (None, ""):
            overrides[key[3:]] = value
    if getattr(args, "insecure", False):
        overrides["insecure"] = True
    return overrides


def auth_options(args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    from glancefs.auth import AuthOptions
    return AuthOptions.from_env(environ).merged(auth_overrides(args))


def api_version(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """Flag, then OS_IMAGE_API_VERSION, then the clouds.yaml entry, then 2."""
    raw = args.os_image_api_version or environ.get("OS_IMAGE_API_VERSION")
    if not raw:
        cloud = getattr(args, "os_cloud", None) or environ.get("OS_CLOUD")
        if cloud:
            try:
                from glancefs.auth import load_cloud
                raw = load_cloud(cloud).get("image_api_version")
            except Exception:  # noqa: BLE001 - the missing cloud is reported when a client is built
                raw = None
    from glancefs.api.values import major_version
    try:
        return major_version(raw or "2")
    except ValueError as error:
        raise ParserExit(2, f"{PROG}: {error}") from None


# -- parsers --------------------------------------------------------------------------------

# Global options that take no value (every other global option takes one).
_GLOBAL_FLAGS = frozenset({"-d", "--debug", "-v", "--verbose", "--version", "--insecure",
                           "-h", "--help"})


def command_index(argv: Sequence[str]) -> int:
    """Index of the command name in ``argv`` (len(argv) when there is none)."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            return i + 1
        if not token.startswith("-") or token == "-":
            return i
        attached = "=" in token or (not token.startswith("--") and len(token) > 2)
        if not attached and token not in _GLOBAL_FLAGS:
            i += 1  # skip the option's value
        i += 1
    return len(argv)


def _global_parser() -> Parser:
    parser = Parser(prog=PROG, add_help=False)
    add_global_options(parser)
    return parser


def _load_mount() -> Any:
    """glancefs.cli.mount, or None when this installation lacks it."""
    try:
        from glancefs.cli import mount
    except ImportError as e:
        logging.getLogger(__name__).debug("mount command unavailable: %s", e)
        return None
    if not (hasattr(mount, "add_mount_arguments") and hasattr(mount, "run_mount")):
        return None
    return mount


def build_parser(version: str) -> tuple[Parser, dict[str, Parser]]:
    parser = Parser(prog=PROG, add_help=False,
                    description="Images (Glance) command line and FUSE mount.",
                    epilog=f"See '{PROG} help COMMAND' for help on a command.")
    add_global_options(parser)
    parser.add_argument("-h", "--help", action="store_true", default=False,
                        help="Show this help and exit.")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=Parser)
    table = cmds.commands_for(version)
    other = cmds.V2 if version == "1" else cmds.V1
    subparsers: dict[str, Parser] = {}
    for name in sorted(set(table) | set(other)):
        if name in table:
            command = table[name]
            p = sub.add_parser(name, help=command.summary, description=command.description,
                               command=name, formatter_class=argparse.RawDescriptionHelpFormatter)
            for flags, kwargs in command.arguments:
                p.add_argument(*flags, **kwargs)
            add_global_options(p, hidden=True)
            p.set_defaults(func=command.func)
        else:
            other_version = "2" if version == "1" else "1"
            text = (f"this command needs Images API v{other_version}, and v{version} is in use "
                    f"(set --os-image-api-version {other_version} or "
                    f"OS_IMAGE_API_VERSION={other_version})")
            p = sub.add_parser(name, help=f"(v{other_version} only) {other[name].summary}",
                               description=text, command=name, add_help=False)
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(func=_wrong_version(text))
        subparsers[name] = p
    mount = _load_mount()
    p = sub.add_parser("mount", help=MOUNT_HELP, description=MOUNT_HELP, command="mount")
    if mount is not None:
        mount.add_mount_arguments(p)
        p.set_defaults(func=None, mount_module=mount)
    else:
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(func=_wrong_version(
            "the mount command is not part of this installation (glancefs.cli.mount is "
            "missing)"))
    subparsers["mount"] = p
    p = sub.add_parser("help", help=HELP_HELP, command="help")
    p.add_argument("topic", metavar="<COMMAND>", nargs="?", help="Command to explain.")
    add_global_options(p, hidden=True)
    p.set_defaults(func=None)
    subparsers["help"] = p
    p = sub.add_parser("bash-completion", help=COMPLETION_HELP, command="bash-completion",
                       description="Print every command and option on one line, for a bash "
                                   "completion script (as glance bash-completion does).")
    add_global_options(p, hidden=True)
    p.set_defaults(func=None)
    subparsers["bash-completion"] = p
    return parser, subparsers


def completion_words(parser: Parser, subparsers: dict[str, Parser]) -> str:
    """Every command and every option (the global ones too: they work after a command),
    sorted so the line is the same on every run."""
    commands = set(subparsers) - {"bash-completion"}
    options: set[str] = set(parser._option_string_actions)
    for sub in subparsers.values():
        options |= set(sub._option_string_actions)
    return " ".join(sorted(commands) + sorted(options))


def _wrong_version(text: str) -> Any:
    def refuse(ctx: cmds.Context, args: argparse.Namespace) -> None:
        raise cmds.CommandError(text)
    return refuse


def help_text(parser: Parser, subparsers: dict[str, Parser], version: str) -> str:
    table = cmds.commands_for(version)
    other = cmds.V2 if version == "1" else cmds.V1
    lines = [f"usage: {PROG} [--os-... options] [-f table|json] <command> [<args>]", "",
             f"Images (Glance) command line and FUSE mount (Images API v{version}).", "",
             "Commands:"]
    names = sorted(set(table) | set(other) | {"mount", "help", "bash-completion"})
    col = max(len(n) for n in names) + 4
    for name in names:
        if name in table:
            summary = table[name].summary
        elif name in other:
            summary = f"(v{'2' if version == '1' else '1'} only) {other[name].summary}"
        elif name == "mount":
            summary = MOUNT_HELP
        elif name == "bash-completion":
            summary = COMPLETION_HELP
        else:
            summary = HELP_HELP
        lines.append(f"  {name.ljust(col)}{summary}")
    lines += ["", f"See '{PROG} help COMMAND' for help on a command.", ""]
    options = parser.format_help()
    start = options.find("Global options")
    if start >= 0:
        lines.append(options[start:].rstrip())
    return "\n".join(lines) + "\n"


# -- running --------------------------------------------------------------------------------

class _ScrubFormatter(logging.Formatter):
    """Masks secret values in every log line (belt and braces: keystoneauth
    already hashes tokens in its debug log)."""

    def __init__(self, fmt: str, secrets: list[str]) -> None:
        super().__init__(fmt)
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record), self.secrets)


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def _setup_logging(stream: Any, debug: bool, verbose: bool,
                   secrets: list[str]) -> logging.Handler:
    """--debug: everything, with the HTTP conversation. -v: the library's
    warnings (retries, resumed downloads). Otherwise nothing: a failure is
    reported once, by run(), on one line."""
    handler = logging.StreamHandler(stream)
    fmt = "%(levelname)s %(name)s: %(message)s" if debug else f"{PROG}: %(message)s"
    handler.setFormatter(_ScrubFormatter(fmt, secrets))
    handler.setLevel(logging.DEBUG if debug else logging.WARNING if verbose
                     else logging.CRITICAL + 1)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("glancefs").setLevel(logging.DEBUG if debug else logging.WARNING)
    if debug:
        logging.getLogger("urllib3").setLevel(logging.INFO)
    return handler


def run(argv: Sequence[str] | None = None, console: cmds.Console | None = None,
        environ: Mapping[str, str] | None = None) -> int:
    """Run one command line; returns the exit status (never raises SystemExit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    console = console or cmds.Console.system()
    environ = os.environ if environ is None else environ
    err = console.stderr
    debug = "-d" in argv or "--debug" in argv
    secrets = [v for k, v in environ.items()
               if k in ("OS_PASSWORD", "OS_AUTH_TOKEN", "OS_APPLICATION_CREDENTIAL_SECRET")]
    name = None
    handler: logging.Handler | None = None
    try:
        # The global options before the command name tell the API version,
        # which decides the command table; options after it belong to the
        # command (mount has its own -f and -d).
        split = command_index(argv)
        pre, _ = _global_parser().parse_known_args(argv[:split])
        if pre.version:
            from glancefs.cli.about import version_text
            console.stdout.write(version_text(PROG))
            return 0
        version = api_version(pre, environ)
        parser, subparsers = build_parser(version)
        args = parser.parse_args(argv)
        wanted = api_version(args, environ)
        if wanted != version:  # --os-image-api-version given after the command
            version = wanted
            parser, subparsers = build_parser(version)
            args = parser.parse_args(argv)
        for dest, flag in SECRET_FLAGS.items():
            value = getattr(args, dest, None)
            if value:
                secrets.append(value)
                err.write(f"{PROG}: warning: {flag} on the command line is visible to other "
                          f"users (ps, shell history); set {SECRET_ENV[flag]} or use "
                          f"clouds.yaml instead\n")
        name = args.command
        handler = _setup_logging(err, args.debug, args.verbose, secrets)
        if args.help or name is None or name == "help":
            topic = getattr(args, "topic", None)
            if topic:
                if topic not in subparsers:
                    raise ParserExit(2, f"{PROG}: help: unknown command {topic!r} "
                                        f"(see '{PROG} help')")
                console.stdout.write(subparsers[topic].format_help())
            else:
                console.stdout.write(help_text(parser, subparsers, version))
            return 0
        if name == "bash-completion":
            console.stdout.write(completion_words(parser, subparsers) + "\n")
            return 0
        options = auth_options(args, environ)
        args.auth_options = options
        args.image_api_version = version
        if name == "mount":
            return int(args.mount_module.run_mount(args) or 0)

        def make_client() -> Any:
            from glancefs.auth import client_from_options
            return client_from_options(options, version=version)

        ctx = cmds.Context(console=console,
                           printer=Printer(console.stdout, args.format),
                           client_factory=make_client, version=version,
                           verbose=args.verbose)
        status = args.func(ctx, args)
        console.stdout.flush()
        return int(status or 0)
    except ParserExit as e:
        if e.message:
            (console.stdout if e.status == 0 else err).write(e.message + "\n")
        return e.status
    except KeyboardInterrupt:
        err.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (glancefs image-list | head): not our failure.
        _silence_stdout()
        return 141
    except Exception as e:  # noqa: BLE001 - every failure becomes one line
        if debug:
            err.write(scrub(traceback.format_exc(), secrets))
        err.write(scrub(failure_line(name, e, debug), secrets) + "\n")
        return 2 if isinstance(e, cmds.UsageError) else 1
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
        try:
            err.flush()
        except (OSError, ValueError):
            pass


def failure_line(name: str | None, error: BaseException, debug: bool = False) -> str:
    """``glancefs: COMMAND: reason`` on one line (the reason: ``exceptions.describe``)."""
    from glancefs.api import exceptions as exc

    where = f"{name}: " if name else ""
    text = exc.describe(error)
    if not exc.expected(error) and not debug:
        text += " (run with --debug for details)"
    return f"{PROG}: {where}{text}"


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    status = run(argv)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        status = status or 141
    return status


if __name__ == "__main__":
    sys.exit(main())

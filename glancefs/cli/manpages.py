"""The man pages glancefs(1) and mount.glancefs(8), written from the tables
the code runs on, so they cannot drift from it:

* the ``-o`` options, their groups, defaults and meanings: the fields of
  :class:`glancefs.fs.options.MountOptions` (``option_docs()``);
* the commands and their arguments: the parsers ``glancefs.cli.main`` builds
  from the command tables (``glancefs.cli.commands.V2``/``V1``);
* the global ``--os-*`` options and their ``OS_*`` variables: the same
  ``add_global_options`` the command line parses with;
* the command-line flags of mount.glancefs: its own parser;
* the errno a refusal gives: the table of ``glancefs.fs.errors``; the
  extended attributes: ``glancefs.api.fields``.

The pages are generated, then committed under ``man/`` (setup.cfg installs
them as data files: ``share/man/man1``, ``share/man/man8``), and a test
checks that they equal what this module writes now. Why not at build time:
building the wheel or an sdist would have to import glancefs, so its
dependencies (pyfuse3, keystoneauth1 ...) would have to be in the isolated
build environment, and a distribution packaging the sdist gets the pages as
they are. Regenerate with ``python -m glancefs.cli.manpages man/``.

Only prose that no table holds (what a mount is, fstab and systemd, signals,
exit status) is written here by hand.
"""
from __future__ import annotations

import argparse
import errno
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from glancefs import __version__

PAGES = {"glancefs.1": "glancefs", "mount.glancefs.8": "mount.glancefs"}
_ENV = re.compile(r"\s*Defaults to env\[(\w+)\]\.?")


# -- roff ---------------------------------------------------------------------------------------

def esc(text: str) -> str:
    """Text as roff prints it: backslashes and minus signs escaped, and a line
    that would start with a control character protected."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = [("\\&" + line) if line.startswith((".", "'")) else line
             for line in text.split("\n")]
    return "\n".join(lines)


def bold(text: str) -> str:
    return f"\\fB{esc(text)}\\fR"


def italic(text: str) -> str:
    return f"\\fI{esc(text)}\\fR"


def code(text: str) -> str:
    """Text with ``literals`` in bold."""
    parts = text.split("``")
    return "".join(bold(p) if i % 2 else esc(p) for i, p in enumerate(parts))


def para(text: str) -> list[str]:
    return [".PP", code(" ".join(text.split()))]


def tagged(tag: str, text: str) -> list[str]:
    """A .TP item: ``tag`` (already roff) and its paragraph."""
    return [".TP", tag, code(" ".join(text.split()))]


def example(lines: Iterable[str]) -> list[str]:
    return [".PP", ".RS 4", ".nf", *(esc(line) for line in lines), ".fi", ".RE"]


def header(name: str, section: int, title: str) -> list[str]:
    manual = "System Administration" if section == 8 else "User Commands"
    return [f'.TH {name.upper()} {section} "" "glancefs {__version__}" "{manual}"',
            ".SH NAME", f"{esc(name)} \\- {esc(title)}"]


# -- argparse -----------------------------------------------------------------------------------

def visible_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if a.help != argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)]


def invocation(action: argparse.Action) -> str:
    """``-f, --foreground`` / ``--limit N`` / ``SOURCE`` in roff."""
    if not action.option_strings:
        return italic(str(action.metavar or action.dest))
    if action.nargs == 0:
        return ", ".join(bold(flag) for flag in action.option_strings)
    if action.choices and not action.metavar:
        value = "{" + ",".join(str(c) for c in action.choices) + "}"
    else:
        value = str(action.metavar or action.dest.upper())
    if isinstance(action.metavar, tuple):
        value = " ".join(action.metavar)
    return ", ".join(f"{bold(flag)} {italic(value)}" for flag in action.option_strings)


# The -o help says "listed at the end" (of --help); a page says where instead.
_PAGE_HELP = {"mount_options": "mount options, comma separated: see MOUNT OPTIONS in "
                               "mount.glancefs(8)"}


def action_help(action: argparse.Action, prog: str) -> str:
    text = _PAGE_HELP.get(action.dest) or str(action.help or "")
    if "%" in text:
        values = dict(vars(action), prog=prog)
        if values.get("choices") is not None:
            values["choices"] = ", ".join(str(c) for c in values["choices"])
        text = text % values
    return text


def actions_items(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> list[str]:
    out: list[str] = []
    for action in visible_actions(parser):
        if set(action.option_strings) & set(skip) or action.dest in skip:
            continue
        out += tagged(invocation(action), action_help(action, parser.prog))
    return out


def global_options() -> list[tuple[str, argparse.Action, str | None]]:
    """(group title, action, OS_* variable) of every global option."""
    from glancefs.cli.main import Parser, add_global_options

    parser = Parser(prog="glancefs", add_help=False)
    add_global_options(parser)
    found = []
    for group in parser._action_groups:
        for action in group._group_actions:
            if action.help == argparse.SUPPRESS:
                continue
            match = _ENV.search(str(action.help or ""))
            found.append((str(group.title), action, match.group(1) if match else None))
    return found


# -- mount.glancefs(8) --------------------------------------------------------------------------

def mount_page() -> str:
    from glancefs.api import fields
    from glancefs.cli.mount_helper import build_parser
    from glancefs.fs import names, xattrs
    from glancefs.fs.options import IGNORED, KERNEL_FLAGS, group_title, option_docs

    out = header("mount.glancefs", 8, "mount OpenStack Images (Glance) as a directory")
    out += [".SH SYNOPSIS",
            f"{bold('mount.glancefs')} [{italic('SOURCE')}] {italic('MOUNTPOINT')} "
            f"[{bold('-o')} {italic('OPT')}[,{italic('OPT')}...]] [{bold('-f')}] "
            f"[{bold('-d')}]",
            ".br",
            f"{bold('mount -t fuse.glancefs')} {italic('SOURCE')} {italic('MOUNTPOINT')} "
            f"[{bold('-o')} {italic('OPT')},...]",
            ".br",
            f"{bold('glancefs mount')} [{italic('SOURCE')}] {italic('MOUNTPOINT')} "
            f"[{bold('-o')} {italic('OPT')},...]",
            ".SH DESCRIPTION"]
    out += para(
        "mount.glancefs mounts the images of an OpenStack Images service (Glance, API v2 or "
        "v1) as a directory: every image is a file named after the image, reads become "
        "ranged, streamed downloads checked against the image hash, files copied in become "
        "new images, and image fields and properties are extended attributes.")
    out += para(
        "SOURCE is an Images API URL (``http://glance:9292``), a cloud name of clouds.yaml, "
        "or ``glance`` (also ``none``, or no SOURCE at all) to take everything from the "
        "``OS_*`` variables. The command returns once the mount works and keeps serving in "
        "the background; bad credentials, an unreachable server or a bad mount point fail "
        "before that, with one line on standard error and exit status 1. Secrets are never "
        "taken from the command line: an option whose name holds ``password``, ``token`` or "
        "``secret`` is refused; they come from ``OS_PASSWORD``, ``OS_AUTH_TOKEN``, "
        "``OS_APPLICATION_CREDENTIAL_SECRET`` or clouds.yaml/secure.yaml.")
    out += [".SH OPTIONS"] + actions_items(build_parser())
    out += [".SH MOUNT OPTIONS"]
    out += para(
        "Given with ``-o`` as a comma-separated list of ``key`` or ``key=value``, in fstab's "
        "fourth field, or in the ``Options=`` of a systemd mount unit. Sizes are bytes or "
        "take a suffix: ``512K``, ``64M``, ``2G``. A flag may also be written "
        "``flag=on|off``. Dashes and underscores are the same (``max-prefetch``).")
    group = None
    for doc in option_docs():
        if doc.group != group:
            group = doc.group
            out += [f".SS {esc(group_title(group))}"]
        text = f"{doc.meaning[:1].upper()}{doc.meaning[1:]}. Default: {doc.default}."
        if doc.aliases:
            text += " Also written: " + ", ".join(f"``{a}``" for a in doc.aliases) + "."
        name, eq, value = doc.form.partition("=")
        tag = bold(name) + (f"={italic(value)}" if eq else "")
        out += tagged(tag, text)
    out += [".SS Generic mount flags"]
    out += para("Passed to the kernel: " + ", ".join(f"``{f}``" for f in sorted(KERNEL_FLAGS))
                + ". Accepted and ignored (they are for mount(8), fstab or systemd): "
                + ", ".join(f"``{f}``" for f in sorted(IGNORED))
                + ", and every ``x-*`` and ``comment=`` option.")
    out += [".SH FSTAB AND SYSTEMD"]
    out += para(
        "mount(8) runs ``/sbin/mount.fuse.glancefs`` for the type ``fuse.glancefs`` when it "
        "exists (link it: ``ln -s $(command -v mount.glancefs) /sbin/mount.fuse.glancefs``), "
        "else ``mount.fuse3``, which runs ``glancefs`` with the same arguments. The options "
        "``-n``, ``-s``, ``-v`` and ``-t`` that mount(8) adds are accepted and ignored.")
    out += example([
        "mount -t fuse.glancefs mycloud /mnt/images -o ttl=60,ro",
        "",
        "# /etc/fstab: mounted at boot, once the network is up",
        "mycloud  /mnt/images  fuse.glancefs  _netdev,ttl=60,cache_dir=/var/cache/glancefs  0 0",
        "# or mounted on first access, unmounted after 10 idle minutes",
        "mycloud  /mnt/images  fuse.glancefs  _netdev,x-systemd.automount,"
        "x-systemd.idle-timeout=600,ttl=60  0 0",
    ])
    out += para(
        "As systemd units (``mnt-images.mount`` and ``mnt-images.automount``; the unit name "
        "is the escaped mount point, ``systemd-escape -p --suffix=mount /mnt/images``), with "
        "the cloud ``mycloud`` of ``/etc/openstack/clouds.yaml``:")
    out += example([
        "[Unit]",
        "Description=Glance images of mycloud",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Mount]",
        "What=mycloud",
        "Where=/mnt/images",
        "Type=fuse.glancefs",
        "Options=_netdev,ttl=60,cache_dir=/var/cache/glancefs",
        "",
        "[Install]",
        "WantedBy=remote-fs.target",
    ])
    out += example([
        "[Unit]",
        "Description=Glance images of mycloud, mounted on first access",
        "",
        "[Automount]",
        "Where=/mnt/images",
        "TimeoutIdleSec=600",
        "",
        "[Install]",
        "WantedBy=remote-fs.target",
    ])
    out += [".SH FILES AND NAMES"]
    out += para(
        "The root lists the images of the project, one regular file per image, from the "
        "paginated list call (never one request per file), cached for ``ttl`` seconds. Size "
        "is the image's size; mtime its ``mtime`` property when a tool set one, else "
        "updated_at; ctime created_at. Images that are not active are listed, but opening "
        "one fails (see ERRORS). ``df`` shows usage and quota where the server publishes "
        "them.")
    out += para(
        f"``{names.RESERVED}/<image id>`` reaches every image whatever its name. With Images "
        "v2 the root also holds read-only views, listed only once looked into: "
        "``.shared/`` (images shared with the project, any member status), ``.community/``, "
        "``.hidden/`` (``os_hidden=true``) and ``.by-tag/<tag>/``.")
    out += para(
        "Names a filesystem cannot show are escaped reversibly: ``%`` is ``%25``, ``/`` "
        "``%2F``, NUL ``%00``; ``.`` and ``..`` are ``%2E`` and ``%2E%2E``, the names of the "
        "mount's folders start with ``%2E``; an image without a name is ``"
        + names.UNNAMED.decode() + f"``. A name longer than {names.NAME_MAX} bytes is cut and "
        "ends in ``~<image id>``. Of images with the same name, the one that had it first "
        "keeps it; the others are shown as ``name~<first "
        f"{names.SHORT_ID} characters of the id>``.")
    out += para(
        "Writing: ``cp file /mnt/images/`` creates the image and streams the upload while "
        "``cp`` runs; close returns once the image is active and its checksum equals what "
        "was written. disk_format comes from the data's signature, then the extension. Any "
        "failure makes the copy fail with an errno and deletes the half-made image; the "
        "write journal (``journal_dir``) lets the next mount delete what a mount that died "
        "left. ``rm`` deletes an image, ``mv`` renames it.")
    out += [".SH EXTENDED ATTRIBUTES"]
    settable = [f for f in xattrs.CORE_FIELDS if f not in xattrs.READ_ONLY_FIELDS]
    out += para(
        f"``{xattrs.CORE_PREFIX}<field>`` for the image fields "
        + ", ".join(f"``{f}``" for f in xattrs.CORE_FIELDS)
        + f"; ``{xattrs.PROPERTY_PREFIX}<key>`` for every other property. Booleans read "
        "``true``/``false``, tags a JSON list; a field the server left empty has no "
        "attribute (ENODATA). Writable with setfattr: "
        + ", ".join(f"``{xattrs.CORE_PREFIX}{f}``" for f in settable)
        + f" and every ``{xattrs.PROPERTY_PREFIX}<key>`` (``setfattr -x`` removes a "
        "property); the others give EPERM.")
    out += para(
        f"``{xattrs.MEMBER_STATUS.decode()}`` in ``.shared/``: the project's answer to the "
        "share; setting it to ``accepted``, ``rejected`` or ``pending`` answers. "
        "``user.glancefs.stats`` on the root: the mount's counters as JSON.")
    out += [f".\\\" {len(fields.FIELDS)} fields in glancefs.api.fields"]
    out += errors_section()
    out += [".SH SIGNALS"]
    out += tagged(bold("SIGTERM") + ", " + bold("SIGINT"),
                  "Unmount: requests still waiting on the server get 2 seconds, then end; "
                  "images half-made are deleted, or left in the write journal for the next "
                  "mount. ``umount`` and ``fusermount3 -u`` do the same.")
    out += tagged(bold("SIGHUP"), "Ignored: the mount has no terminal to lose.")
    out += tagged(bold("SIGKILL"),
                  "The kernel mount stays as ``Transport endpoint is not connected`` until "
                  "``umount`` (or ``fusermount3 -u``); the next mount of the same endpoint "
                  "deletes the images the dead one left half-made (write journal).")
    out += [".SH EXIT STATUS"]
    out += tagged(bold("0"), "The mount works (in the background unless ``-f``; with ``-f``, "
                             "it was unmounted cleanly).")
    out += tagged(bold("1"), "The mount could not be made: credentials, server, mount point "
                             "(one line on standard error says why).")
    out += tagged(bold("2"), "Wrong command line or mount option.")
    out += [".SH ENVIRONMENT"]
    out += para(
        "The ``OS_*`` variables the glance command reads (listed in glancefs(1)); "
        "``-o os_*`` options and SOURCE override them. ``OS_CLIENT_CONFIG_FILE`` names a "
        "clouds.yaml to read first.")
    out += files_section(mount=True)
    out += [".SH SEE ALSO",
            "glancefs(1), mount(8), fstab(5), systemd.mount(5), systemd.automount(5), "
            "fusermount3(1), getfattr(1), setfattr(1)"]
    return "\n".join(out) + "\n"


def errors_section() -> list[str]:
    from glancefs.fs import errors

    name = errno.errorcode.get
    out = [".SH ERRORS"]
    out += para(
        "Every refusal is an errno plus one log line naming the operation, the image, the "
        "HTTP status and the server's message.")
    out += [".SS Opening an image that is not active"]
    by_errno: dict[int, list[str]] = {}
    for status, (number, _) in errors.STATUS_ERRNO.items():
        by_errno.setdefault(number, []).append(status)
    for number, statuses in by_errno.items():
        out += tagged(bold(str(name(number))), "status " + ", ".join(statuses))
    out += [".SS Answers of the server"]
    out += para("An error of the Images API, after the client's retries, gives (the first "
                "that applies):")
    causes: dict[int, list[str]] = {}
    for cls, number in errors.TABLE:
        code_ = getattr(cls, "http_status", None) or getattr(cls, "code", None)
        what = f"HTTP {code_} ({cls.__name__})" if isinstance(code_, int) else cls.__name__
        causes.setdefault(number, []).append(what)
    for number, whats in causes.items():
        out += tagged(bold(str(name(number))), ", ".join(whats))
    out += [".SS Depending on the operation"]
    ops: dict[tuple[int, str], list[str]] = {}
    for (operation, cls), number in errors._BY_OPERATION.items():
        ops.setdefault((number, cls.__name__), []).append(operation)
    for (number, cls_name), operations in ops.items():
        out += tagged(bold(str(name(number))), f"{cls_name} in {', '.join(operations)}")
    out += [".SS Refusals of the mount itself"]
    for number, text in (
            (errno.EROFS, "a change on a mount with ``-o ro``"),
            (errno.EPERM, "creating, removing or renaming in ``.by-id`` or a view; mkdir, "
                          "symlinks, hard links; opening an active image for writing without "
                          "``replace_on_close``; setting a read-only field"),
            (errno.ESPIPE, "a write that goes back without a spool (``spool_dir=none``)"),
            (errno.ENOSPC, "the spool is full (``spool_size``), or a quota of the server"),
            (errno.EFBIG, "the server's image size cap"),
            (errno.ETIMEDOUT, "a metadata request past ``metadata_timeout``"),
            (errno.EIO, "a read past ``timeout``, a hash mismatch, a broken upload")):
        out += tagged(bold(str(name(number))), text)
    return out


def files_section(mount: bool) -> list[str]:
    out = [".SH FILES"]
    out += tagged(bold("./clouds.yaml") + ", " + bold("~/.config/openstack/clouds.yaml")
                  + ", " + bold("/etc/openstack/clouds.yaml"),
                  "clouds, searched in this order (``secure.yaml`` beside one adds its "
                  "secrets)")
    if mount:
        out += tagged(bold("/var/tmp/glancefs-UID/journal"),
                      "the write journal (``journal_dir``)")
        out += tagged(bold("/var/tmp"), "the spool of files being written (``spool_dir``)")
        out += tagged(bold("/etc/fuse.conf"),
                      "``user_allow_other`` lets users other than root use ``allow_other``")
        out += tagged(bold("/sbin/mount.fuse.glancefs"),
                      "the link mount(8) and fstab use for ``fuse.glancefs``")
    return out


# -- glancefs(1) --------------------------------------------------------------------------------

def cli_page() -> str:
    from glancefs.cli import commands as cmds
    from glancefs.cli.main import build_parser

    out = header("glancefs", 1, "OpenStack Images (Glance) command line and FUSE mount")
    out += [".SH SYNOPSIS",
            f"{bold('glancefs')} [{bold('--os-')}{italic('...')} {italic('options')}] "
            f"[{bold('-f')} {bold('table')}|{bold('json')}] {italic('command')} "
            f"[{italic('arguments')}]",
            ".br", f"{bold('glancefs help')} [{italic('command')}]",
            ".br", f"{bold('glancefs --version')}",
            ".SH DESCRIPTION"]
    out += para(
        "glancefs has the image commands and global options of OpenStack's ``glance`` "
        "command (python-glanceclient), for Images API v2 and v1, and ``mount``, which "
        "mounts the images as a directory (mount.glancefs(8)). Credentials come from the "
        "``--os-*`` options, the ``OS_*`` variables, or ``--os-cloud`` with clouds.yaml; "
        "prefer variables for secrets, since a command line is visible in ``ps`` (glancefs "
        "warns when one is given as an option). The Images API version is "
        "``--os-image-api-version``, else ``OS_IMAGE_API_VERSION``, else the cloud's "
        "``image_api_version``, else 2; a command of the other version says so.")
    out += [".SH GLOBAL OPTIONS"]
    group = None
    env_vars: list[tuple[str, str]] = []
    for title, action, var in global_options():
        if title != group:
            group = title
            out += [f".SS {esc(title)}"]
        text = _ENV.sub("", action_help(action, "glancefs"))
        if var:
            text += f" Default: ``{var}``."
            env_vars.append((var, ", ".join(action.option_strings)))
        out += tagged(invocation(action), text)
    parser2, subs2 = build_parser("2")
    _, subs1 = build_parser("1")
    summaries = command_summaries(parser2)
    out += [".SH COMMANDS"]
    out += para("With Images API v2 (the default):")
    # Every command the parser has (the tables' and main's own: mount, help ...),
    # but not the v1 ones, which answer under v2 only that they need v1.
    for name in sorted(n for n in subs2 if n not in cmds.V1 or n in cmds.V2):
        text = cmds.V2[name].description if name in cmds.V2 else (
            subs2[name].description or summaries.get(name) or "")
        out += command_entry(name, text, subs2[name])
    v1_only = sorted(set(cmds.V1) - set(cmds.V2))
    out += [".SS Images API v1"]
    out += para("With ``--os-image-api-version 1`` these commands speak v1; their arguments "
                "follow the v1 glance command:")
    for name in sorted(cmds.V1):
        out += command_entry(name + (" (v1 only)" if name in v1_only else ""),
                             cmds.V1[name].description, subs1[name])
    out += [".SH OUTPUT FORMATS"]
    formats = next(a for _, a, _ in global_options() if "--format" in a.option_strings)
    out += para(
        "``-f``/``--format`` chooses " + " or ".join(f"``{c}``" for c in formats.choices or ())
        + f" (default ``{formats.default}``): a table for people, with ``-v`` more columns; "
        "JSON for scripts (a list for the list commands, an object for one image). Progress "
        "bars (``--progress``) appear only when standard error is a terminal.")
    out += [".SH EXIT STATUS"]
    for status, text in (
            ("0", "success"),
            ("1", "failure, with one line on standard error: "
                  "``glancefs: COMMAND: reason`` (a traceback only with ``--debug``); "
                  "``image-delete`` of several images fails when one of them failed"),
            ("2", "a wrong command line (unknown command or option, a bad value)"),
            ("130", "interrupted (SIGINT)"),
            ("141", "standard output was closed early (``glancefs image-list | head``)")):
        out += tagged(bold(status), text)
    out += [".SH ENVIRONMENT"]
    for var, flags in env_vars:
        out += tagged(bold(var), f"the default of {flags}")
    out += tagged(bold("OS_CLIENT_CONFIG_FILE"), "a clouds.yaml to read first")
    out += files_section(mount=False)
    out += [".SH EXAMPLES"]
    out += example([
        "export OS_CLOUD=mycloud                 # or OS_AUTH_URL, OS_USERNAME, ...",
        "glancefs image-list --limit 20 --sort-key name --sort-dir asc",
        "glancefs image-create --name cirros --disk-format qcow2 \\",
        "    --container-format bare --file cirros.qcow2 --progress",
        "glancefs image-download cirros --file copy.qcow2",
        "glancefs -f json image-list | jq '.[].name'",
        "glancefs mount mycloud /mnt/images -o ttl=60",
    ])
    out += [".SH SEE ALSO", "mount.glancefs(8), glance(1)"]
    return "\n".join(out) + "\n"


def command_summaries(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Command name -> the one line ``glancefs help`` shows for it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: str(a.help or "") for a in action._choices_actions}
    return {}


def command_entry(title: str, description: str, parser: argparse.ArgumentParser) -> list[str]:
    out = [".TP", bold(title)]
    paragraphs = [p for p in description.split("\n\n") if p.strip()]
    if paragraphs:
        out.append(code(" ".join(paragraphs[0].split())))
    for text in paragraphs[1:]:
        out += [".IP", code(" ".join(text.split()))]
    items = [a for a in visible_actions(parser) if a.option_strings != ["-h", "--help"]]
    if items:
        out += [".RS"]
        for action in items:
            out += tagged(invocation(action), action_help(action, parser.prog))
        out += [".RE"]
    return out


# -- build step ---------------------------------------------------------------------------------

def render() -> dict[str, str]:
    """File name -> page text."""
    return {"glancefs.1": cli_page(), "mount.glancefs.8": mount_page()}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m glancefs.cli.manpages [DIR]``: write the pages into DIR
    (default ``man``); ``--check``: exit 1 when a page there is not current."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    target = Path(args[0] if args else "man")
    stale = []
    for name, text in render().items():
        path = target / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        target.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)
    if stale:
        print("not current (run: python -m glancefs.cli.manpages man): " + ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

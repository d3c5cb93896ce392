"""The man pages, --help and --version: generated from the option and command tables the
code runs on, committed under man/ and current, complete, and rendered by
man(1) without a groff warning."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from glancefs.cli import commands as cmds
from glancefs.cli import manpages
from glancefs.cli.main import build_parser, run
from glancefs.fs.options import GROUPS, MountOptions, apply_option_string, option_docs

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man"


def rendered(page: str) -> tuple[str, str]:
    """(text, warnings) of ``man -l`` on a committed page, every groff warning on."""
    if not shutil.which("man"):
        pytest.fail("man is not installed (scripts/lib.sh installs man-db and groff-base)")
    env = dict(os.environ, MANWIDTH="200", MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8")
    env.pop("MAN_KEEP_FORMATTING", None)
    proc = subprocess.run(["man", "--warnings=w", "-l", str(MAN / page)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # Not a terminal: man-db strips bold and underline; hyphenation is off at this width
    # for the words that matter, but join what it hyphenated anyway.
    return re.sub(r"\u2010\n\s*", "", proc.stdout), proc.stderr


def mount_help_text() -> str:
    out = subprocess.run([sys.executable, "-m", "glancefs.cli.mount_helper", "--help"],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, COLUMNS="100"))
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_committed_pages_are_what_the_tables_give_now() -> None:
    """man/ is regenerated whenever an option, a command or an errno rule
    changes (python -m glancefs.cli.manpages man)."""
    for name, text in manpages.render().items():
        assert (MAN / name).read_text() == text, (
            f"man/{name} is not current: run `python -m glancefs.cli.manpages man`")


@pytest.mark.parametrize("page", sorted(manpages.PAGES))
def test_man_renders_the_page_without_warnings(page: str) -> None:
    text, warnings = rendered(page)
    assert warnings == ""
    groff = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", str(MAN / page)],
                           capture_output=True, text=True, timeout=60)
    assert (groff.returncode, groff.stderr) == (0, "")
    assert manpages.PAGES[page].upper() in text.splitlines()[0]


def test_every_mount_option_is_documented_with_group_and_meaning() -> None:
    docs = {d.name: d for d in option_docs()}
    for f in fields(MountOptions):
        if f.metadata.get("internal"):
            continue
        doc = docs[f.name]
        assert doc.group in dict(GROUPS), f"-o {f.name}: no group (use opt(group=...))"
        assert doc.meaning, f"-o {f.name}: no meaning (use opt(meaning=...))"


def test_every_mount_option_and_default_is_in_the_man_page_and_help() -> None:
    page, _ = rendered("mount.glancefs.8")
    outputs = {"mount.glancefs(8)": page, "mount.glancefs --help": mount_help_text(),
               "glancefs help mount": help_of("mount")}
    for doc in option_docs():
        for where, text in outputs.items():
            assert re.search(rf"^\s+{re.escape(doc.form)}\b", text, re.M), (doc.form, where)
            assert doc.default in " ".join(text.split()), (doc.name, doc.default, where)
        for alias in doc.aliases:
            assert alias in page, (alias, doc.name)


def test_help_groups_the_options_in_the_table_order() -> None:
    text = mount_help_text()
    titles = [title for _, title in GROUPS]
    positions = [text.index(f"\n{title}:\n") for title in titles]
    assert positions == sorted(positions)
    # Each option sits under its own group's title.
    for doc in option_docs():
        at = re.search(rf"^  {re.escape(doc.form)}\b", text, re.M)
        assert at is not None
        before = [t for t, p in zip(titles, positions, strict=True) if p < at.start()]
        assert before[-1] == dict(GROUPS)[doc.group], doc.name


def test_the_defaults_shown_are_the_values_the_parser_gives() -> None:
    """A default the help prints, written back as -o, is the default itself."""
    plain = MountOptions()
    written = {f.name for f in fields(MountOptions) if f.metadata.get("shown")}
    for doc in option_docs():
        literal = re.fullmatch(r"[0-9.]+[KMGT]?|/[\w/.-]+|on|off", doc.default)
        if doc.name in written or "=" not in doc.form or not literal:
            continue
        given = MountOptions()
        apply_option_string(given, f"{doc.name}={doc.default}")
        assert getattr(given, doc.name) == getattr(plain, doc.name), doc.name


def help_of(command: str) -> str:
    import io

    from glancefs.cli.commands import Console

    out, err = io.StringIO(), io.StringIO()
    console = Console(stdin=io.BytesIO(), stdout=out, stdout_binary=io.BytesIO(), stderr=err)
    assert run(["help", command], console=console, environ={"COLUMNS": "100"}) == 0, err
    return out.getvalue()


def test_every_command_and_global_option_is_in_glancefs_1() -> None:
    page, _ = rendered("glancefs.1")
    _, commands = build_parser("2")
    assert {"image-list", "mount", "help"} <= set(commands)
    for name in set(commands) | set(cmds.V1):
        # A command is a tag at the section's indent; a short one shares its line.
        assert re.search(rf"^ {{7}}{re.escape(name)}( \(v1 only\))?(\s|$)", page, re.M), name
    sections = re.findall(r"^[A-Z][A-Z ]+$", page, re.M)
    for section in ("GLOBAL OPTIONS", "COMMANDS", "OUTPUT FORMATS", "EXIT STATUS",
                    "ENVIRONMENT"):
        assert section in sections
    env = page[page.index("\nENVIRONMENT\n"):]
    for _, action, var in manpages.global_options():
        assert action.option_strings[-1] in page, action.option_strings
        if var:
            assert var in env, var


def test_every_argument_of_a_command_is_in_glancefs_1() -> None:
    page, _ = rendered("glancefs.1")
    for table in (cmds.V2, cmds.V1):
        for command in table.values():
            for flags, kwargs in command.arguments:
                if kwargs.get("help") == "==SUPPRESS==":
                    continue
                shown = flags[-1] if flags[0].startswith("-") else kwargs.get("metavar",
                                                                              flags[0])
                assert str(shown) in page, (command.name, flags)


def test_the_mount_page_has_the_sections_a_mount_helper_needs() -> None:
    page, _ = rendered("mount.glancefs.8")
    sections = re.findall(r"^[A-Z][A-Z ]+$", page, re.M)
    for section in ("SYNOPSIS", "OPTIONS", "MOUNT OPTIONS", "FSTAB AND SYSTEMD",
                    "FILES AND NAMES", "EXTENDED ATTRIBUTES", "ERRORS", "SIGNALS",
                    "EXIT STATUS", "FILES"):
        assert section in sections
    for errno_name in ("EAGAIN", "EACCES", "ENOENT", "EIO", "EPERM", "EROFS", "ENOSPC",
                       "ETIMEDOUT", "EMEDIUMTYPE"):
        assert re.search(rf"^\s+{errno_name}\b", page, re.M), errno_name
    assert "fuse.glancefs" in page and "x-systemd.automount" in page


def test_the_readme_option_table_names_every_option() -> None:
    """README.rst's table is read on the project page without the package: it
    names every option the table of glancefs/fs/options.py has."""
    text = (ROOT / "README.rst").read_text()
    table = text[text.index("Mount options (``-o``)"):text.index("When the server is slow")]
    for doc in option_docs():
        assert re.search(rf"(^|[\s,/]){re.escape(doc.name)}(?![\w.])", table, re.M), doc.name


def test_version_names_glancefs_python_pyfuse3_and_libfuse() -> None:
    """What a bug report needs, from both commands (the installed wheel's are
    checked in test_packaging.py)."""
    import io
    import platform

    from glancefs import __version__
    from glancefs.cli.commands import Console

    out = io.StringIO()
    console = Console(stdin=io.BytesIO(), stdout=out, stdout_binary=io.BytesIO(),
                      stderr=io.StringIO())
    assert run(["--version"], console=console, environ={}) == 0
    helper = subprocess.run([sys.executable, "-m", "glancefs.cli.mount_helper", "--version"],
                            capture_output=True, text=True, timeout=60)
    assert helper.returncode == 0, helper.stderr
    for prog, text in (("glancefs", out.getvalue()), ("mount.glancefs", helper.stdout)):
        lines = text.splitlines()
        assert lines[0] == f"{prog} {__version__}"
        assert lines[1].startswith(f"Python {platform.python_version()} ")
        assert re.fullmatch(r"pyfuse3 3\.\d+\.\d+", lines[2]), lines
        assert re.fullmatch(r"libfuse 3\.\d+\.\d+", lines[3]), lines

"""Every v2 command of python-glanceclient's ``glance`` exists in ``glancefs``: the two
``help`` listings side by side (no server needed), and ``glancefs bash-completion``.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from glancefs.testing.glance_server import ensure_glance_venv, glance_bin
from tests.cli_support import cli_env, glancefs_cmd, run_glancefs

# A command line in argparse's listing: four spaces, the name, then its summary or nothing
# (a long name puts its summary on the next line).
_COMMAND_LINE = re.compile(r"^    ([a-z][a-z0-9-]+)(?:\s{2,}\S.*)?$")


def listed_commands(help_text: str) -> set[str]:
    return {m.group(1) for line in help_text.splitlines() if (m := _COMMAND_LINE.match(line))}


def glance_help() -> str:
    ensure_glance_venv()
    env = cli_env(OS_IMAGE_API_VERSION="2")
    proc = subprocess.run([str(glance_bin("glance")), "help"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def glancefs_help() -> str:
    proc = subprocess.run(glancefs_cmd("help"), env=cli_env(OS_IMAGE_API_VERSION="2"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # glancefs lists its commands with two spaces of indent; make them look like glance's.
    return "\n".join("  " + line if line.startswith("  ") and not line.startswith("   ")
                     else line for line in proc.stdout.splitlines())


@pytest.fixture(scope="module")
def glance_commands() -> set[str]:
    commands = listed_commands(glance_help())
    assert len(commands) > 60, "glance help listed too few commands: the parser is wrong"
    return commands


@pytest.fixture(scope="module")
def glancefs_commands() -> set[str]:
    return listed_commands(glancefs_help())


def test_every_glance_v2_command_is_in_glancefs(glance_commands: set[str],
                                                glancefs_commands: set[str]) -> None:
    missing = glance_commands - glancefs_commands
    assert not missing, f"glance v2 commands missing from glancefs: {sorted(missing)}"


def test_bash_completion_prints_every_command_and_option(glancefs_commands: set[str]) -> None:
    result = run_glancefs(None, "bash-completion", environ={})
    assert result.rc == 0 and result.err == ""
    words = result.out.split()
    assert len(words) == len(set(words)) and result.out.count("\n") == 1
    assert set(words) >= glancefs_commands - {"bash-completion"}
    assert "bash-completion" not in words
    for option in ("--os-image-url", "--max-column-width", "--resource-type", "--url",
                   "--target", "--names", "--append", "--file", "-f", "--help"):
        assert option in words, option


# Options of glance commands that glancefs had before issue 16 and still lacks: reported to
# the lead, not part of that issue. Shrinking this is welcome; the test only fails when an
# option missing from glancefs is not listed here.
KNOWN_OPTION_GAPS: dict[str, frozenset[str]] = {}


# glance's v2 parsers as (option strings, positional count) per command, printed as JSON.
_GLANCE_PARSERS = """
import json, warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from glanceclient import shell
    glance = shell.OpenStackImagesShell()
    glance.get_subcommand_parser(2)
print(json.dumps({name: [sorted(parser._option_string_actions),
                         sum(not a.option_strings for a in parser._actions)]
                  for name, parser in glance.subcommands.items()}))
"""


def test_every_glance_option_and_argument_is_in_glancefs(tmp_path: Path) -> None:
    """python-glanceclient's own parsers against glancefs's: each option string of a glance
    command is accepted by the glancefs command of that name, which takes as many
    positional arguments.

    glance builds the field options of image-create and image-update from the image
    schema it cached from a server (``~/.glanceclient/image_schema.json``), or from its
    bundled one, which has more fields (``--instance-uuid`` among them): read in a process
    of its own with an empty home, the bundled one, whatever other tests left in this
    one's home or imported in this process."""
    from glancefs.cli.main import build_parser

    done = subprocess.run([sys.executable, "-c", _GLANCE_PARSERS],
                          env=cli_env(HOME=str(tmp_path)),
                          capture_output=True, text=True, timeout=120, check=True)
    glance: dict[str, list[Any]] = json.loads(done.stdout)
    assert len(glance) > 60, "glance's parser listed too few commands"
    assert "--instance-uuid" in glance["image-create"][0], "not the bundled schema"
    _, ours = build_parser("2")
    gaps: dict[str, list[str]] = {}
    positionals: dict[str, tuple[int, int]] = {}
    for name, (options, count) in glance.items():
        if name not in ours:
            continue  # a missing command is the first test's failure
        lacking = set(options) - set(ours[name]._option_string_actions)
        lacking -= KNOWN_OPTION_GAPS.get(name, frozenset())
        if lacking:
            gaps[name] = sorted(lacking)
        mine = sum(not a.option_strings for a in ours[name]._actions)
        if count != mine:
            positionals[name] = (count, mine)
    assert not gaps, f"options of glance that glancefs lacks: {gaps}"
    assert not positionals, f"positional arguments (glance, glancefs): {positionals}"

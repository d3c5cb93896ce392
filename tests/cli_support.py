"""Helpers for the tests that run the ``glancefs`` command line (in this process or as a
separate one) and check its effect through python-glanceclient."""
from __future__ import annotations

import io
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def cli_env(**extra: str) -> dict[str, str]:
    """The test's environment without OS_* variables, the repository on PYTHONPATH, and
    ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def glancefs_cmd(*argv: str) -> list[str]:
    """The argv that runs ``glancefs ARGV`` with this interpreter."""
    return [sys.executable, "-m", "glancefs.cli.main", *argv]


@dataclass
class CliResult:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def error_line(self) -> str:
        """The one line a failure prints (asserting there is exactly one)."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert len(lines) == 1, self.err
        assert lines[0].startswith("glancefs: "), self.err
        return lines[0]


def run_glancefs(endpoint: str | None, *argv: str, stdin: bytes | None = None,
                 environ: dict[str, str] | None = None) -> CliResult:
    """``glancefs ARGV`` in this process (Images API v2 at ``endpoint``), with its own
    streams; ``environ`` replaces the OS_* environment it sees."""
    from glancefs.cli import commands as cmds
    from glancefs.cli.main import run

    out, err = io.StringIO(), io.StringIO()
    console = cmds.Console(stdin=io.BytesIO(stdin or b""), stdout=out, stdout_binary=io.BytesIO(),
                           stderr=err, stdin_data=stdin is not None)
    env = {"OS_IMAGE_URL": endpoint or "", "OS_IMAGE_API_VERSION": "2"}
    rc = run(list(argv), console=console, environ=env if environ is None else environ)
    return CliResult(rc, out.getvalue(), err.getvalue())


def glanceclient_for(endpoint: str) -> Any:
    """python-glanceclient's v2 client of ``endpoint``: the peer that checks what glancefs did."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import glanceclient
        return glanceclient.Client("2", endpoint=endpoint)

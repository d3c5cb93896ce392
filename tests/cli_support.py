"""Helpers for the tests that run the ``glancefs`` command line as a separate process."""
from __future__ import annotations

import os
import sys
from pathlib import Path

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

"""glancefs as people install it: ``python -m build`` makes an sdist and a
wheel (the wheel built from the sdist, so the sdist is complete), the wheel
installed into a fresh venv outside the checkout gives working commands, man
pages and glancefs.testing, and its mount.glancefs mounts the test Glance and
uploads a file copied in."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from glancefs import __version__
from glancefs.api import Client
from glancefs.testing.glance_server import GlanceServer
from tests.mount_support import is_mounted, require_fuse, unmount

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing that points into the checkout."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OS_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


def check(cmd: list[str], cwd: Path, timeout: float = 600, **env: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    check([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], cwd=ROOT)
    return out


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv, outside the checkout, with only the wheel (and its
    dependencies, from pip's usual sources and cache) installed."""
    home = tmp_path_factory.mktemp("user")
    venv = home / "venv"
    check([sys.executable, "-m", "venv", str(venv)], cwd=home)
    wheel = next(dist.glob("glancefs-*.whl"))
    check([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
           str(wheel)], cwd=home)
    yield venv


def test_sdist_and_wheel_hold_the_package_the_man_pages_and_the_docs(dist: Path) -> None:
    wheel = next(dist.glob(f"glancefs-{__version__}-py3-none-any.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    data = f"glancefs-{__version__}.data/data/share/man"
    assert {f"{data}/man1/glancefs.1", f"{data}/man8/mount.glancefs.8",
            "glancefs/cli/mount_helper.py", "glancefs/testing/glance_server.py"} <= names
    assert not any(n.startswith(("tests/", "scripts/")) for n in names)
    with tarfile.open(next(dist.glob(f"glancefs-{__version__}.tar.gz"))) as sdist:
        inside = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {"man/glancefs.1", "man/mount.glancefs.8", "README.rst", "docs/design.rst",
            "setup.cfg", "pyproject.toml"} <= inside


def test_installed_commands_report_their_versions_from_the_venv(installed: Path,
                                                                 tmp_path: Path) -> None:
    where = check([str(installed / "bin" / "python"), "-c",
                   "import glancefs; print(glancefs.__file__)"], cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(installed)
    for command in ("glancefs", "mount.glancefs"):
        out = check([str(installed / "bin" / command), "--version"], cwd=tmp_path)
        lines = out.splitlines()
        assert lines[0] == f"{command} {__version__}"
        assert lines[1].startswith(f"Python {sys.version_info.major}.{sys.version_info.minor}")
        assert lines[2].startswith("pyfuse3 3.")
        assert lines[3].startswith("libfuse 3.")


def test_man_finds_the_installed_pages(installed: Path, tmp_path: Path) -> None:
    """With the venv's bin on PATH (what activate and pipx do), man finds its
    share/man: ``man mount.glancefs`` works for a pip-installed glancefs."""
    path = f"{installed / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    for page, section in (("glancefs", "1"), ("mount.glancefs", "8")):
        found = check(["man", "-w", section, page], cwd=tmp_path, PATH=path)
        assert Path(found.strip()) == installed / "share" / "man" / f"man{section}" / \
            f"{page}.{section}"
        text = check(["man", section, page], cwd=tmp_path, PATH=path, MANPAGER="cat",
                     MANWIDTH="100")
        assert "NAME" in text and page in text


# README.rst's example of glancefs.testing, run by the wheel's interpreter.
TESTING_EXAMPLE = """
import sys
from pathlib import Path
from glancefs import Client
from glancefs.testing.glance_server import running_glance

with running_glance(Path(sys.argv[1])) as glance:
    client = Client("2", endpoint=glance.endpoint)
    image = client.images.create(name="x", disk_format="raw", container_format="bare")
    client.images.upload(image["id"], b"from the wheel")
    print(client.images.get(image["id"])["status"], b"".join(client.images.data(image["id"])))
"""


def test_installed_glancefs_testing_runs_a_real_glance(installed: Path, tmp_path: Path) -> None:
    """glancefs.testing ships as a supported API: from the wheel, with no
    checkout on the path, it starts a real Glance of its own and stops it."""
    out = check([str(installed / "bin" / "python"), "-c", TESTING_EXAMPLE,
                 str(tmp_path / "glance")], cwd=tmp_path, timeout=300)
    assert out.split() == ["active", "b'from", "the", "wheel'"]


def test_installed_mount_helper_mounts_and_uploads(installed: Path, tmp_path: Path,
                                                   glance_v2: GlanceServer) -> None:
    """The wheel's mount.glancefs, run as a user runs it (it returns once the
    mount works and serves in the background), lists an image and uploads a
    file copied in; the server then holds it, active, with the same bytes."""
    require_fuse()
    client = Client("2", endpoint=glance_v2.endpoint)
    there = os.urandom(300_000)
    made = client.images.create(name=f"wheel-there-{os.getpid()}.raw", disk_format="raw",
                                container_format="bare")
    client.images.upload(made["id"], there)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "mount.log"
    uploaded = None
    try:
        check([str(installed / "bin" / "mount.glancefs"), "glance", str(mnt), "-o",
               f"api_version=2,log={log},journal_dir={tmp_path / 'journal'},"
               f"spool_dir={tmp_path},fsname=wheel-images"],
              cwd=tmp_path, timeout=120, OS_IMAGE_URL=glance_v2.endpoint)
        assert is_mounted(mnt)
        with open("/proc/self/mounts") as mounts:
            mine = [line.split() for line in mounts if line.split()[1] == str(mnt)]
        assert mine[0][:3] == ["wheel-images", str(mnt), "fuse.glancefs"]
        assert (mnt / made["name"]).read_bytes() == there
        data = os.urandom(3 * 1024 * 1024 + 17)
        name = f"wheel-upload-{os.getpid()}.raw"
        (tmp_path / "src.raw").write_bytes(data)
        check(["cp", str(tmp_path / "src.raw"), str(mnt / name)], cwd=tmp_path, timeout=120)
        found = [i for i in client.images.list() if i["name"] == name]
        assert len(found) == 1
        uploaded = found[0]["id"]
        image = client.images.get(uploaded)
        assert image["status"] == "active"
        assert image["checksum"] == hashlib.md5(data).hexdigest()
        assert b"".join(client.images.data(uploaded)) == data
    finally:
        unmount(mnt)
        deadline = time.monotonic() + 15
        while is_mounted(mnt) and time.monotonic() < deadline:
            time.sleep(0.05)
        for image_id in filter(None, (made["id"], uploaded)):
            client.images.delete(image_id)
    assert not is_mounted(mnt), log.read_text(errors="replace") if log.exists() else ""

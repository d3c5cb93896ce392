"""Disk format detection from real files made by qemu-img and genisoimage."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from glancefs.api.formats import SNIFF_BYTES, guess_formats


@pytest.mark.parametrize("fmt,options", [("qcow2", []), ("vmdk", []), ("vpc", []),
                                         ("vhdx", []), ("vdi", [])])
def test_qemu_img_formats_are_recognised(tmp_path: Path, fmt: str, options: list[str]) -> None:
    path = tmp_path / f"disk.{fmt}"
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *options, str(path), "16M"], check=True)
    head = path.read_bytes()[:SNIFF_BYTES]
    disk, container, how = guess_formats(head, "misleading-name.raw")
    assert (disk, container, how) == ({"vpc": "vhd"}.get(fmt, fmt), "bare", "signature")


def test_iso_is_recognised(tmp_path: Path) -> None:
    if not shutil.which("genisoimage"):
        pytest.fail("genisoimage is missing: scripts/test installs it")
    (tmp_path / "content").mkdir()
    (tmp_path / "content" / "a.txt").write_text("hello")
    iso = tmp_path / "x.img"
    subprocess.run(["genisoimage", "-quiet", "-o", str(iso), str(tmp_path / "content")], check=True)
    assert guess_formats(iso.read_bytes()[:SNIFF_BYTES])[0] == "iso"


def test_unknown_data_falls_back_to_extension_then_raw() -> None:
    assert guess_formats(b"\0" * 4096, "x.qcow2") == ("qcow2", "bare", "extension")
    assert guess_formats(b"\0" * 4096, "x.bin") == ("raw", "bare", "default")
    assert guess_formats(b"", None) == ("raw", "bare", "default")

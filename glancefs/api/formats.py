"""Disk and container format detection from the first bytes of an image.

Glance v2 needs ``disk_format`` and ``container_format`` before it accepts
data, and by default it checks that the data matches the declared format
(415 otherwise). Guessing from the extension alone would mislabel a qcow2
named ``.img``; the data's own signature is the better witness.
"""
from __future__ import annotations

import os
import struct

# How many leading bytes detect() wants to see. ISO 9660 puts its volume
# descriptor at 32 KiB; VHD (fixed) keeps its footer at the end, so it is
# recognised only from the dynamic header copy at offset 0.
SNIFF_BYTES = 64 * 1024

EXTENSIONS = {
    ".qcow2": "qcow2", ".qcow": "qcow2", ".img": "raw", ".raw": "raw", ".iso": "iso",
    ".vmdk": "vmdk", ".vhd": "vhd", ".vhdx": "vhdx", ".vdi": "vdi", ".ploop": "ploop",
    ".aki": "aki", ".ari": "ari", ".ami": "ami",
}


def detect_disk_format(head: bytes) -> str | None:
    """The disk_format the data's signature proves, or None if none matches."""
    if head[:4] == b"QFI\xfb":
        return "qcow2"
    if head[:4] == b"KDMV" or head[:4] == b"COWD" or head[:21] == b"# Disk DescriptorFile":
        return "vmdk"
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if head[:8] == b"conectix":
        return "vhd"
    if len(head) >= 0x44 and struct.unpack_from("<I", head, 0x40)[0] == 0xBEDA107F:
        return "vdi"
    if len(head) >= 0x8006 and head[0x8001:0x8006] == b"CD001":
        return "iso"
    return None


def detect_container_format(head: bytes) -> str | None:
    # An OVA is a tar archive whose first member is the .ovf descriptor.
    first_member = head[:100].rstrip(b"\0")
    if len(head) >= 512 and head[257:262] == b"ustar" and first_member.endswith(b".ovf"):
        return "ova"
    return None


def guess_formats(head: bytes, filename: str | None = None) -> tuple[str, str, str]:
    """(disk_format, container_format, how it was decided) for new data."""
    container = detect_container_format(head)
    if container:
        return "vmdk", container, "signature"
    disk = detect_disk_format(head)
    if disk:
        return disk, "bare", "signature"
    if filename:
        ext = os.path.splitext(filename)[1].lower()
        if ext in EXTENSIONS:
            return EXTENSIONS[ext], "bare", "extension"
    return "raw", "bare", "default"

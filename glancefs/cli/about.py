"""What ``--version`` says: glancefs and what it runs on (Python, pyfuse3,
libfuse), the lines a bug report needs. Nothing here imports pyfuse3: the
versions are read from the installed metadata and from libfuse itself, so
``--version`` works even where the FUSE module would not load."""
from __future__ import annotations

import ctypes
import ctypes.util
import platform
from importlib import metadata

from glancefs import __version__


def libfuse_version() -> str:
    """libfuse's own version (fuse_pkgversion(), libfuse >= 3.0), from the
    library the dynamic linker finds, as pyfuse3 would load it."""
    name = ctypes.util.find_library("fuse3") or "libfuse3.so.3"
    try:
        lib = ctypes.CDLL(name)
        pkgversion = lib.fuse_pkgversion
    except (OSError, AttributeError):
        return "not found (install fuse3)"
    pkgversion.restype = ctypes.c_char_p
    raw = pkgversion()
    return raw.decode("ascii", "replace") if raw else "unknown"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def version_text(prog: str) -> str:
    return (f"{prog} {__version__}\n"
            f"Python {platform.python_version()} ({platform.python_implementation()})\n"
            f"pyfuse3 {package_version('pyfuse3')}\n"
            f"libfuse {libfuse_version()}\n")

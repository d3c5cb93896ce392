"""Mount options: one dataclass with the defaults README.rst documents, and
the ``-o a=b,c`` parser both ``mount.glancefs`` and ``glancefs mount`` use.

Secrets are refused here on purpose: ``-o`` ends up in ``ps``, in
/proc/mounts (as fsname options) and in fstab, so passwords and tokens only
come from the environment or clouds.yaml/secure.yaml.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from glancefs.api.values import GiB, KiB, MiB, major_version, parse_bool, parse_size
from glancefs.fs.write.journal import default_dir as default_journal_dir

__all__ = ["MountOptions", "apply_option_string", "parse_bool", "parse_size"]


@dataclass
class MountOptions:
    ttl: float = 30.0                  # seconds listing/attributes are trusted
    block_size: int = 1 * MiB          # unit of random reads and of the RAM cache
    prefetch_start: int = 1 * MiB      # first prefetch window of a sequential reader
    prefetch_max: int = 64 * MiB       # largest prefetch window per open file
    memory: int = 256 * MiB            # RAM for cached and prefetched blocks, all files
    streams: int = 4                   # ranged GETs in flight per sequential reader, at
                                       # most; added only while the reader waits for them
    readahead: int = 2 * MiB           # kernel read-ahead of the mount (root only): 1 MiB
                                       # reads instead of 128 KiB; 4M+ overruns FUSE's 12
                                       # background requests
    cache_dir: str | None = None       # on-disk data cache (off when None)
    cache_size: int = 4 * GiB          # limit of the on-disk cache
    verify: bool = True                # hash-check full in-order reads
    timeout: float = 30.0              # seconds without a byte from the server before
                                       # a request fails (a stalled server -> EIO); also
                                       # the deadline of a read of data not cached
    metadata_timeout: float = 10.0     # deadline of a request an ls, stat, getfattr,
                                       # rm or mv waits on, its retries included
    connect_timeout: float = 5.0       # seconds to open a connection (refused or
                                       # unroutable servers are known this fast)
    upload_timeout: float = 600.0      # seconds the server may take to answer once an
                                       # upload's data is sent (it finishes the image)
    # The write path (glancefs.fs.write).
    spool_dir: str | None = "/var/tmp"  # local copy of files being written; none: no spool
    spool_size: int = 8 * GiB          # limit of the spool, all files together
    write_buffer: int = 8 * MiB        # data queued for an upload, per file being written
    # Images being written, on disk, so the next mount deletes them if this one
    # dies mid-upload (glancefs.fs.write.journal); none: no journal.
    journal_dir: str | None = field(default_factory=default_journal_dir)
    replace_on_close: bool = False     # an active image opened for writing is replaced
    # How a file written through the mount reaches Glance: "direct" (PUT .../file),
    # "import" (stage, then the glance-direct import: conversion, several stores) or
    # "auto" (README.rst, Writing: how it decides). stores/all_stores/allow_failure:
    # where an import puts the image, as glance image-create-via-import names them.
    upload: str = "auto"
    stores: list[str] = field(default_factory=list)
    all_stores: bool = False
    allow_failure: bool = True
    modtime: bool = True               # utimes kept in the 'mtime' property, shown by stat
    ro: bool = False
    allow_other: bool = False
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    umask: int = 0o022
    api_version: str | None = None     # 1 or 2; None: OS_IMAGE_API_VERSION, else 2
    log: str | None = None             # log file; None: syslog when daemonized
    debug: bool = False
    foreground: bool = False
    fsname: str = "glancefs"
    # Credentials that are not secret (secrets: environment or clouds.yaml only).
    os_cloud: str | None = None
    os_image_url: str | None = None
    os_auth_url: str | None = None
    os_region_name: str | None = None
    os_interface: str | None = None
    os_project_name: str | None = None
    os_project_id: str | None = None
    os_username: str | None = None
    os_user_domain_name: str | None = None
    os_project_domain_name: str | None = None
    os_cacert: str | None = None
    insecure: bool = False
    # Generic mount flags passed on to the kernel.
    kernel_flags: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.block_size < 64 * KiB or self.block_size & (self.block_size - 1):
            raise ValueError("block_size must be a power of two of at least 64K")
        if self.prefetch_max < self.block_size:
            self.prefetch_max = self.block_size
        self.prefetch_start = max(self.block_size,
                                  min(self.prefetch_start, self.prefetch_max))
        if self.memory < 4 * self.block_size:
            raise ValueError(f"memory must be at least 4 blocks ({4 * self.block_size} bytes)")
        if self.api_version is not None:
            self.api_version = major_version(self.api_version)
        if self.ttl < 0:
            raise ValueError("ttl cannot be negative")
        for name in ("timeout", "metadata_timeout", "connect_timeout", "upload_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be more than 0 seconds")
        if self.streams < 1:
            raise ValueError("streams must be at least 1")
        if self.write_buffer < 64 * KiB:
            raise ValueError("write_buffer must be at least 64K")
        if self.upload not in UPLOAD_MODES:
            raise ValueError(f"upload must be one of {', '.join(UPLOAD_MODES)}, "
                             f"not {self.upload!r}")
        if self.stores and self.all_stores:
            raise ValueError("only one of stores and all_stores can be given")
        if (len(self.stores) > 1 or self.all_stores) and self.upload == "direct":
            raise ValueError("several stores and all_stores need upload=import or auto: "
                             "a direct upload goes to one store")


UPLOAD_MODES = ("direct", "import", "auto")
_SIZES = {"block_size", "prefetch_start", "prefetch_max", "memory", "cache_size", "readahead",
          "spool_size", "write_buffer"}
_BOOLS = {"verify", "ro", "allow_other", "debug", "foreground", "insecure", "replace_on_close",
          "modtime", "all_stores", "allow_failure"}
_ALIASES = {
    "prefetch": "prefetch_max", "max_prefetch": "prefetch_max", "memory_budget": "memory",
    "mem": "memory", "cache": "cache_dir", "logfile": "log", "log_file": "log",
    "cloud": "os_cloud", "image_url": "os_image_url", "os_image_api_version": "api_version",
    "region": "os_region_name", "spool": "spool_dir", "replace": "replace_on_close",
    "journal": "journal_dir", "store": "stores",
}
# Generic flags mount(8) or fstab may hand us; they belong to the kernel or to mount.
KERNEL_FLAGS = {"nosuid", "nodev", "noexec", "noatime", "nodiratime", "relatime",
                "suid", "dev", "exec", "atime", "sync", "async", "dirsync"}
IGNORED = {"defaults", "auto", "noauto", "user", "nouser", "users", "owner", "_netdev",
           "nofail", "loud", "silent", "nosymfollow", "lazytime"}
SECRET_WORDS = ("password", "token", "secret", "os_key", "credential_secret")


# Flags that switch an option off: flag -> (field, value).
_NEGATIONS: dict[str, tuple[str, Any]] = {
    "rw": ("ro", False), "noverify": ("verify", False),
    "no_allow_other": ("allow_other", False), "nospool": ("spool_dir", None),
    "nojournal": ("journal_dir", None),
    "no_modtime": ("modtime", False), "nomodtime": ("modtime", False),
}


def apply_option_string(opts: MountOptions, text: str) -> None:
    """Apply ``-o`` text (comma separated ``key`` or ``key=value``) to ``opts``.

    ``stores=a,b`` is read as glance's ``--stores a,b``: after it, a bare word that
    is no option of ours names one more store (``stores=a:b`` says the same)."""
    known = {f.name: f for f in fields(MountOptions)}
    in_stores = False
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, has_value, value = item.partition("=")
        key = key.strip().lower().replace("-", "_")
        if in_stores and not has_value and not _is_option(key, known):
            opts.stores.append(item)
            continue
        in_stores = False
        if any(word in key for word in SECRET_WORDS):
            raise ValueError(f"option {key!r} would put a secret on the command line; "
                             "set it in the environment (OS_*) or clouds.yaml/secure.yaml")
        if key in KERNEL_FLAGS:
            opts.kernel_flags.append(key)
            continue
        if key in IGNORED or key.startswith(("x-", "comment")):
            continue
        if key in _NEGATIONS:
            setattr(opts, *_NEGATIONS[key])
            continue
        name = _ALIASES.get(key, key)
        if name not in known or name == "kernel_flags":
            raise ValueError(f"unknown mount option {key!r}")
        try:
            converted = _convert(name, value if has_value else None)
        except ValueError as error:
            raise ValueError(f"mount option {key}: {error}") from None
        if name == "stores":
            opts.stores.extend(converted)
            in_stores = True
        else:
            setattr(opts, name, converted)


def _is_option(key: str, known: dict[str, Any]) -> bool:
    return (key in known or key in _ALIASES or key in _NEGATIONS or key in KERNEL_FLAGS
            or key in IGNORED or key.startswith(("x-", "comment")))


def _convert(name: str, value: str | None) -> Any:
    if name in _BOOLS:
        # A bare flag, or ``flag=`` (fstab writes those), switches it on.
        return True if value is None or not value.strip() else parse_bool(value)
    if value is None:
        raise ValueError("needs a value (key=value)")
    if name in _SIZES:
        return parse_size(value)
    if name in ("uid", "gid", "streams"):
        return int(value)
    if name == "umask":
        return int(value, 8)
    if name in ("ttl", "timeout", "upload_timeout", "metadata_timeout", "connect_timeout"):
        return float(value)
    if name == "api_version":
        return major_version(value)
    if name == "stores":
        return [s.strip() for s in value.split(":") if s.strip()]
    if name == "upload":
        return value.strip().lower()
    if name in ("spool_dir", "journal_dir") and value.strip().lower() in ("", "none", "off",
                                                                         "no"):
        return None
    return value

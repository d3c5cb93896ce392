"""Mount options: one dataclass with the defaults README.rst documents, and
the ``-o a=b,c`` parser both ``mount.glancefs`` and ``glancefs mount`` use.

Secrets are refused here on purpose: ``-o`` ends up in ``ps``, in
/proc/mounts (as fsname options) and in fstab, so passwords and tokens only
come from the environment or clouds.yaml/secure.yaml.
"""
from __future__ import annotations

import os
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from glancefs.api.download import PART_WINDOW
from glancefs.api.values import GiB, KiB, MiB, major_version, parse_bool, parse_size
from glancefs.fs.write.journal import default_dir as default_journal_dir

__all__ = ["GROUPS", "MountOptions", "OptionDoc", "apply_option_string", "option_docs",
           "parse_bool", "parse_size"]


# The groups ``mount.glancefs --help`` and mount.glancefs(8) list the options
# in, in this order; each option names its group in its own metadata (opt()).
GROUPS: tuple[tuple[str, str], ...] = (
    ("connection", "Connection and credentials"),
    ("reading", "Reading"),
    ("writing", "Writing"),
    ("cache", "Cache"),
    ("ownership", "Ownership and access"),
    ("process", "The mount process"),
)
OTHER_GROUP = "other"   # an option added without opt(): listed last, flagged by a test


def opt(default: Any = MISSING, *, group: str, meaning: str, factory: Any = MISSING,
        metavar: str | None = None, shown: str | None = None) -> Any:
    """A mount option: its default, its group and its one-line meaning (the
    text --help and the man page print), and how the default is shown when
    the value itself would mislead (a per-user path, the caller's uid)."""
    metadata = {"group": group, "meaning": meaning, "metavar": metavar, "shown": shown}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class MountOptions:
    # -- connection and credentials (not secret: secrets come from the environment
    # or clouds.yaml only)
    api_version: str | None = opt(
        None, group="connection", metavar="1|2", shown="OS_IMAGE_API_VERSION, else 2",
        meaning="Images API version to speak")
    timeout: float = opt(
        30.0, group="connection",
        meaning="seconds without a byte from the server before a request fails (a stalled "
             "server: EIO); also the deadline of a read of data not cached, retries included")
    metadata_timeout: float = opt(
        10.0, group="connection",
        meaning="deadline of a request an ls, stat, getfattr, setfattr, rm, mv or df waits on, "
             "its retries included (then ETIMEDOUT)")
    connect_timeout: float = opt(
        5.0, group="connection",
        meaning="seconds to open a connection: a refused or unroutable server is known this fast")
    upload_timeout: float = opt(
        600.0, group="connection",
        meaning="seconds the server may take to answer once an upload's data is sent (it "
             "writes and hashes the image then)")
    clouds: list[str] = opt(factory=list, group="connection",
                            metavar="CLOUDS|all", shown="one cloud",
                            meaning="several clouds in one mount (comma- or colon-separated): "
                                 "a folder per cloud of clouds.yaml (and per region); all: "
                                 "every cloud")
    os_cloud: str | None = opt(None, group="connection", metavar="CLOUD", shown="OS_CLOUD",
                               meaning="cloud name in clouds.yaml")
    os_image_url: str | None = opt(None, group="connection", metavar="URL",
                                   shown="OS_IMAGE_URL",
                                   meaning="Images API endpoint; with OS_AUTH_TOKEN Keystone "
                                        "is not used")
    os_auth_url: str | None = opt(None, group="connection", metavar="URL",
                                  shown="OS_AUTH_URL", meaning="Keystone URL")
    os_region_name: str | None = opt(None, group="connection", metavar="REGION",
                                     shown="OS_REGION_NAME",
                                     meaning="region of the image endpoint")
    os_interface: str | None = opt(None, group="connection", metavar="INTERFACE",
                                   shown="OS_INTERFACE",
                                   meaning="endpoint interface: public, internal or admin")
    os_project_name: str | None = opt(None, group="connection", metavar="NAME",
                                      shown="OS_PROJECT_NAME", meaning="project name")
    os_project_id: str | None = opt(None, group="connection", metavar="ID",
                                    shown="OS_PROJECT_ID", meaning="project ID")
    os_username: str | None = opt(None, group="connection", metavar="NAME",
                                  shown="OS_USERNAME", meaning="user name")
    os_user_domain_name: str | None = opt(None, group="connection", metavar="NAME",
                                          shown="OS_USER_DOMAIN_NAME",
                                          meaning="domain name of the user")
    os_project_domain_name: str | None = opt(None, group="connection", metavar="NAME",
                                             shown="OS_PROJECT_DOMAIN_NAME",
                                             meaning="domain name of the project")
    os_cacert: str | None = opt(None, group="connection", metavar="FILE", shown="OS_CACERT",
                                meaning="CA bundle to verify TLS servers with")
    insecure: bool = opt(False, group="connection",
                         meaning="do not verify TLS certificates (unsafe)")
    # -- reading
    ttl: float = opt(30.0, group="reading",
                     meaning="seconds the image listing and attributes are trusted before a "
                          "refresh (stale-while-revalidate)")
    block_size: int = opt(1 * MiB, group="reading",
                          meaning="unit of random reads (aligned ranged GETs) and of the RAM "
                               "cache; a power of two, at least 64K")
    prefetch_start: int = opt(1 * MiB, group="reading",
                              meaning="first read-ahead window of a sequential reader")
    prefetch_max: int = opt(PART_WINDOW, group="reading",
                            meaning="largest read-ahead window per open file")
    streams: int = opt(8, group="reading",
                       meaning="ranged GETs receiving at once per sequential reader, at "
                            "most (the next part's request may start while one ends); "
                            "added only while the reader waits for them (1: one at a time)")
    readahead: int = opt(2 * MiB, group="reading",
                         meaning="kernel read-ahead of the mount (root only): 1 MiB reads "
                              "instead of 128 KiB; 4M or more overruns FUSE's 12 background "
                              "requests")
    verify: bool = opt(True, group="reading",
                       meaning="check whole in-order reads against the image hash (EIO on a "
                            "mismatch); noverify: off")
    # -- writing (glancefs.fs.write)
    spool_dir: str | None = opt("/var/tmp", group="writing", metavar="DIR|none",
                                meaning="local copy of files being written, so a writer may go "
                                     "back; none: no spool (such a write gets ESPIPE)")
    spool_size: int = opt(8 * GiB, group="writing",
                          meaning="limit of the spool, all files being written together "
                               "(ENOSPC beyond)")
    write_buffer: int = opt(8 * MiB, group="writing",
                            meaning="data queued for an upload, per file being written")
    # Images being written, on disk, so the next mount deletes them if this one
    # dies mid-upload (glancefs.fs.write.journal); none: no journal.
    journal_dir: str | None = opt(factory=default_journal_dir, group="writing",
                                  metavar="DIR|none", shown="/var/tmp/glancefs-UID/journal",
                                  meaning="write journal, so the next mount deletes what a "
                                       "crashed one left half-made; none: off")
    replace_on_close: bool = opt(False, group="writing",
                                 meaning="an active image opened for writing is uploaded again; "
                                      "the old one is deleted only after success")
    upload: str = opt("auto", group="writing", metavar="direct|import|auto",
                      meaning="how a written file reaches Glance: direct upload, import "
                           "(stage, then glance-direct: conversion, several stores), or auto "
                           "(README: how it decides)")
    stores: list[str] = opt(factory=list, group="writing", metavar="STORES",
                            shown="the default store",
                            meaning="stores an upload puts the image in (an import), "
                                 "comma- or colon-separated")
    all_stores: bool = opt(False, group="writing",
                           meaning="an import puts the image in every store")
    allow_failure: bool = opt(True, group="writing",
                              meaning="an import to several stores succeeds when some fail")
    modtime: bool = opt(True, group="writing",
                        meaning="keep the times tools set (touch, cp -p, rsync -a) in the "
                             "image property mtime; no_modtime: off")
    # -- cache
    memory: int = opt(256 * MiB, group="cache",
                      meaning="RAM for cached and prefetched blocks and the hash queue, all "
                           "files")
    cache_dir: str | None = opt(None, group="cache", metavar="DIR", shown="none",
                                meaning="on-disk data cache, keyed by image id and hash "
                                     "(off when not given)")
    cache_size: int = opt(4 * GiB, group="cache", meaning="size limit of the on-disk cache")
    # -- ownership and access
    ro: bool = opt(False, group="ownership", meaning="read-only mount: refuse every change "
                                                  "(EROFS); rw: the default")
    allow_other: bool = opt(False, group="ownership",
                            meaning="let other users see the mount (needs user_allow_other in "
                                 "/etc/fuse.conf unless root)")
    uid: int = opt(factory=os.getuid, group="ownership", metavar="UID", shown="the caller's",
                   meaning="owner shown for every file")
    gid: int = opt(factory=os.getgid, group="ownership", metavar="GID", shown="the caller's",
                   meaning="group shown for every file")
    umask: int = opt(0o022, group="ownership", metavar="OCTAL", shown="022",
                     meaning="mask of the modes shown (files 0444/0644, directories 0755)")
    # -- the mount process
    log: str | None = opt(None, group="process", metavar="FILE",
                          shown="syslog in the background, stderr with -f",
                          meaning="log file")
    debug: bool = opt(False, group="process",
                      meaning="log debug lines; stays in the foreground (-d)")
    foreground: bool = opt(False, group="process",
                           meaning="stay in the foreground, logging to stderr (-f)")
    fsname: str | None = opt(None, group="process", metavar="NAME",
                             shown="SOURCE, else glancefs",
                             meaning="name /proc/mounts and df show for the mount")
    # Generic mount flags passed on to the kernel (nosuid, nodev, noatime, ...);
    # not an -o option of its own.
    kernel_flags: list[str] = field(default_factory=list, metadata={"internal": True})

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


# Options whose value is a list (-o clouds=a,b or a:b; stores likewise).
LIST_OPTIONS = frozenset({"clouds", "stores"})


def apply_option_string(opts: MountOptions, text: str) -> None:
    """Apply ``-o`` text (comma separated ``key`` or ``key=value``) to ``opts``.

    ``clouds=a,b`` and ``stores=a,b`` are lists although commas separate options
    (glance's ``--stores a,b``): after either, a bare word that is no option of
    ours is one more item (``a:b`` says the same)."""
    known = {f.name: f for f in fields(MountOptions)}
    in_list: str | None = None
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, has_value, value = item.partition("=")
        key = key.strip().lower().replace("-", "_")
        if in_list and not has_value and not _is_option(key, known):
            getattr(opts, in_list).append(item)
            continue
        in_list = None
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
        if name in LIST_OPTIONS:
            getattr(opts, name).extend(converted)
            in_list = name
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
    if name in LIST_OPTIONS:
        return [s.strip() for s in value.split(":") if s.strip()]
    if name == "upload":
        return value.strip().lower()
    if name in ("spool_dir", "journal_dir") and value.strip().lower() in ("", "none", "off",
                                                                         "no"):
        return None
    return value


# -- what --help and mount.glancefs(8) say about each option ---------------------------------

@dataclass(frozen=True)
class OptionDoc:
    name: str
    group: str
    form: str            # how it is written: "ttl=SECONDS", "verify"
    default: str         # the default, as a user would write it
    meaning: str
    aliases: tuple[str, ...]   # other spellings: aliases and the flags that switch it off


def option_docs() -> list[OptionDoc]:
    """Every -o option of :class:`MountOptions`, in GROUPS order (then the
    dataclass's); an option defined without :func:`opt` is listed under
    OTHER_GROUP with an empty help, so it still shows up."""
    order = [name for name, _ in GROUPS]
    docs = [_doc(f) for f in fields(MountOptions) if not f.metadata.get("internal")]
    return sorted(docs, key=lambda d: order.index(d.group) if d.group in order else len(order))


def group_title(group: str) -> str:
    return dict(GROUPS).get(group, "Other options")


def _doc(f: Field) -> OptionDoc:
    meta = f.metadata
    if f.name in _BOOLS:
        form = f.name
    else:
        metavar = meta.get("metavar") or ("SIZE" if f.name in _SIZES
                                          else "SECONDS" if f.type in (float, "float")
                                          else "N" if f.type in (int, "int") else "VALUE")
        form = f"{f.name}={metavar}"
    aliases = [alias for alias, name in _ALIASES.items() if name == f.name]
    aliases += [flag for flag, (name, _) in _NEGATIONS.items() if name == f.name]
    return OptionDoc(f.name, meta.get("group", OTHER_GROUP), form, _default_text(f),
                     meta.get("meaning", ""), tuple(aliases))


def _default_text(f: Field) -> str:
    if f.metadata.get("shown"):
        return str(f.metadata["shown"])
    factory = f.default_factory
    value: Any = factory() if f.default is MISSING and callable(factory) else f.default
    if value is None or value == []:
        return "none"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    if f.name in _SIZES:
        return size_text(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def size_text(size: int) -> str:
    """Bytes as parse_size reads them back: 1M, 64M, 4G, 512K, 1000."""
    for unit, scale in (("T", 1024 * GiB), ("G", GiB), ("M", MiB), ("K", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)

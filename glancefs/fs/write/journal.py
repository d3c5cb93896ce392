"""The write journal: the images this mount created and has not finished,
on disk, so that a mount that dies in the middle of a ``cp`` (SIGKILL, OOM,
power loss) does not leave them behind.

The :class:`~glancefs.fs.write.Janitor` deletes the image of a failed
upload, but its list lives in the mount's memory and dies with it. So each
image is recorded here right after the server created it and before any data
is sent, and forgotten once it is active and verified or once the Janitor
deleted it. The next mount of the same endpoint takes over the journals of
mounts that are gone and hands their images to its Janitor, which deletes
those that are not ``active`` (an image that became active is left alone).

Why it is shaped this way:

* One journal per mount process, named ``<boot id>-<pid>-<start time>``: two
  mounts never write the same file, and a pid reused after a crash or a reboot
  is not mistaken for the mount that wrote the journal.
* A journal's owner holds an exclusive ``flock`` on its ``.lock`` file for its
  whole life; the kernel drops it when the process dies, however it dies. A
  journal is taken over only when that lock is free *and* its pid (with that
  start time, in this boot) is gone: a live mount's uploads are never touched,
  even by a mount in another pid namespace, where pids cannot be compared.
* The journal is rewritten whole (temporary file, fsync, rename, fsync of the
  directory), so a reader sees the old list or the new one, never half of
  either, and it survives a power loss. It holds image ids and names and the
  endpoint without its user-info part: never a token or a password.
* Writing it may fail (a full or read-only disk): the mount goes on, with one
  warning, because refusing ``cp`` would be worse than a leftover.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from glancefs.procfs import start_ticks

LOG = logging.getLogger("glancefs.fs.write.journal")

FORMAT = 1
SUFFIX = ".json"
LOCK_SUFFIX = ".lock"
# A dead mount's journal for an endpoint no mount has come back to since: its
# images are reported and the journal dropped, so the directory cannot grow
# forever on a machine that mounted many short-lived servers (tests).
ABANDONED_AFTER = 30 * 24 * 3600.0
TMP_MAX_AGE = 3600.0


class JournalError(Exception):
    """The journal directory cannot be used safely."""


def default_dir(uid: int | None = None) -> str:
    """One directory per user: /var/tmp survives a reboot (unlike /tmp), and a
    directory of another user's making is never written into."""
    return f"/var/tmp/glancefs-{os.getuid() if uid is None else uid}/journal"


def endpoint_key(url: str) -> str:
    """The endpoint as journals compare it: scheme, host, port and path, without
    user-info (which could hold a password), query or trailing slash."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"


# -- who wrote a journal ---------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    boot_id: str    # /proc/sys/kernel/random/boot_id: which boot the mount ran in
    pid: int
    start: int      # the process's start, in clock ticks after boot (/proc/PID/stat)

    @property
    def stem(self) -> str:
        return f"{self.boot_id}-{self.pid}-{self.start}"

    @classmethod
    def parse(cls, stem: str) -> Owner | None:
        """The owner of a journal's stem (``BOOT-PID-START``, or
        ``BOOT-PID-START.TAG`` for one cloud of a mount of several)."""
        stem = stem.split(".", 1)[0]
        boot, _, rest = stem.rpartition("-")
        boot, _, pid = boot.rpartition("-")
        if not boot or not pid.isdigit() or not rest.isdigit():
            return None
        return cls(boot, int(pid), int(rest))


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip().replace("-", "")
    except OSError:
        return "noboot"


def current_owner() -> Owner:
    pid = os.getpid()
    return Owner(boot_id(), pid, start_ticks(pid) or 0)


def owner_gone(owner: Owner, boot: str, start_of: Callable[[int], int | None]) -> bool:
    """Is the process that wrote a journal gone? Every process of another boot
    is; in this boot, a pid that now runs a process started at another time
    was reused."""
    if owner.boot_id != boot:
        return True
    return start_of(owner.pid) != owner.start


@dataclass(frozen=True)
class Leftover:
    """An image a dead mount created and did not finish."""
    image_id: str
    name: str | None
    owner: Owner


# -- the journal of this mount ---------------------------------------------------------


def _check_dir(directory: str) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise JournalError(f"{directory} is not a directory")
    if info.st_uid != os.getuid():
        raise JournalError(f"{directory} belongs to uid {info.st_uid}, not to this user")
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700)   # image names are nobody else's business


class Journal:
    """This mount's journal; thread-safe (uploads run in threads)."""

    def __init__(self, directory: str, endpoint: str, owner: Owner | None = None,
                 tag: str = "") -> None:
        """``tag``: which cloud of a mount of several (one journal each, since
        each holds its own lock)."""
        self.directory = os.path.abspath(directory)
        self.endpoint = endpoint_key(endpoint)
        self.owner = owner or current_owner()
        safe_tag = "".join(c if c.isalnum() or c in "-_" else "_" for c in tag)
        self.stem = self.owner.stem + (f".{safe_tag}" if safe_tag else "")
        self.path = os.path.join(self.directory, self.stem + SUFFIX)
        self._lock_path = os.path.join(self.directory, self.stem + LOCK_SUFFIX)
        self._lock_fd: int | None = None
        self._images: dict[str, dict[str, Any]] = {}
        self._mutex = threading.Lock()
        self._broken: str | None = None

    def open(self) -> None:
        """Take this mount's place (raises OSError or JournalError)."""
        _check_dir(self.directory)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        with self._mutex:
            self._save()

    @property
    def images(self) -> set[str]:
        with self._mutex:
            return set(self._images)

    def add(self, image_id: str, name: str | None, origin: str | None = None) -> None:
        with self._mutex:
            entry: dict[str, Any] = {"name": name, "since": round(time.time(), 3)}
            if origin:
                entry["from"] = origin
            self._images[image_id] = entry
            self._save()

    def remove(self, image_id: str) -> None:
        with self._mutex:
            if self._images.pop(image_id, None) is not None:
                self._save()

    def close(self) -> list[str]:
        """The mount ends. Without entries the journal goes; with entries (the
        server was away at unmount) it stays for the next mount, and the ids
        are returned."""
        with self._mutex:
            left = sorted(self._images)
            if self._lock_fd is None:
                return left
            if not left:
                for path in (self.path, self._lock_path):
                    with contextlib.suppress(OSError):
                        os.unlink(path)
            os.close(self._lock_fd)   # the lock goes with it: the journal is free to take
            self._lock_fd = None
            return left

    def _save(self) -> bool:
        """Write the journal whole (temp file + rename); called with the mutex held."""
        if self._lock_fd is None:
            return False
        data = {"format": FORMAT, "endpoint": self.endpoint, "pid": self.owner.pid,
                "boot_id": self.owner.boot_id, "start": self.owner.start,
                "images": self._images}
        try:
            _write_atomically(self.directory, self.path, json.dumps(data, sort_keys=True))
        except OSError as error:
            if self._broken is None:
                LOG.warning("the write journal %s cannot be written (%s): if this mount "
                            "dies, images it is writing stay behind half-made", self.path,
                            error)
            self._broken = str(error)
            return False
        if self._broken is not None:
            LOG.info("the write journal %s is written again", self.path)
            self._broken = None
        return True

    # -- taking over the journals of dead mounts -----------------------------------------

    def take_over(self, now: float | None = None) -> list[Leftover]:
        """The images recorded by dead mounts of this endpoint. They are written
        into this journal before the dead one is removed, so dying now loses
        none of them."""
        now = time.time() if now is None else now
        boot = boot_id()
        found: list[Leftover] = []
        for stem in self._stems():
            owner = Owner.parse(stem)
            if owner is None or stem == self.stem:
                continue
            with self._dead_journal(stem, owner, boot) as data:
                if data is None:
                    continue
                found.extend(self._adopt(stem, owner, data, now))
        return found

    def _stems(self) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        for name in names:
            if name.startswith(".tmp-"):
                # A rewrite cut short by a crash; a live one is milliseconds old.
                path = os.path.join(self.directory, name)
                with contextlib.suppress(OSError):
                    if time.time() - os.lstat(path).st_mtime > TMP_MAX_AGE:
                        os.unlink(path)
        return sorted({n[:-len(s)] for n in names for s in (SUFFIX, LOCK_SUFFIX)
                       if n.endswith(s) and not n.startswith(".")})

    @contextlib.contextmanager
    def _dead_journal(self, stem: str, owner: Owner, boot: str
                      ) -> Iterator[dict[str, Any] | None]:
        """The content of a dead mount's journal ({} when it has none), None
        when its owner lives; the lock is held meanwhile, so two mounts
        starting together never both take it over."""
        lock_path = os.path.join(self.directory, stem + LOCK_SUFFIX)
        path = os.path.join(self.directory, stem + SUFFIX)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)
        except OSError as error:
            LOG.warning("cannot check the write journal %s: %s", lock_path, error)
            yield None
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None        # its mount is alive (or another one is taking it over)
                return
            if not owner_gone(owner, boot, start_ticks):
                # Same pid and start time: alive, whatever happened to its lock.
                yield None
                return
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
                if not isinstance(data, dict) or not isinstance(data.get("images"), dict):
                    raise ValueError("not a glancefs journal")
                data["mtime"] = os.stat(path).st_mtime
            except FileNotFoundError:
                data = {}         # a lock file alone: nothing was recorded
            except (OSError, ValueError) as error:
                LOG.warning("the write journal %s cannot be read (%s): left in place", path,
                            error)
                yield None
                return
            yield data
        finally:
            os.close(fd)

    def _adopt(self, stem: str, owner: Owner, data: dict[str, Any], now: float
               ) -> list[Leftover]:
        path = os.path.join(self.directory, stem + SUFFIX)
        images = data.get("images") or {}
        if images and data.get("endpoint") != self.endpoint:
            if now - float(data.get("mtime", now)) < ABANDONED_AFTER:
                return []         # the next mount of that endpoint cleans it up
            LOG.warning("dropping the write journal %s of %s, unused for %d days: "
                        "images there that are not active must be deleted by hand: %s",
                        path, data.get("endpoint"), ABANDONED_AFTER // 86400,
                        ", ".join(sorted(images)))
            images = {}
        found = []
        with self._mutex:
            for image_id, entry in images.items():
                name = entry.get("name") if isinstance(entry, dict) else None
                self._images[image_id] = {"name": name, "since": round(now, 3),
                                          "from": stem}
                found.append(Leftover(str(image_id), name, owner))
            if images and not self._save():
                # Ours cannot hold them: theirs stays, for a later mount to try again.
                return found
        for doomed in (path, os.path.join(self.directory, stem + LOCK_SUFFIX)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(doomed)
        return found


def _write_atomically(directory: str, path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself must survive a power loss too.
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

"""Mount, serve, unmount: the life of one glancefs mount.

Order matters for the promise the command line makes ("the command returns
0 only once the mount works"): the first listing is fetched (which proves
credentials and server) before the kernel mount, and ``ready`` is called
only after the kernel mount succeeded. SIGTERM/SIGINT and an external
``umount``/``fusermount3 -u`` all end in the same clean shutdown.
"""
from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable

import pyfuse3
import trio

from glancefs.api.service import ImageService
from glancefs.fs.filesystem import GlanceFS
from glancefs.fs.operations import Operations
from glancefs.fs.options import MountOptions

LOG = logging.getLogger("glancefs.fs")
SHUTDOWN_GRACE = 2.0   # seconds requests in progress get after SIGTERM


class MountError(Exception):
    """The mount could not be made; the message is one line for the user."""

    summary = ""   # the message is the whole line (api.exceptions.describe)


def fuse_options(options: MountOptions, source: str) -> set[str]:
    # No max_read: it clashes with libfuse's own setting (shared/notes/cp-on-fuse.md).
    opts = {"default_permissions", "subtype=glancefs", f"fsname={_safe(source)}", "noatime"}
    if options.ro:
        opts.add("ro")
    if options.allow_other:
        opts.add("allow_other")
    opts.update(options.kernel_flags)
    return opts


def _safe(text: str) -> str:
    # fsname shows in /proc/mounts; commas would split the option string.
    return text.replace(",", "_").replace(" ", "_") or "glancefs"


def check_mountpoint(path: str) -> None:
    if not os.path.exists(path):
        raise MountError(f"mount point {path} does not exist")
    if not os.path.isdir(path):
        raise MountError(f"mount point {path} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK) and os.getuid() != 0:
        raise MountError(f"mount point {path} is not writable by you")


def prepare(service: ImageService, options: MountOptions) -> GlanceFS:
    """Build the filesystem and load the first listing (raises the API's errors)."""
    fs = GlanceFS(service, options)
    # Fail fast: an unreachable server should not take the whole retry
    # schedule to be reported to the user waiting for mount.glancefs.
    with service.within(options.metadata_timeout, retries=0):
        fs.catalog.load(service.list_images())
    # Before the mount is ready, so a crashed mount's leftovers go before
    # anyone lists them; unanswered deletions are retried in the background.
    fs.start_journal()
    return fs


def serve(fs: GlanceFS, mountpoint: str, source: str,
          ready: Callable[[], None] | None = None) -> None:
    """Mount at ``mountpoint`` and serve until unmounted or signalled."""
    check_mountpoint(mountpoint)
    ops = Operations(fs, after_init=_after_init(mountpoint, fs.options.readahead))
    try:
        pyfuse3.init(ops, mountpoint, fuse_options(fs.options, source))
    except RuntimeError as error:
        raise MountError(f"cannot mount on {mountpoint}: {error} "
                         "(is /dev/fuse there, and the mount point not already in use?)"
                         ) from None
    try:
        if ready is not None:
            ready()
        LOG.info("mounted %s on %s (%d images)", source, mountpoint, len(fs.catalog.listed))
        trio.run(_main, fs, ops, mountpoint)
    finally:
        # A no-op when the kernel side is already gone (umount, fusermount3 -u).
        pyfuse3.close(unmount=True)
        fs.close()   # uploads left unfinished are given up, their images deleted
        LOG.info("unmounted %s", mountpoint)


def set_readahead(mountpoint: str, size: int) -> None:
    """Let the kernel read ahead ``size`` bytes (its default is 128 KiB).

    Each FUSE read costs a round trip through this process; with 1 MiB reads
    a sequential reader needs an eighth of them. The knob is the mount's
    backing device (``/sys/class/bdi/MAJ:MIN/read_ahead_kb``, root only); it is
    found in /proc/self/mountinfo because touching the mount point itself
    would wait for this very process, which is not serving yet.
    """
    if size <= 0:
        return
    device = mount_device(mountpoint)
    if device is None:
        return
    try:
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w") as knob:
            knob.write(str(max(4, size // 1024)))
    except OSError as error:
        LOG.debug("cannot set read-ahead of %s (%s): %s", mountpoint, device, error)


async def _main(fs: GlanceFS, ops: Operations, mountpoint: str | None = None) -> None:
    """The mount's one nursery: handed to the objects as they start (s3ql's way)."""
    async with trio.open_nursery() as nursery:
        ops.start(nursery)
        fs.start(nursery, on_change=ops.invalidate)
        with trio.CancelScope() as fuse_scope:
            nursery.start_soon(_signals, fuse_scope)
            if mountpoint is not None:
                nursery.start_soon(_watch_unmount, mountpoint, fuse_scope)
            await pyfuse3.main()
        # The kernel side is gone (umount, fusermount3 -u, or a signal).
        nursery.cancel_scope.cancel()


def _after_init(mountpoint: str, size: int) -> Callable[[], Awaitable[None]]:
    """Set the read-ahead once the kernel has the reply to FUSE INIT: the
    kernel lowers the mount's read-ahead to the ``max_readahead`` of that
    reply (its own offer, 128 KiB), so a value written before is lost."""
    async def apply() -> None:
        set_readahead(mountpoint, size)
    return apply


UNMOUNT_POLL = 0.25   # seconds between looks for an umount from outside


def mount_device(mountpoint: str) -> str | None:
    """The ``major:minor`` of the glancefs mount on ``mountpoint`` (the last
    one mounted there), from /proc/self/mountinfo, or None. Read from that
    file: touching the mount point itself would ask this very process."""
    target = os.path.abspath(mountpoint)
    device = None
    try:
        with open("/proc/self/mountinfo") as info:
            for line in info:
                fields = line.split()
                if len(fields) > 4 and fields[4] == target:
                    tail = line.split(" - ", 1)[-1].split()
                    if tail and tail[0].startswith("fuse"):
                        device = fields[2]
    except OSError:
        return None
    return device


def _mounted(device: str) -> bool:
    try:
        with open("/proc/self/mountinfo") as info:
            return any(line.split()[2] == device for line in info if line.strip())
    except OSError:
        return True


async def _watch_unmount(mountpoint: str, fuse_scope: trio.CancelScope) -> None:
    """End serving as soon as the mount is gone (``umount``, ``fusermount3 -u``).

    pyfuse3's main loop returns only once every request in progress has
    finished, and those may be waiting for a server that stalls; nobody can
    receive their answers any more, so they are cancelled at once instead.
    """
    device = mount_device(mountpoint)
    if device is None:
        return
    while _mounted(device):
        await trio.sleep(UNMOUNT_POLL)
    LOG.info("%s was unmounted: ending the requests still in progress", mountpoint)
    fuse_scope.cancel()


async def _signals(fuse_scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                continue   # a daemon has no terminal to lose
            LOG.info("signal %s: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            break
    # pyfuse3.main() waits for requests in progress; give them a moment, then
    # stop waiting (close() unmounts and the kernel fails what is left).
    await trio.sleep(SHUTDOWN_GRACE)
    fuse_scope.cancel()

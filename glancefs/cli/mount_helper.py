"""``mount.glancefs [SOURCE] MOUNTPOINT [-o opts] [-f] [-d]``: the mount(8) helper form.

How mount(8) reaches it (util-linux 2.38, fuse3 3.14):

* ``mount -t fuse.glancefs SOURCE /mnt -o opts`` and the fstab line
  ``SOURCE /mnt fuse.glancefs opts 0 0`` make mount(8) run
  ``/sbin/mount.fuse.glancefs SOURCE /mnt -o opts`` when that helper exists
  (link it to this program: ``ln -s $(command -v mount.glancefs)
  /sbin/mount.fuse.glancefs``), else ``/sbin/mount.fuse3``, which runs the
  program named by the subtype: ``glancefs SOURCE /mnt -o opts``.
* mount(8) may add ``-n`` (no mtab), ``-s`` (sloppy), ``-v`` (verbose) and
  ``-t TYPE``; they are accepted and ignored. Generic options such as
  ``_netdev``, ``nofail``, ``noauto``, ``user``, ``defaults`` and ``x-*`` are
  ignored; ``nosuid``, ``nodev``, ``noexec``, ``noatime`` go to the kernel.

SOURCE is an Images API URL (``http://glance:9292``), a clouds.yaml cloud
name, or ``glance`` to take everything from the ``OS_*`` variables.
Secrets are never accepted in ``-o``: they would be visible in ``ps`` and
fstab.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from glancefs.cli.mount import add_option_argument, add_path_arguments, run_mount


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mount.glancefs",
        usage="mount.glancefs [SOURCE] MOUNTPOINT [-o OPT[,OPT...]] [-f] [-d]",
        description="Mount OpenStack Images (Glance) as a directory.")
    add_path_arguments(parser)
    add_option_argument(parser)
    parser.add_argument("-f", "--foreground", action="store_true",
                        help="stay in the foreground")
    parser.add_argument("-d", "--debug", action="store_true", help="debug log; implies -f")
    parser.add_argument("-V", "--version", action="store_true",
                        help="print the versions of glancefs, Python, pyfuse3 and libfuse")
    # What mount(8) adds for its helpers; meaningless here.
    parser.add_argument("-n", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("-s", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("-v", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("-t", dest="fstype", help=argparse.SUPPRESS)
    parser.add_argument("-N", dest="namespace", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    if args.version:
        from glancefs.cli.about import version_text
        sys.stdout.write(version_text("mount.glancefs"))
        return 0
    return run_mount(args)


if __name__ == "__main__":
    sys.exit(main())

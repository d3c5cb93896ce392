"""The write path: files written through the mount become images.

The units, each in its module:

* ``coordinator``: :class:`WritePath`, the files being written
  (:class:`WrittenFile`: a draft with no data yet, a file being written, a
  file whose image holds the last version) and what FUSE asks of them
  (create, open, write, truncate, flush, release, rename, unlink, setxattr
  before the image exists).
* ``upload``: one upload of one version (:class:`Upload`; its life is
  :class:`UploadState`): a bounded queue to a thread that streams it.
* ``spool``: the local copy that lets a writer go back.
* ``janitor``: deletes what failed uploads left half-made, now or later.
* ``journal``: the images being written, on disk, for the next mount.

The thread/trio boundary: everything here blocks and is thread-safe. The
filesystem (trio) calls it only through ``trio.to_thread`` (GlanceFS.thread);
the upload threads and the janitor's thread are this package's own, and hand
nothing back to trio: the filesystem learns outcomes from the calls it made.
A :class:`WrittenFile` is changed under its ``lock``.
"""
from glancefs.fs.write.coordinator import (
                                           CLOSE_WAIT,
                                           REOPEN_WINDOW,
                                           WritePath,
                                           WrittenFile,
                                           parse_field,
)
from glancefs.fs.write.upload import PendingMeta, Upload, UploadState, WriteConfig

__all__ = ["CLOSE_WAIT", "REOPEN_WINDOW", "PendingMeta", "Upload", "UploadState", "WriteConfig",
           "WritePath", "WrittenFile", "parse_field"]

"""The one table from errors to errno, and the log line that says why.

Every refusal the filesystem gives is an errno a shell user understands
("Permission denied", "Resource temporarily unavailable", ...) plus exactly one
log line naming the operation, the image, the HTTP status and the server's
message. The message comes from glancefs.api, which already stripped it of
HTML/JSON; no token or password ever reaches an exception text there, and
nothing here adds one.

Domain code raises :class:`FsError` for refusals of its own (an image that is
not active, a write on a read-only mount); everything else it lets through,
and :func:`errno_for` decides. Only glancefs.fs.operations turns the result
into ``pyfuse3.FUSEError``.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import time
from typing import Any

from glancefs.api import exceptions as exc

LOG = logging.getLogger("glancefs.fs")
_REPORTED = "_glancefs_reported"     # set on an error once its line is logged
REPEAT_WINDOW = 10.0                 # seconds in which the same line is not said again
_recent_lines: dict[str, float] = {}  # line -> when it was last logged as a refusal


class FsError(Exception):
    """A refusal decided by the filesystem itself: an errno and why."""

    def __init__(self, errno_: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno_
        self.message = message


# What open() says for an image that is not active (docs/design.rst, Attributes).
STATUS_ERRNO: dict[str, tuple[int, str]] = {
    "queued": (errno.EAGAIN, "has no data yet"),
    "saving": (errno.EAGAIN, "is being uploaded"),
    "uploading": (errno.EAGAIN, "is being uploaded"),
    "importing": (errno.EAGAIN, "is being imported"),
    "deactivated": (errno.EACCES, "is deactivated"),
    "killed": (errno.EIO, "was killed by an upload error"),
    "deleted": (errno.ENOENT, "was deleted"),
    "pending_delete": (errno.ENOENT, "is being deleted"),
}

# (exception class, errno); the first match in order wins, so subclasses come
# before their bases. Operation-specific exceptions are in _BY_OPERATION.
TABLE: tuple[tuple[type[BaseException], int], ...] = (
    (exc.HashMismatch, errno.EIO),              # data does not match os_hash_value
    (exc.InvalidResponse, errno.EIO),           # short body, bad Content-Range, bad JSON
    (exc.HTTPBadRequest, errno.EINVAL),         # 400
    (exc.HTTPUnauthorized, errno.EACCES),       # 401 after renewing the token
    (exc.HTTPForbidden, errno.EACCES),          # 403 policy (EPERM per operation below)
    (exc.HTTPNotFound, errno.ENOENT),           # 404
    (exc.HTTPMethodNotAllowed, errno.EOPNOTSUPP),  # 405: the server cannot do that
    (exc.HTTPConflict, errno.EBUSY),            # 409 wrong status for the operation
    (exc.HTTPOverLimit, errno.ENOSPC),          # 413 quota (EFBIG for a size cap below)
    (exc.HTTPUnsupportedMediaType, errno.EMEDIUMTYPE),  # 415 disk_format vs data
    (exc.HTTPRequestedRangeNotSatisfiable, errno.EINVAL),  # 416
    (exc.HTTPTooManyRequests, errno.EAGAIN),    # 429 still after the client's retries
    (exc.HTTPServiceUnavailable, errno.EAGAIN),  # 503 still after them (EIO for a read)
    (exc.HTTPGatewayTimeout, errno.ETIMEDOUT),  # 504
    (exc.HTTPServerError, errno.EIO),           # any other 5xx
    (exc.HTTPMultipleChoices, errno.EPROTONOSUPPORT),  # 300: API version not served
    (exc.HTTPException, errno.EIO),
    (exc.NoUniqueMatch, errno.EINVAL),
    (exc.ImportFailed, errno.EIO),              # the import task failed (its message logged)
    (exc.UnsupportedVersion, errno.EPROTONOSUPPORT),
    (exc.DeadlineExceeded, errno.ETIMEDOUT),    # no answer within the deadline
    (exc.TransferBroken, errno.EIO),            # reached, then the transfer broke
    (exc.CommunicationError, errno.EHOSTUNREACH),  # see errno_for: EIO mid-transfer
    (exc.ClientException, errno.EIO),
    (TimeoutError, errno.ETIMEDOUT),
)

# Where the operation changes the meaning of a status.
_BY_OPERATION: dict[tuple[str, type[BaseException]], int] = {
    # 403 on removing or changing a protected image / a read-only field.
    ("unlink", exc.HTTPForbidden): errno.EPERM,
    ("rename", exc.HTTPForbidden): errno.EPERM,
    ("setxattr", exc.HTTPForbidden): errno.EPERM,
    ("removexattr", exc.HTTPForbidden): errno.EPERM,
    # 409 while reading: the image changed status under us; try again later.
    ("open", exc.HTTPConflict): errno.EAGAIN,
    ("read", exc.HTTPConflict): errno.EAGAIN,
    # 503/429 that outlast the client's retries on a read: EIO, not EAGAIN. On a
    # regular file EAGAIN means "non-blocking, no data yet": Python's f.read()
    # returns None for it, and a reader may spin. The log line has the status.
    ("read", exc.HTTPServiceUnavailable): errno.EIO,
    ("read", exc.HTTPTooManyRequests): errno.EIO,
    # A read the server did not serve in time, or could not be asked for: an
    # I/O error of the read (what cat and cp report), whatever the network did.
    ("read", exc.CommunicationError): errno.EIO,
    # 409 when removing a property that is not there.
    ("removexattr", exc.HTTPConflict): errno.ENODATA,
    # 413 on a property change: over the server's property quota (docs/design.rst).
    ("setxattr", exc.HTTPOverLimit): errno.ENOSPC,
    # 404 of a property or xattr, not of the file.
    ("getxattr", exc.HTTPNotFound): errno.ENODATA,
    # An upload whose connection broke (the server died mid-copy): an I/O error
    # of the copy, not "no route to host".
    ("write", exc.CommunicationError): errno.EIO,
    ("flush", exc.CommunicationError): errno.EIO,
}


# Answers to probes that shells, ls, getfattr and cp -p make all the time:
# logged at DEBUG only (a missing name, a missing attribute, an attribute
# outside user.*: cp -p and rsync -A try to copy ACLs).
PROBES: frozenset[tuple[str, int]] = frozenset({
    ("lookup", errno.ENOENT), ("lookup", errno.ENODATA),
    ("getxattr", errno.ENOENT), ("getxattr", errno.ENODATA), ("getxattr", errno.EOPNOTSUPP),
    ("setxattr", errno.EOPNOTSUPP), ("removexattr", errno.EOPNOTSUPP),
})


def errno_for(error: BaseException, operation: str = "") -> int:
    """The errno for ``error`` raised while doing ``operation``."""
    if isinstance(error, FsError):
        return error.errno
    for (op, cls), number in _BY_OPERATION.items():
        if op == operation and isinstance(error, cls):
            return number
    if isinstance(error, exc.HTTPOverLimit) and not error.over_quota:
        # Glance's image_size_cap answers 413 without "quota": the file is too big,
        # the disk is not full.
        return errno.EFBIG
    if isinstance(error, OSError) and error.errno:
        return error.errno
    for cls, number in TABLE:
        if isinstance(error, cls):
            return number
    return errno.EIO


def describe(error: BaseException) -> str:
    """One line: the file system's own refusal, or ``exceptions.describe``."""
    if isinstance(error, FsError):
        return error.message
    return exc.describe(error)


def refuse(operation: str, error: BaseException, image: Any = None,
           level: int | None = None) -> int:
    """Log why ``operation`` on ``image`` failed (one line) and return the errno.

    ``image`` is an ImageRecord, an id, a file name or None.
    """
    number = errno_for(error, operation)
    if level is None:
        if (operation, number) in PROBES:
            level = logging.DEBUG
        elif number in (errno.ENOENT, errno.ENODATA, errno.EAGAIN):
            level = logging.INFO   # expected refusals (missing names, busy images)
        else:
            level = logging.WARNING
    if not LOG.isEnabledFor(level):
        # The kernel's probes (security.capability before every write) come by the
        # thousand: no line is built for a level nobody logs.
        return number
    what = _image_text(image)
    line = f"{operation}{what}: {describe(error)} -> {errno.errorcode.get(number, str(number))}"
    if getattr(error, _REPORTED, False) or _said_lately(line):
        # The same failure given again to a later call (the flush after the write
        # that failed, every read after a broken stream), or failing the same way
        # again at once (the kernel retries a failed read-ahead as a plain read):
        # said once already.
        level = logging.DEBUG
    else:
        said_already(error)
    LOG.log(level, "%s", line)
    return number


def said_already(error: BaseException) -> None:
    """Count ``error`` as reported: a read that fails with it later logs at DEBUG.
    For a failure whose reader was told why before it came (the read's deadline
    passed first: "no data from the server")."""
    with contextlib.suppress(AttributeError, TypeError):
        setattr(error, _REPORTED, True)


def _said_lately(line: str) -> bool:
    now = time.monotonic()
    if len(_recent_lines) > 256:
        for old in [k for k, when in _recent_lines.items() if now - when > REPEAT_WINDOW]:
            del _recent_lines[old]
    said = now - _recent_lines.get(line, -REPEAT_WINDOW - 1) <= REPEAT_WINDOW
    _recent_lines[line] = now
    return said


def _image_text(image: Any) -> str:
    if image is None:
        return ""
    image_id = getattr(image, "id", None)
    if image_id is not None:
        name = getattr(image, "name", None)
        if not image_id:    # a file whose image does not exist yet
            return f" {name!r}" if name else ""
        return f" {name!r} ({image_id})" if name else f" ({image_id})"
    if isinstance(image, bytes):
        return " " + repr(image.decode("utf-8", "replace"))
    return f" {image}"

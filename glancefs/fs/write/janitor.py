"""Deleting what failed uploads left half-made, now or once the server is back.

Why it is its own unit: a failed upload's image must go even when the server
cannot be reached at that moment (it died mid-upload); the Janitor keeps the
ids (in memory, and with a :class:`~glancefs.fs.write.journal.Journal` on
disk for the next mount) and retries in a background thread.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from glancefs.api import exceptions as exc
from glancefs.api.service import ImageService
from glancefs.fs.errors import describe
from glancefs.fs.write.journal import Journal

LOG = logging.getLogger("glancefs.fs.write")

FIRST_TRY = 2.0   # seconds the first deletion of a half-made image may take


def _retryable(error: BaseException) -> bool:
    return isinstance(error, (exc.CommunicationError, exc.HTTPServerError,
                              exc.HTTPTooManyRequests, exc.HTTPConflict, exc.HTTPUnauthorized))


@dataclass
class _Job:
    why: str
    unless_active: bool = False   # check first: an image that is active stays


class Janitor:
    """Deletes images this mount (or a dead mount before it) left half-made.

    A failed upload's image is deleted at once; when the server cannot be
    reached (it died mid-upload), the id is kept and deletion retried in a
    background thread every ``interval`` seconds until the server answers,
    so no queued or saving leftover survives the server's return.

    With a :class:`~glancefs.fs.write.journal.Journal`, the images of uploads in
    progress (:meth:`track`) and those waiting for deletion are also on disk,
    so they outlive this process: the next mount of the endpoint deletes them.
    """

    def __init__(self, service: ImageService, interval: float = 1.0,
                 journal: Journal | None = None) -> None:
        self.service = service
        self.interval = interval
        self.journal = journal
        self._pending: dict[str, _Job] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def track(self, image_id: str, name: str | None) -> None:
        """An image is being created for an upload: on disk before it exists."""
        if self.journal is not None:
            self.journal.add(image_id, name)

    def settled(self, image_id: str) -> None:
        """Nothing to clean up: the image is active and verified, deleted, gone, or
        was never made."""
        if self.journal is not None:
            self.journal.remove(image_id)

    def discard(self, image_id: str, why: str, unless_active: bool = False) -> bool:
        """Delete now if possible (True), else keep trying in the background.
        ``unless_active``: an image that is active by now is left alone (the
        leftovers of a dead mount, whose state this mount never saw)."""
        job = _Job(why, unless_active)
        # The first try is short: the caller (a write that just failed, cp
        # waiting for its error) must not wait a whole deadline for a server
        # that stalls; the thread below keeps trying.
        with self.service.within(FIRST_TRY):
            done = self._attempt(image_id, job, first=True)
        if done:
            return True
        with self._cond:
            self._pending[image_id] = job
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="glancefs-janitor",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return False

    def _attempt(self, image_id: str, job: _Job, first: bool) -> bool:
        """One try; True when done with the image (deleted, gone, left alone,
        or refused for good), False to try again."""
        why = job.why
        try:
            if job.unless_active:
                status = self.service.get(image_id).status
                if status == "active":
                    LOG.info("image %s (%s) is active: left alone", image_id, why)
                    self.settled(image_id)
                    return True
                why = f"{why}; it was {status}"
            self.service.delete(image_id)
        except exc.HTTPNotFound:
            if job.unless_active:
                LOG.info("image %s (%s) no longer exists", image_id, why)
            self.settled(image_id)
            return True
        except exc.ClientException as error:
            if _retryable(error):
                if first:
                    LOG.warning("image %s (%s) not deleted yet, will retry: %s", image_id,
                                why, describe(error))
                return False
            LOG.error("image %s (%s) could not be deleted: %s", image_id, why, describe(error))
            self.settled(image_id)
            return True    # a refusal that retrying cannot change
        if first:
            LOG.info("deleted image %s (%s)", image_id, why)
        else:
            LOG.info("deleted image %s (%s), left behind by a failed upload", image_id, why)
        self.settled(image_id)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                self._cond.wait(self.interval)
                todo = dict(self._pending)
            for image_id, job in todo.items():
                if not self._attempt(image_id, job, first=False):
                    continue
                with self._cond:
                    self._pending.pop(image_id, None)
                    self._cond.notify_all()

    @property
    def pending(self) -> set[str]:
        with self._cond:
            return set(self._pending)

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, self.interval))
        return True

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self.journal is not None:
            left = self.journal.close()
            if left:
                LOG.warning("images left half-made, kept in the write journal %s for the "
                            "next mount of this endpoint to delete: %s", self.journal.path,
                            ", ".join(left))
        elif self._pending:
            LOG.warning("images left half-made (delete them by hand): %s",
                        ", ".join(sorted(self._pending)))

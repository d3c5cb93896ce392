"""Progress bars for ``--progress`` uploads and downloads.

Drawn on stderr, and only when stderr is a terminal: stdout may be carrying the
image itself (``image-download > file``) and a log file must not fill up with
carriage returns. The rate is measured over the last few seconds rather than
since the start, so a stall or a speed-up shows at once.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, TextIO

from glancefs.cli.output import human_size

BAR_WIDTH = 28
REDRAW_EVERY = 0.2   # seconds between redraws
RATE_WINDOW = 3.0    # seconds the rate is averaged over


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Counts bytes and redraws one status line on a terminal."""

    def __init__(self, stream: TextIO | None, total: int | None, label: str = "",
                 enabled: bool = True, clock: Any = time.monotonic) -> None:
        isatty = getattr(stream, "isatty", None)
        self.stream = stream
        self.enabled = bool(enabled and stream is not None and isatty and isatty())
        self.total = total if total and total > 0 else None
        self.label = label
        self.done = 0
        self._clock = clock
        self._start = clock()
        self._last_draw = 0.0
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._samples.append((self._start, 0))
        self._drawn = False

    def rate(self, now: float | None = None) -> float:
        """Bytes per second over the last RATE_WINDOW seconds."""
        now = self._clock() if now is None else now
        while len(self._samples) > 1 and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        t0, b0 = self._samples[0]
        elapsed = now - t0
        return (self.done - b0) / elapsed if elapsed > 0 else 0.0

    def line(self, now: float | None = None) -> str:
        now = self._clock() if now is None else now
        rate = self.rate(now)
        speed = f"{human_size(rate)}/s"
        label = f"{self.label} " if self.label else ""
        if self.total:
            frac = min(self.done / self.total, 1.0)
            filled = int(frac * BAR_WIDTH)
            head = ">" if filled < BAR_WIDTH else ""
            bar = "=" * filled + head + " " * (BAR_WIDTH - filled - 1)
            left = self.total - self.done
            eta = _clock(left / rate) if rate > 0 and left > 0 else "--:--"
            return (f"{label}[{bar[:BAR_WIDTH]}] {frac:4.0%} {human_size(self.done)} of "
                    f"{human_size(self.total)}  {speed}  ETA {eta}")
        return f"{label}{human_size(self.done)}  {speed}  {_clock(now - self._start)}"

    def update(self, nbytes: int) -> None:
        self.done += nbytes
        if not self.enabled:
            return
        now = self._clock()
        self._samples.append((now, self.done))
        if now - self._last_draw >= REDRAW_EVERY:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        assert self.stream is not None
        self.stream.write("\r\x1b[K" + self.line(now))
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self.enabled:
            self._draw(self._clock())
            # enabled only with a stream (a terminal): never None here
            self.stream.write("\n")  # type: ignore[union-attr]
            self.stream.flush()  # type: ignore[union-attr]

    def wrap_iter(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.update(len(chunk))
            yield chunk


class ProgressReader:
    """A file wrapper that reports what has been read (for uploads)."""

    def __init__(self, raw: BinaryIO, progress: Progress) -> None:
        self.raw = raw
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data:
            self.progress.update(len(data))
        return data

    def tell(self) -> int:
        return self.raw.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

"""What the ``glancefs`` command prints: bordered tables for people, JSON for scripts.

The table look is the ``glance`` command's (prettytable's default), written here
in a few lines so the CLI needs no extra dependency. Values are turned into one
display string each (lists joined with ", ", dicts as JSON, None as empty);
long values in a two-column "Property | Value" table wrap at a maximum width,
the way ``glance image-show --max-column-width`` does.
"""
from __future__ import annotations

import json
import textwrap
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

# Fields never worth showing a person (links the server adds for itself).
HIDDEN_FIELDS = frozenset({"self", "schema", "file"})


def display(value: Any) -> str:
    """One printable string for a field value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (list, tuple)):
        return ", ".join(display(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True, default=str)
    return str(value)


def width(text: str) -> int:
    """Columns ``text`` takes in a terminal (wide East Asian characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else
               0 if unicodedata.combining(c) else 1 for c in text)


def _pad(text: str, columns: int) -> str:
    return text + " " * (columns - width(text))


def _wrap(text: str, max_width: int | None) -> list[str]:
    lines: list[str] = []
    for line in text.splitlines() or [""]:
        if max_width and width(line) > max_width:
            lines.extend(textwrap.wrap(line, max_width, break_long_words=True,
                                       break_on_hyphens=False) or [""])
        else:
            lines.append(line)
    return lines


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]],
                 max_width: int | None = None) -> str:
    """A bordered table; multi-line cells stay inside their row."""
    cells = [[_wrap(display(v), max_width) for v in row] for row in rows]
    widths = [width(h) for h in headers]
    for row in cells:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], *(width(line) for line in lines))
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    head = " | ".join(_pad(h, w) for h, w in zip(headers, widths, strict=True))
    out = [rule, "| " + head + " |", rule]
    for row in cells:
        height = max((len(lines) for lines in row), default=1)
        for n in range(height):
            out.append("| " + " | ".join(
                _pad(lines[n] if n < len(lines) else "", w)
                for lines, w in zip(row, widths, strict=True)) + " |")
    out.append(rule)
    return "\n".join(out)


class Printer:
    """Writes records as a table (``-f table``) or JSON (``-f json``)."""

    def __init__(self, stream: TextIO, fmt: str = "table", max_width: int = 80) -> None:
        self.stream = stream
        self.fmt = fmt
        self.max_width = max_width

    def _json(self, doc: Any) -> None:
        json.dump(doc, self.stream, indent=2, sort_keys=True, default=str)
        self.stream.write("\n")

    def record(self, fields: Mapping[str, Any]) -> None:
        """One object: a Property/Value table, or a JSON object."""
        if self.fmt == "json":
            self._json({k: v for k, v in fields.items() if k not in HIDDEN_FIELDS})
            return
        rows = [(k, v) for k, v in sorted(fields.items(), key=lambda kv: kv[0])
                if k not in HIDDEN_FIELDS]
        self.stream.write(render_table(("Property", "Value"), rows, self.max_width) + "\n")

    def records(self, items: Iterable[Mapping[str, Any]], columns: Sequence[str],
                labels: Sequence[str] | None = None) -> None:
        """Several objects: one row each with ``columns``, or a JSON array of
        whole objects (scripts want every field, not just the table's)."""
        if self.fmt == "json":
            self._json([{k: v for k, v in item.items() if k not in HIDDEN_FIELDS}
                        for item in items])
            return
        headers = labels or [c.replace("_", " ").title().replace(" ", "_") for c in columns]
        rows = [[item.get(c) for c in columns] for item in items]
        self.stream.write(render_table(headers, rows) + "\n")

    def message(self, text: str) -> None:
        """A line for a person; scripts reading JSON get nothing extra."""
        if self.fmt != "json":
            self.stream.write(text + "\n")


def human_size(size: int | float | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)  # pragma: no cover

"""The mtime property's rules (glancefs.fs.modtime): pure functions, round trips."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from glancefs.fs import modtime


@given(st.integers(min_value=-(2 ** 40) * modtime.NS, max_value=2 ** 40 * modtime.NS))
def test_a_time_round_trips_to_the_nanosecond(ns: int) -> None:
    assert modtime.parse_ns(modtime.format_ns(ns)) == ns


def test_the_forms_other_tools_write_are_read() -> None:
    assert modtime.format_ns(1_700_000_000_123_456_789) == "1700000000.123456789"
    assert modtime.parse_ns("1700000000") == 1_700_000_000 * modtime.NS
    assert modtime.parse_ns("1700000000.5") == 1_700_000_000_500_000_000
    assert modtime.parse_ns("2023-11-14T22:13:20.5Z") == 1_700_000_000_500_000_000
    assert modtime.parse_ns("2023-11-14T22:13:20+00:00") == 1_700_000_000 * modtime.NS


def test_a_value_that_cannot_be_read_shows_updated_at() -> None:
    for junk in ("", "yesterday", "12:00", "1e9x", None):
        assert modtime.parse_ns(junk) is None
        assert modtime.shown_ns({"mtime": junk} if junk is not None else {}, 1.5) == \
            1_500_000_000
    assert modtime.shown_ns({"mtime": "7.000000001"}, 1.5) == 7_000_000_001

"""Properties of the name escape and the duplicate rule (no server needed)."""
from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from glancefs.fs import names
from glancefs.fs.names import NameEntry, assign_names, escape, is_valid_entry, unescape

# Any JSON string: every code point, lone surrogates included.
any_name = st.one_of(st.none(), st.text(alphabet=st.characters(min_codepoint=0), max_size=300),
                     st.sampled_from(["", ".", "..", "/", "%", "%25", "a/b", "\0", "x" * 300,
                                      "é" * 200, "%" * 100, ".by-id"]))
ids = st.uuids().map(str)


@given(any_name)
def test_escape_round_trip(name: str | None) -> None:
    shown = escape(name)
    assert unescape(shown) == (name or None)


@given(any_name, ids)
def test_base_name_always_valid(name: str | None, image_id: str) -> None:
    shown, reversible = names.base_name(name, image_id)
    assert is_valid_entry(shown)
    shown.decode("utf-8")  # never invalid UTF-8
    if reversible:
        assert unescape(shown) == (name or None)


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=50).filter(
    lambda s: "%" not in s and "/" not in s and "\0" not in s
    and s not in ("", ".", "..", names.RESERVED)))
def test_ordinary_names_unchanged(name: str) -> None:
    assert escape(name) == name.encode("utf-8")


def test_specials() -> None:
    assert escape(None) == escape("") == b"%"
    assert escape(".") == b"%2E" and escape("..") == b"%2E%2E"
    assert escape("a/b%c") == b"a%2Fb%25c"
    assert escape("...") == b"..."
    assert escape(".by-id") == b"%2Eby-id" and unescape(b"%2Eby-id") == ".by-id"
    assert unescape(b"50%") == "50%"          # a lone % typed by a user is literal
    assert unescape(b"%zz") == "%zz"


entries = st.lists(st.builds(NameEntry, ids, st.sampled_from(
    ["a", "a", "b", "", None, "a~", ".", "x" * 300]), st.sampled_from(
    ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", None])), max_size=12,
    unique_by=lambda e: e.id)


@settings(max_examples=200)
@given(entries)
def test_assign_unique_valid_complete(images: list[NameEntry]) -> None:
    table = assign_names(images)
    assert sorted(table.values()) == sorted(i.id for i in images)
    assert all(is_valid_entry(shown) for shown in table)


@settings(max_examples=200)
@given(entries, entries)
def test_names_stable_when_images_appear(first: list[NameEntry], extra: list[NameEntry]) -> None:
    """Adding images never renames an image that stays (its shown name is kept)."""
    before = assign_names(first)
    known = {i.id for i in first}
    after = assign_names(first + [e for e in extra if e.id not in known], before)
    by_id_before = {v: k for k, v in before.items()}
    by_id_after = {v: k for k, v in after.items()}
    for image in first:
        shown = by_id_before[image.id]
        # Bare names are sticky; suffixed names are derived from the id alone.
        assert by_id_after[image.id] == shown


def test_duplicates_oldest_keeps_bare_name() -> None:
    old = NameEntry(str(uuid.UUID(int=2)), "disk", "2024-01-01T00:00:00Z")
    new = NameEntry(str(uuid.UUID(int=1)), "disk", "2024-02-01T00:00:00Z")
    table = assign_names([new, old])
    assert table[b"disk"] == old.id
    assert table[b"disk~" + new.id[:8].encode()] == new.id
    # An even older image renamed to "disk" later does not take the name away.
    older = NameEntry(str(uuid.UUID(int=3)), "disk", "2023-01-01T00:00:00Z")
    again = assign_names([new, old, older], table)
    assert again[b"disk"] == old.id


def test_literal_name_beats_suffix() -> None:
    a = NameEntry("abcdef12-0000-0000-0000-000000000001", "x", "2024-01-01")
    b = NameEntry("abcdef12-0000-0000-0000-000000000002", "x", "2024-01-02")
    c = NameEntry("ffffffff-0000-0000-0000-000000000003", "x~abcdef12", "2024-01-03")
    table = assign_names([a, b, c])
    assert table[b"x"] == a.id
    assert table[b"x~abcdef12"] == c.id
    assert table[b"x~" + b.id.encode()] == b.id

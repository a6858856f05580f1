"""The pure query layer: cursors, pages under change, projection and filter semantics."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.simulator import query as q

KNOWN = frozenset({"a", "a.b", "a.c", "n", "items", "items.x"})


def test_cursor_round_trips_and_a_forged_one_is_a_400() -> None:
    cursor = q.Cursor(page=4, after=("svm", "lif1", 12), offset=0)
    assert q.Cursor.decode(cursor.encode()) == cursor
    with pytest.raises(q.QueryError) as error:
        q.Cursor.decode("not-a-cursor!")
    assert error.value.code == "2"


@given(
    keys=st.sets(st.integers(0, 500), max_size=120).map(sorted),
    limit=st.integers(1, 40),
)
def test_walking_pages_returns_every_key_once(keys: list[int], limit: int) -> None:
    tuples = [(k,) for k in keys]
    seen: list[tuple[int, ...]] = []
    cursor: q.Cursor | None = q.Cursor()
    while cursor is not None:
        page = q.key_order_page(tuples, cursor, limit, None)
        assert len(page.keys) <= limit
        seen.extend(page.keys)
        cursor = page.next_cursor
    assert seen == tuples


@given(
    keys=st.sets(st.integers(0, 300), min_size=1, max_size=80).map(sorted),
    limit=st.integers(1, 15),
    changes=st.lists(st.tuples(st.booleans(), st.integers(0, 300)), max_size=40),
)
def test_changes_between_pages_never_repeat_or_lose_a_record_that_stays(
    keys: list[int], limit: int, changes: list[tuple[bool, int]]
) -> None:
    live = [(k,) for k in keys]
    stayed = set(live)
    seen: list[tuple[int, ...]] = []
    cursor: q.Cursor | None = q.Cursor()
    pending = list(changes)
    while cursor is not None:
        page = q.key_order_page(live, cursor, limit, None)
        seen.extend(page.keys)
        cursor = page.next_cursor
        if pending:  # a login or a logout between two pages
            add, value = pending.pop()
            if add and (value,) not in live:
                bisect.insort(live, (value,))
            elif not add and (value,) in live:
                live.remove((value,))
                stayed.discard((value,))
    assert len(seen) == len(set(seen))
    assert stayed <= set(seen)


def test_fields_tree_keeps_dotted_subfields_and_a_whole_parent_wins() -> None:
    selection = q.parse_fields("a.b,items.x", KNOWN, ["n"])
    record = {"n": 1, "a": {"b": 2, "c": 3, "_links": {}}, "items": [{"x": 1, "y": 2}], "z": 0}
    assert q.project(record, selection.tree, hal=False) == {
        "n": 1,
        "a": {"b": 2},
        "items": [{"x": 1}],
    }
    whole = q.parse_fields("a,a.b", KNOWN, [])
    assert q.project(record, whole.tree, hal=True) == {"a": {"b": 2, "c": 3, "_links": {}}}
    assert q.project(record, whole.tree, hal=False) == {"a": {"b": 2, "c": 3}}


@pytest.mark.parametrize(
    ("raw", "values", "expected"),
    [
        ("iqn.*", ["IQN.1994-05.x"], True),
        ("!iqn.*", ["iqn.1"], False),
        ("a|b", ["b"], True),
        ("null", [None], True),
        ("!null", [None], False),
        (">=2", [1, 3], True),
        ("<2", [5], False),
        ("<m", ["apple"], True),
    ],
)
def test_filter_alternatives_follow_ontap_operators(
    raw: str, values: list[object], expected: bool
) -> None:
    record = {"n": values[0]} if len(values) == 1 else {"items": [{"x": v} for v in values]}
    name = "n" if len(values) == 1 else "items.x"
    assert q.parse_filter(name, raw, KNOWN).matches(record) is expected

"""The pure decisions of a push (actors/sync/_merge.py), property-tested per strategy and per field policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.sync import (
    DEFAULT_POLICIES,
    ClientChange,
    EntityPolicy,
    FieldPolicy,
    Parent,
    Policies,
    State,
    decide,
    decode_cursor,
    encode_cursor,
    merge_fields,
    merge_value,
    validate_data,
)
from actors.sync._policy import Goal, JournalEntry

T0 = datetime(2026, 11, 24, 8, tzinfo=UTC)
SETTINGS = settings(max_examples=150, deadline=None)

words = st.text(alphabet="abcdefgh", min_size=0, max_size=4)
tags = st.lists(words, max_size=5, unique=True)
counts = st.integers(min_value=0, max_value=1000)
status = st.sampled_from(("active", "paused", "ended"))
stamps = st.none() | st.integers(min_value=-600, max_value=600).map(lambda s: T0 + timedelta(seconds=s))
versions = st.integers(min_value=2, max_value=50)


def policy(strategy: str, **kw: Any) -> EntityPolicy:
    return EntityPolicy(entity_type="thing", schema=Goal, strategy=strategy, **kw)  # type: ignore[arg-type]


def server(version: int, data: dict[str, Any], *, ts: datetime | None = None, deleted: bool = False) -> State:
    return State(version=version, data=data, deleted=deleted, client_ts=ts)


def stale(data: dict[str, Any] | None, *, base: int = 1, ts: datetime | None = None,
          kind: str = "update") -> ClientChange:
    return ClientChange(op=kind, base_version=base, data=data, client_ts=ts)  # type: ignore[arg-type]


# -- strategies -----------------------------------------------------------------------------------------------
@SETTINGS
@given(words, words, versions)
def test_client_wins_takes_the_incoming_data(mine: str, theirs: str, version: int) -> None:
    out = decide(server(version, {"t": theirs}), stale({"t": mine}), policy("CLIENT_WINS"))
    assert out.status == "merged" and out.resolution == "client"
    assert out.write is not None and out.write.data == {"t": mine}


@SETTINGS
@given(words, words, versions, st.booleans())
def test_server_wins_changes_nothing(mine: str, theirs: str, version: int, delete: bool) -> None:
    change = stale(None, kind="delete") if delete else stale({"t": mine})
    out = decide(server(version, {"t": theirs}), change, policy("SERVER_WINS"))
    assert out.status == "merged" and out.resolution == "server" and out.write is None


@SETTINGS
@given(words, words, versions, stamps, stamps)
def test_last_write_wins_takes_the_later_client_clock_then_the_later_arrival(
        mine: str, theirs: str, version: int, mine_at: datetime | None, theirs_at: datetime | None) -> None:
    out = decide(server(version, {"t": theirs}, ts=theirs_at), stale({"t": mine}, ts=mine_at),
                 policy("LAST_WRITE_WINS"))
    incoming_wins = mine_at is None or theirs_at is None or mine_at >= theirs_at
    assert out.status == "merged"
    assert (out.write is not None) == incoming_wins
    if out.write is not None:
        assert out.write.data == {"t": mine} and out.write.client_ts == mine_at


@SETTINGS
@given(words, words, stamps, stamps)
def test_last_write_wins_converges_whatever_the_arrival_order(a: str, b: str, at_a: datetime | None,
                                                              at_b: datetime | None) -> None:
    """Two devices' edits of one version, in either order: the same final data when both carry distinct clocks."""
    if at_a is None or at_b is None or at_a == at_b:
        return
    lww = policy("LAST_WRITE_WINS")

    def run(first: tuple[str, datetime], second: tuple[str, datetime]) -> dict[str, Any]:
        state = server(1, {"t": "base"})
        for data, at in (first, second):
            out = decide(state, stale({"t": data}, ts=at), lww)
            if out.write is not None:
                state = server(state.version + 1, out.write.data, ts=out.write.client_ts)
        return state.data

    assert run((a, at_a), (b, at_b)) == run((b, at_b), (a, at_a)) == {"t": a if at_a > at_b else b}


@SETTINGS
@given(words, words, versions, st.booleans())
def test_manual_never_writes_and_keeps_a_conflict(mine: str, theirs: str, version: int, delete: bool) -> None:
    change = stale(None, kind="delete") if delete else stale({"t": mine})
    out = decide(server(version, {"t": theirs}), change, policy("MANUAL"))
    assert (out.status, out.resolution, out.write) == ("conflict", "manual", None)


@SETTINGS
@given(st.sampled_from(("LAST_WRITE_WINS", "CLIENT_WINS", "SERVER_WINS", "MERGE", "MANUAL")), words, words,
       st.integers(min_value=1, max_value=50))
def test_no_conflict_when_the_base_is_current(strategy: str, mine: str, theirs: str, version: int) -> None:
    out = decide(server(version, {"t": theirs}), stale({"t": mine}, base=version), policy(strategy))
    assert out.status == "applied" and out.resolution is None
    assert out.write is not None and out.write.data == {"t": mine}


@SETTINGS
@given(st.sampled_from(("LAST_WRITE_WINS", "CLIENT_WINS", "SERVER_WINS", "MERGE", "MANUAL")),
       st.integers(min_value=0, max_value=50), st.integers(min_value=1, max_value=20))
def test_a_base_ahead_of_the_server_is_rejected(strategy: str, version: int, ahead: int) -> None:
    out = decide(server(version, {}), stale({}, base=version + ahead), policy(strategy))
    assert out.status == "rejected" and out.error is not None and out.error[0] == "INVALID_BASE_VERSION"


def test_creates_updates_and_deletes_without_a_server_copy() -> None:
    p = policy("MERGE")
    assert decide(None, stale({"a": 1}, base=0, kind="create"), p).status == "applied"
    assert decide(None, stale({"a": 1}, base=1, kind="create"), p).error == (
        "INVALID_BASE_VERSION", "a create sends baseVersion 0")
    for kind in ("update", "delete"):
        out = decide(None, stale({"a": 1}, kind=kind), p)
        assert out.status == "rejected" and out.error is not None and out.error[0] == "NOT_FOUND"
    # Two devices creating the same id: the second one is a conflict under the type's policy.
    assert decide(server(1, {"a": 1}), stale({"a": 2}, base=0, kind="create"), p).status == "merged"
    assert decide(server(1, {"a": 1}, deleted=True), stale(None, base=1, kind="delete"), p).write is None


# -- MERGE and its field policies --------------------------------------------------------------------------------
@SETTINGS
@given(tags, tags)
def test_merge_arrays_keeps_every_item_once_server_order_first(theirs: list[str], mine: list[str]) -> None:
    out = merge_value("MERGE_ARRAYS", theirs, mine)
    assert out[: len(theirs)] == theirs
    assert set(out) == set(theirs) | set(mine) and len(out) == len(set(out))
    assert merge_value("MERGE_ARRAYS", out, mine) == out  # idempotent


@SETTINGS
@given(counts, counts)
def test_max_value_is_the_larger(theirs: int, mine: int) -> None:
    assert merge_value("MAX_VALUE", theirs, mine) == max(theirs, mine) == merge_value("MAX_VALUE", mine, theirs)


@SETTINGS
@given(status, status)
def test_monotonic_never_goes_back(theirs: str, mine: str) -> None:
    order = ("active", "paused", "ended")
    rule = FieldPolicy(rule="MONOTONIC", order=order)
    out = merge_value(rule, theirs, mine)
    assert order.index(out) == max(order.index(theirs), order.index(mine))
    assert out == merge_value(rule, mine, theirs)


@SETTINGS
@given(words, words)
def test_local_wins_takes_the_incoming_value(theirs: str, mine: str) -> None:
    assert merge_value("LOCAL_WINS", theirs, mine) == mine


@SETTINGS
@given(words, tags, words, tags, versions)
def test_merge_journal_entry(text_s: str, tags_s: list[str], text_c: str, tags_c: list[str], version: int) -> None:
    journal = DEFAULT_POLICIES.types["journal_entry"]
    out = decide(server(version, {"text": text_s, "tags": tags_s, "mood": 1}),
                 stale({"text": text_c, "tags": tags_c}), journal)
    assert out.status == "merged" and out.resolution == "merge"
    data: dict[str, Any] = out.write.data if out.write is not None else {"text": text_s, "tags": tags_s, "mood": 1}
    assert data["text"] == text_c and set(data["tags"]) == set(tags_s) | set(tags_c)
    assert data["mood"] == 1  # a field only the server has is kept
    again = merge_fields(journal, data, {"text": text_c, "tags": tags_c})
    assert again == data  # merging the same change twice changes nothing more


@SETTINGS
@given(status, counts, status, counts, versions)
def test_merge_consumption_session(st_s: str, n_s: int, st_c: str, n_c: int, version: int) -> None:
    session = DEFAULT_POLICIES.types["consumption_session"]
    out = decide(server(version, {"status": st_s, "count": n_s}), stale({"status": st_c, "count": n_c}), session)
    data = out.write.data if out.write is not None else {"status": st_s, "count": n_s}
    order = ("active", "paused", "ended")
    assert data["count"] == max(n_s, n_c)
    assert order.index(data["status"]) == max(order.index(st_s), order.index(st_c))
    swapped = merge_fields(session, {"status": st_c, "count": n_c}, {"status": st_s, "count": n_s})
    assert swapped == data  # commutative


@SETTINGS
@given(words, versions, st.booleans())
def test_merge_lets_a_delete_win(theirs: str, version: int, server_deleted: bool) -> None:
    p = policy("MERGE")
    if server_deleted:
        out = decide(server(version, {"t": theirs}, deleted=True), stale({"t": "x"}), p)
        assert out.write is None and out.resolution == "server"
    else:
        out = decide(server(version, {"t": theirs}), stale(None, kind="delete"), p)
        assert out.write is not None and out.write.deleted and out.write.data == {"t": theirs}


# -- configuration, validation, cursors ----------------------------------------------------------------------------
def test_policies_refuse_bad_configuration() -> None:
    with pytest.raises(ValueError, match="MERGE"):
        EntityPolicy(entity_type="x", schema=Goal, strategy="MANUAL", fields={"a": FieldPolicy(rule="MAX_VALUE")})
    with pytest.raises(ValueError, match="order"):
        FieldPolicy(rule="MONOTONIC")
    with pytest.raises(ValueError, match="parent"):
        Policies(MappingProxyType({"x": EntityPolicy(entity_type="x", schema=Goal, strategy="MANUAL",
                                                     parent=Parent(entity_type="nope", field="p"))}))
    with pytest.raises(ValueError, match="cycle"):
        Policies(MappingProxyType({
            "a": EntityPolicy(entity_type="a", schema=Goal, strategy="MANUAL", parent=Parent(entity_type="b", field="b")),
            "b": EntityPolicy(entity_type="b", schema=Goal, strategy="MANUAL", parent=Parent(entity_type="a", field="a")),
        }))
    assert DEFAULT_POLICIES.depth("consumption") == 1 and DEFAULT_POLICIES.depth("consumption_session") == 0


def test_data_is_validated_per_type_and_extra_fields_are_kept() -> None:
    journal = DEFAULT_POLICIES.types["journal_entry"]
    assert validate_data(journal, {"text": "a", "color": "red"}) == ({"text": "a", "tags": [], "color": "red"}, [])
    data, problems = validate_data(journal, {"tags": "x"})
    assert data is None and {p["path"] for p in problems} == {"data.text", "data.tags"}
    assert validate_data(journal, [1])[0] is None
    session = DEFAULT_POLICIES.types["consumption_session"]
    assert validate_data(session, {"status": "active", "count": -1})[0] is None
    assert validate_data(session, {"status": "gone", "count": 1})[0] is None
    assert JournalEntry.model_fields["tags"].default_factory is not None


@SETTINGS
@given(st.integers(min_value=0, max_value=10**17))
def test_cursors_round_trip(seq: int) -> None:
    assert decode_cursor(encode_cursor(seq)) == seq

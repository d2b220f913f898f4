"""What the workers remember about a channel: history, who spoke, who talked to whom."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from streams.domain import channels
from streams.domain.channels import (
    EXCHANGES_KEPT,
    author_of,
    empty,
    entry,
    last_exchange,
    remember,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
MS0 = int(T0.timestamp() * 1000)


def chat(event_id: str, author_id: str, *, kind: str = "HUMAN", reply_to: str | None = None,
         at: datetime | int = 0, text: str | None = None, metadata: dict | None = None) -> dict:
    """A ChatMessage record; ``at`` is a datetime or seconds after T0."""
    created = at if isinstance(at, datetime) else T0 + timedelta(seconds=at)
    return {"event_id": event_id, "channel_id": "general", "thread_id": reply_to or event_id,
            "reply_to": reply_to, "author_id": author_id, "author_kind": kind,
            "text": text if text is not None else f"message {event_id}", "mentions": [],
            "thread_depth": 1 if reply_to else 0, "created_at": created, "task_id": None,
            "metadata": metadata or {}}


def ms(seconds: int) -> int:
    return MS0 + seconds * 1000


def test_the_message_factory_makes_real_chat_messages():
    codec.encode("ChatMessage", chat("m1", "alice"))
    codec.encode("ChatMessage", chat("m2", "bot", kind="AGENT", reply_to="m1", at=3))


def test_entry():
    message = chat("m2", "bot", kind="AGENT", reply_to="m1", at=3, text="hi",
                   metadata={"vote_id": "v"})
    assert entry(message) == {"id": "m2", "author_id": "bot", "author_kind": "AGENT",
                              "text": "hi", "reply_to": "m1", "thread_id": "m1",
                              "metadata": {"vote_id": "v"}, "created_ms": ms(3)}


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                    timezones=st.just(timezone.utc)))
def test_entry_time_is_the_avro_millisecond(created_at):
    created_at = created_at.replace(microsecond=created_at.microsecond // 1000 * 1000)
    _, decoded = codec.decode(codec.encode("ChatMessage", chat("0f8fad5b-d9cb-469f-a165-70867728950e", "a", at=created_at)))
    expected = (decoded["created_at"] - datetime(1970, 1, 1, tzinfo=timezone.utc)) \
        // timedelta(milliseconds=1)
    assert entry(decoded)["created_ms"] == expected


def test_empty():
    assert empty() == {"history": [], "spoke": {}, "exchanges": {}}
    assert empty() is not empty() and empty()["history"] is not empty()["history"]


# --------------------------------------------------------------------------- history


messages_strategy = st.lists(
    st.tuples(st.integers(0, 15),  # message id (repeats are replays)
              st.sampled_from(["alice", "bob", "agent-a", "agent-b"]),
              st.integers(0, 15),  # reply_to id (may be unknown)
              st.booleans(),  # is a reply
              st.integers(0, 10_000)),  # seconds after T0
    max_size=40)


def build(spec) -> list[dict]:
    return [chat(f"m{mid}", author, kind="AGENT" if author.startswith("agent") else "HUMAN",
                 reply_to=f"m{rid}" if is_reply else None, at=seconds)
            for mid, author, rid, is_reply, seconds in spec]


@settings(max_examples=200, deadline=None)
@given(spec=messages_strategy, size=st.integers(1, 12))
def test_history_keeps_the_last_n_distinct_messages(spec, size):
    state = empty()
    for message in build(spec):
        state = remember(state, message, size)
        assert len(state["history"]) <= size
    # Model: a replayed id moves to the end; history is the last `size` distinct ids.
    order: list[str] = []
    for message in build(spec):
        if message["event_id"] in order:
            order.remove(message["event_id"])
        order.append(message["event_id"])
    assert [h["id"] for h in state["history"]] == order[-size:]
    assert len(state["history"]) == min(size, len(order))


@settings(max_examples=150, deadline=None)
@given(spec=messages_strategy, size=st.integers(1, 12))
def test_remember_never_mutates_its_input(spec, size):
    state = empty()
    for message in build(spec):
        before_state, before_message = copy.deepcopy(state), copy.deepcopy(message)
        new = remember(state, message, size)
        assert state == before_state
        assert message == before_message
        assert new is not state
        assert new["history"] is not state["history"]
        assert new["spoke"] is not state["spoke"]
        assert new["exchanges"] is not state["exchanges"]
        state = new


@settings(max_examples=150, deadline=None)
@given(spec=messages_strategy, size=st.integers(1, 12))
def test_spoke_is_the_latest_time_each_agent_spoke(spec, size):
    state = empty()
    latest: dict[str, int] = {}
    for message in build(spec):
        state = remember(state, message, size)
        if message["author_kind"] == "AGENT":
            t = entry(message)["created_ms"]
            latest[message["author_id"]] = max(latest.get(message["author_id"], 0), t)
    assert state["spoke"] == latest


def test_spoke_records_agents_only_and_never_goes_back():
    state = remember(empty(), chat("m1", "alice", at=1), 10)
    assert state["spoke"] == {}
    state = remember(state, chat("m2", "bot", kind="AGENT", at=50), 10)
    assert state["spoke"] == {"bot": ms(50)}
    state = remember(state, chat("m3", "bot", kind="AGENT", at=20), 10)  # late arrival
    assert state["spoke"] == {"bot": ms(50)}
    state = remember(state, chat("m4", "bot", kind="AGENT", at=90), 10)
    state = remember(state, chat("m5", "sys", kind="SYSTEM", at=95), 10)
    assert state["spoke"] == {"bot": ms(90)}


def test_a_replayed_message_replaces_its_entry():
    state = empty()
    for message in [chat("m1", "alice", at=1), chat("m2", "bob", at=2),
                    chat("m3", "carol", at=3)]:
        state = remember(state, message, 10)
    replay = chat("m2", "bob", at=2, text="edited on replay")
    after = remember(state, replay, 10)
    ids = [h["id"] for h in after["history"]]
    assert sorted(ids) == ["m1", "m2", "m3"] and len(ids) == 3
    assert [h for h in after["history"] if h["id"] == "m2"] == [entry(replay)]
    # Replaying the same message again changes nothing more.
    assert remember(after, replay, 10) == after


def test_a_replay_does_not_evict_others_from_a_full_history():
    state = empty()
    for i in range(3):
        state = remember(state, chat(f"m{i}", "alice", at=i), 3)
    state = remember(state, chat("m1", "alice", at=1), 3)
    assert sorted(h["id"] for h in state["history"]) == ["m0", "m1", "m2"]


# --------------------------------------------------------------------------- pinning


def test_a_pinned_message_outlives_its_turn_until_its_pin_passes():
    state = remember(empty(), chat("asked", "alice", at=0), 3, pinned_until_ms=ms(60))
    for i in range(1, 6):
        state = remember(state, chat(f"m{i}", "bob", at=i), 3)
    assert [h["id"] for h in state["history"]] == ["asked", "m3", "m4", "m5"]
    assert state["history"][0]["pinned_until_ms"] == ms(60)
    assert author_of(state, "asked") == "alice"
    # The worker's clock decides when the pin passes, not the messages' own times.
    state = remember(state, chat("m6", "bob", at=6), 3, now_ms=ms(59))
    assert "asked" in [h["id"] for h in state["history"]]
    state = remember(state, chat("m7", "bob", at=7), 3, now_ms=ms(60))
    assert [h["id"] for h in state["history"]] == ["m5", "m6", "m7"]


def test_a_replay_keeps_the_later_pin():
    state = remember(empty(), chat("asked", "alice", at=0), 3, pinned_until_ms=ms(60))
    state = remember(state, chat("asked", "alice", at=0), 3)  # decided again, nobody selected
    assert state["history"][0]["pinned_until_ms"] == ms(60)
    state = remember(state, chat("asked", "alice", at=0), 3, pinned_until_ms=ms(90))
    assert state["history"][0]["pinned_until_ms"] == ms(90)


def test_pins_are_bounded_newest_first():
    state = empty()
    for i in range(channels.PINNED_KEPT + 10):
        state = remember(state, chat(f"p{i}", "alice", at=i), 2, pinned_until_ms=ms(10**6))
    ids = [h["id"] for h in state["history"]]
    assert len(ids) == channels.PINNED_KEPT + 2
    assert ids[0] == "p8" and ids[-1] == f"p{channels.PINNED_KEPT + 9}"  # 2 recent, 200 pinned


# --------------------------------------------------------------------------- author_of


def test_author_of():
    state = empty()
    state = remember(state, chat("m1", "alice", at=1), 10)
    state = remember(state, chat("m2", "bot", kind="AGENT", reply_to="m1", at=2), 10)
    assert author_of(state, "m1") == "alice"
    assert author_of(state, "m2") == "bot"
    assert author_of(state, "nope") is None
    assert author_of(state, None) is None
    assert author_of(empty(), "m1") is None


def test_author_of_forgets_messages_that_left_the_history():
    state = empty()
    for i in range(5):
        state = remember(state, chat(f"m{i}", f"user{i}", at=i), 3)
    assert author_of(state, "m0") is None and author_of(state, "m1") is None
    assert author_of(state, "m4") == "user4"


# --------------------------------------------------------------------------- exchanges


def test_a_reply_records_an_exchange_both_ways():
    state = remember(empty(), chat("m1", "alice", at=1), 10)
    assert last_exchange(state, "bot", "alice") is None
    state = remember(state, chat("m2", "bot", kind="AGENT", reply_to="m1", at=7), 10)
    assert last_exchange(state, "bot", "alice") == ms(7)
    assert last_exchange(state, "alice", "bot") == ms(7)
    assert last_exchange(state, "bot", "bob") is None
    # The person answering the agent is an exchange between the same pair.
    state = remember(state, chat("m3", "alice", reply_to="m2", at=12), 10)
    assert last_exchange(state, "bot", "alice") == ms(12)
    assert len(state["exchanges"]) == 1


def test_no_exchange_for_self_replies_roots_or_unknown_parents():
    state = remember(empty(), chat("m1", "bot", kind="AGENT", at=1), 10)
    state = remember(state, chat("m2", "bot", kind="AGENT", reply_to="m1", at=2), 10)
    assert state["exchanges"] == {}
    assert last_exchange(state, "bot", "bot") is None
    state = remember(state, chat("m3", "alice", at=3), 10)
    state = remember(state, chat("m4", "alice", reply_to="gone", at=4), 10)
    assert state["exchanges"] == {}


def test_exchanges_are_capped_keeping_the_most_recent():
    extra = 10
    state = empty()
    for i in range(EXCHANGES_KEPT + extra):
        state = remember(state, chat(f"h{i}", f"user{i}", at=2 * i), 4)
        state = remember(state, chat(f"r{i}", "bot", kind="AGENT", reply_to=f"h{i}",
                                     at=2 * i + 1), 4)
        assert len(state["exchanges"]) == min(i + 1, EXCHANGES_KEPT)
    for i in range(extra):
        assert last_exchange(state, "bot", f"user{i}") is None
    for i in range(extra, EXCHANGES_KEPT + extra):
        assert last_exchange(state, f"user{i}", "bot") == ms(2 * i + 1)


@settings(max_examples=150, deadline=None)
@given(spec=messages_strategy, size=st.integers(1, 12))
def test_exchange_model(spec, size):
    """Every recorded exchange is a reply between two distinct authors found in history."""
    state = empty()
    expected: dict[frozenset, int] = {}
    for message in build(spec):
        partner = author_of(state, message["reply_to"])
        if partner is not None and partner != message["author_id"]:
            # The latest exchange wins, as for `spoke`: a replayed older reply never
            # moves the time back.
            pair = frozenset((partner, message["author_id"]))
            expected[pair] = max(expected.get(pair, 0), entry(message)["created_ms"])
        state = remember(state, message, size)
    assert len(state["exchanges"]) == len(expected)  # far below EXCHANGES_KEPT here
    for pair, when in expected.items():
        a, b = sorted(pair)
        assert last_exchange(state, a, b) == last_exchange(state, b, a) == when


def test_module_constants():
    assert channels.EXCHANGES_KEPT == EXCHANGES_KEPT > 0

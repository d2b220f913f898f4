"""Votes and tools as plain functions: a vote's life in the ledger (open, ballots, close,
the tool request it gates), the records that start it, tool permissions, the catalog and
tool results. No servers: every event produced is checked against its Avro schema by a
round trip through the codec, and every vote state through JSON (the votes table)."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.ids import derived_id
from streams.domain import notices
from streams.domain.tools import catalog, permissions, runs
from streams.domain.tools.permissions import Policy, Rule, denial, load_policy
from streams.domain.tools.records import (
    SHOWN,
    new_request,
    request_digest,
    result_events,
    vote_id_of,
)
from streams.domain.votes import ledger
from streams.domain.votes.records import new_ballot, new_proposal
from streams.tools import actions

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
DEADLINE = T0 + timedelta(minutes=5)
CHANNEL = "general"
VOTE = derived_id("vote-1")
MS = timedelta(milliseconds=1)


class _Everyone:
    def __contains__(self, agent_id: object) -> bool:
        return True


EVERYONE = _Everyone()  # every named voter is a known agent


# --- helpers ------------------------------------------------------------------------------

def roundtrip(name: str, record: dict) -> dict:
    """The record as a consumer reads it; fails unless it is a valid Avro record of `name`."""
    decoded_name, decoded = codec.decode(codec.encode(name, record), expected=name)
    assert decoded_name == name
    return decoded


def valid(events: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Every event encodes as its kind and reads back unchanged."""
    for name, record in events:
        assert roundtrip(name, record) == record, name
    return events


def stored(state: dict) -> dict:
    """The state as the votes table (JSON) keeps it: must survive unchanged."""
    again = json.loads(json.dumps(state))
    assert again == state
    return again


def of(events: list[tuple[str, dict]], name: str) -> list[dict]:
    return [r for n, r in events if n == name]


def one(events: list[tuple[str, dict]], name: str) -> dict:
    found = of(events, name)
    assert len(found) == 1, (name, [n for n, _ in events])
    return found[0]


def proposal(voters=("a", "b", "c"), *, strategy="SIMPLE_MAJORITY", quorum=0.5,
             vote_type="PROJECT_DECISION", options=None, proposer="alice", vote_id=VOTE,
             title="Ship it?", tool_request_id=None) -> dict:
    p = new_proposal(CHANNEL, proposer, title, vote_type=vote_type, deadline_s=60,
                     strategy=strategy, options=options, eligible_voters=list(voters),
                     quorum=quorum, vote_id=vote_id, tool_request_id=tool_request_id)
    return roundtrip("VoteProposal", {**p, "deadline_at": DEADLINE, "created_at": T0})


def ballot(voter: str, choice: str = "yes", at: datetime = T0 + timedelta(seconds=10),
           event_id: str | None = None, vote_id: str = VOTE) -> dict:
    b = new_ballot(vote_id, CHANNEL, voter, choice, rationale="because",
                   event_id=derived_id("ballot", event_id or f"{voter}-{choice}"))
    return roundtrip("Ballot", {**b, "cast_at": at})


def opened(voters=("a", "b", "c"), members=(), active=None, **kw) -> dict:
    p = proposal(voters, **kw)
    state, events = ledger.open_vote(ledger.new(p["vote_id"], 3), p, list(members),
                                     set(members if active is None else active) | set(voters), EVERYONE, T0)
    valid(events)
    return stored(state)


def cast_all(state: dict, *ballots: dict, now: datetime = T0 + timedelta(seconds=20)):
    """Cast ballots in order; returns the final state and the events of each cast."""
    produced = []
    for b in ballots:
        state, events = ledger.cast(state, b, now)
        produced.append(valid(events))
        state = stored(state)
    return state, produced


def tool_request(agent="alice", tool="shell", arguments=None, reason="need a listing") -> dict:
    r = new_request(agent, CHANNEL, tool, arguments or {"command": "ls -la"}, reason,
                    source_message_id="msg-1")
    return roundtrip("ToolRequest", {**r, "requested_at": T0 - timedelta(seconds=1)})


def gated(request: dict) -> dict:
    """A new vote that holds ``request`` (the tools agent's first record of its vote)."""
    return ledger.gate(ledger.new(vote_id_of(request["event_id"]), 0), request)


def tool_vote(request: dict, members=("alice", "bob", "carol", "dave"), active=None,
              strategy="SIMPLE_MAJORITY", quorum=0.5) -> tuple[dict, list]:
    """A TOOL_USAGE vote as the tools agent opens it: the request first, then the proposal."""
    vote_id = vote_id_of(request["event_id"])
    p = new_proposal(request["channel_id"], request["agent_id"],
                     f"Allow {request['agent_id']} to run {request['tool']}?",
                     vote_type="TOOL_USAGE", strategy=strategy, quorum=quorum, deadline_s=60,
                     description=request["reason"], vote_id=vote_id,
                     event_id=derived_id(request["event_id"], "proposal"),
                     tool_request_id=request["event_id"])
    p = roundtrip("VoteProposal", {**p, "deadline_at": DEADLINE, "created_at": T0})
    state = stored(ledger.gate(ledger.new(vote_id, 0), request))
    state, events = ledger.open_vote(state, p, list(members),
                                     set(members if active is None else active), EVERYONE, T0)
    return stored(state), valid(events)


# --- ledger.open_vote ---------------------------------------------------------------------

def test_open_vote_fills_voters_from_members_and_calls_the_active_ones():
    p = proposal(voters=())
    state, events = ledger.open_vote(ledger.new(VOTE, 2), p, ["a", "b", "c"], {"a", "c", "zed"}, EVERYONE, T0)
    state = stored(state)
    assert state["proposal"]["eligible_voters"] == ["a", "b", "c"]
    assert state["proposal"]["deadline_at"] == codec.epoch_ms(DEADLINE)
    assert state["proposal"]["created_at"] == codec.epoch_ms(T0)
    assert state["closed"] is False and state["ballots"] == {} and state["partition"] == 2
    [(name, call)] = valid(events)
    assert name == "ChatMessage"
    assert call["event_id"] == derived_id(VOTE, "call") == call["thread_id"]
    assert call["author_kind"] == "SYSTEM" and call["author_id"] == ledger.AUTHOR
    assert call["reply_to"] is None and call["thread_depth"] == 0 and call["created_at"] == T0
    assert call["metadata"] == {"kind": "vote_call", "vote_id": VOTE, "options": "yes,no"}
    assert call["mentions"] == ["a", "c"]  # b is not active, zed is no voter
    assert "Vote opened: Ship it?" in call["text"]
    assert "Voters: a, b, c." in call["text"]
    assert "simple majority" in call["text"] and "quorum 50%" in call["text"]
    assert "closes 12:05:00 UTC" in call["text"]
    assert "Options: yes, no or abstain" in call["text"]


def test_open_vote_keeps_the_named_voters_once_each():
    p = proposal(voters=("b", "a", "b"))
    state, events = ledger.open_vote(ledger.new(VOTE, 0), p, ["x", "y"], {"a", "b", "x"}, EVERYONE, T0)
    assert state["proposal"]["eligible_voters"] == ["b", "a"]
    assert one(events, "ChatMessage")["mentions"] == ["b", "a"]


def test_open_vote_options_in_the_call_metadata():
    p = proposal(options=["red", "blue", "abstain", "red"], strategy="QUALIFIED_MAJORITY")
    _, events = ledger.open_vote(ledger.new(VOTE, 0), p, [], {"a"}, EVERYONE, T0)
    call = one(valid(events), "ChatMessage")
    assert call["metadata"]["options"] == "red,blue"
    assert "Options: red, blue or abstain" in call["text"]
    assert "qualified majority" in call["text"]


def test_proposer_votes_unless_the_vote_is_on_its_own_tool_request():
    p = proposal(voters=(), proposer="alice")
    state, _ = ledger.open_vote(ledger.new(VOTE, 0), p, ["alice", "bob"], set(), EVERYONE, T0)
    assert state["proposal"]["eligible_voters"] == ["alice", "bob"]

    request = tool_request(agent="alice")
    state, events = tool_vote(request, members=("alice", "bob", "carol"))
    assert state["proposal"]["eligible_voters"] == ["bob", "carol"]
    assert state["request"]["requested_at"] == codec.epoch_ms(request["requested_at"])
    call = one(events, "ChatMessage")
    assert call["mentions"] == ["bob", "carol"]
    assert "alice" not in call["text"].split("Voters: ")[1]
    # The call shows what would run, and why.
    assert 'alice asks to run shell with {"command": "ls -la"}' in call["text"]
    assert "Reason: need a listing" in call["text"]
    assert "tool usage" in call["text"]
    assert call["metadata"]["vote_id"] == vote_id_of(request["event_id"])


def test_vote_call_cuts_long_arguments_and_reasons():
    request = tool_request(arguments={"command": "x" * 1000}, reason="r" * 1000)
    _, events = tool_vote(request)
    text = one(events, "ChatMessage")["text"]
    assert "x" * 280 in text and "x" * 301 not in text
    assert "r" * 300 in text and "r" * 301 not in text


def test_a_second_proposal_opens_nothing():
    state = opened()
    again, events = ledger.open_vote(state, proposal(("x", "y"), title="Other"), ["m"], {"x"}, EVERYONE, T0)
    assert events == [] and again == state


@pytest.mark.parametrize("vote_type", ["PROJECT_DECISION", "CONFLICT_RESOLUTION"])
def test_nobody_eligible_fails_at_once(vote_type):
    p = proposal(voters=(), vote_type=vote_type)
    state, events = ledger.open_vote(ledger.new(VOTE, 0), p, [], {"a"}, EVERYONE, T0)
    state = stored(state)
    assert state["closed"] and state["outcome"] == "FAILED"
    assert [n for n, _ in valid(events)] == ["VoteResult", "ChatMessage"]
    result = one(events, "VoteResult")
    assert result["event_id"] == derived_id(VOTE, "result")
    assert result["outcome"] == "FAILED" and result["winning_option"] is None
    assert "nobody is eligible to vote" in result["reason"]
    assert result["eligible_count"] == 0 and result["ballots_counted"] == 0
    assert result["closed_at"] == T0 and result["vote_type"] == vote_type
    notice = one(events, "ChatMessage")
    assert notice["metadata"] == {"kind": "vote_result", "vote_id": VOTE, "outcome": "FAILED"}
    assert "nobody is eligible to vote" in notice["text"]
    # The vote is closed: ballots are late, a repeated proposal opens nothing.
    _, late = ledger.cast(state, ballot("a"), T0)
    assert one(late, "BallotRejected")["reason"] == "LATE"
    assert ledger.open_vote(state, p, ["a"], {"a"}, EVERYONE, T0) == (state, [])
    assert not ledger.due(state, DEADLINE + MS)


def test_tool_vote_with_only_the_requester_rejects_the_request_at_once():
    request = tool_request(agent="alice")
    state, events = tool_vote(request, members=("alice",))
    assert state["closed"] and state["outcome"] == "FAILED"
    assert not of(events, "ToolRequest")
    assert one(events, "VoteResult")["tool_request_id"] == request["event_id"]
    result = one(events, "ToolResult")
    assert result["status"] == "REJECTED" and result["request_id"] == request["event_id"]
    assert result["vote_id"] == vote_id_of(request["event_id"])
    assert "nobody is eligible to vote" in result["error"]


# --- ledger.cast: rejections ----------------------------------------------------------------

def _closed() -> dict:
    state, events = ledger.close(opened(), DEADLINE)
    assert of(events, "VoteResult")
    return stored(state)


def _voted() -> dict:
    state, _ = cast_all(opened(voters=("a", "b", "c", "d", "e")), ballot("a", "yes", event_id="first"))
    return state


REJECTIONS = {
    "unknown vote": (lambda: ledger.new(VOTE, 0), ballot("a"), "UNKNOWN_VOTE",
                     f"There is no open vote {VOTE}"),
    "gated request, no proposal yet": (lambda: gated(tool_request()),
                                       ballot("a"), "UNKNOWN_VOTE", "no open vote"),
    "after close": (_closed, ballot("a"), "LATE", "already closed"),
    "after the deadline": (opened, ballot("a", at=DEADLINE + MS), "LATE",
                           "after the vote's deadline of 2025-01-01 12:05:00 UTC"),
    "ineligible": (opened, ballot("zed"), "INELIGIBLE", "not one of this vote's eligible voters"),
    "invalid choice": (opened, ballot("a", "maybe"), "INVALID_CHOICE",
                       "'maybe' is not a choice in this vote; pick one of: yes, no or abstain"),
    "duplicate": (_voted, ballot("a", "no", event_id="second"), "DUPLICATE",
                  "already have a counted ballot ('yes')"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_rejected_ballot_yields_one_rejection_and_changes_nothing(case):
    make, b, reason, detail = REJECTIONS[case]
    state = make()
    snapshot = copy.deepcopy(state)
    now = T0 + timedelta(minutes=1)
    after, events = ledger.cast(state, b, now)
    assert after == snapshot and state == snapshot
    [(name, rejected)] = valid(events)
    assert name == "BallotRejected"
    assert rejected == {
        "event_id": derived_id(b["event_id"], "rejected"), "vote_id": b["vote_id"],
        "voter_id": b["voter_id"], "ballot_event_id": b["event_id"], "reason": reason,
        "detail": rejected["detail"], "rejected_at": now, "channel_id": CHANNEL}
    assert detail in rejected["detail"]
    # Replayed, it is rejected again with the same id and words: consumers drop the copy.
    assert ledger.cast(state, b, now) == (snapshot, events)


def test_ballot_at_the_deadline_itself_counts():
    state, [events] = cast_all(opened(voters=("a", "b", "c", "d")), ballot("a", at=DEADLINE))
    assert events == [] and "a" in state["ballots"]
    assert state["ballots"]["a"] == {"choice": "yes", "event_id": derived_id("ballot", "a-yes"),
                                     "cast_at": codec.epoch_ms(DEADLINE)}


def test_same_ballot_delivered_twice_is_ignored_silently():
    b = ballot("a", "abstain")
    state, [first, second] = cast_all(opened(), b, b)
    assert first == [] and second == []
    assert list(state["ballots"]) == ["a"]
    # Also once the vote has closed: the copy of a counted ballot is not "late".
    closed, events = ledger.close(state, DEADLINE)
    assert of(events, "VoteResult")
    assert ledger.cast(closed, b, DEADLINE + MS) == (closed, [])


# --- ledger.cast: early close ----------------------------------------------------------------

def test_consensus_with_full_quorum_closes_only_after_the_last_yes():
    state = opened(strategy="CONSENSUS", quorum=1.0)
    now = T0 + timedelta(seconds=30)
    state, produced = cast_all(state, ballot("a"), ballot("b"), now=now)
    assert produced == [[], []] and not state["closed"] and not ledger.due(state, now)
    state, events = ledger.cast(state, ballot("c"), now)
    state = stored(state)
    assert state["closed"] and state["outcome"] == "PASSED"
    assert [n for n, _ in valid(events)] == ["VoteResult", "ChatMessage"]
    result = one(events, "VoteResult")
    assert result["outcome"] == "PASSED" and result["winning_option"] == "yes"
    assert result["tally"] == {"yes": 3.0, "no": 0.0, "abstain": 0.0}
    assert result["ballots_counted"] == 3 and result["eligible_count"] == 3
    assert result["closed_at"] == now < DEADLINE
    assert result["strategy"] == "CONSENSUS" and result["tool_request_id"] is None
    notice = one(events, "ChatMessage")
    assert notice["event_id"] == derived_id(VOTE, "closed") != derived_id(VOTE, "call")
    assert notice["metadata"] == {"kind": "vote_result", "vote_id": VOTE, "outcome": "PASSED"}
    assert notice["author_kind"] == "SYSTEM" and notice["mentions"] == []
    assert notice["text"].startswith("Vote closed: Ship it?: PASSED (yes 3, no 0, abstain 0).")
    # Closed: nothing more happens.
    assert ledger.close(state, DEADLINE) == (state, [])
    assert not ledger.due(state, DEADLINE)


def test_consensus_dissent_settles_early_once_quorum_is_certain():
    state, produced = cast_all(opened(strategy="CONSENSUS", quorum=0.5), ballot("a", "yes"),
                               ballot("b", "no"))
    assert produced[0] == []
    assert one(produced[1], "VoteResult")["outcome"] == "FAILED"
    assert state["closed"]
    # With full quorum the last voter may stay away (NO_QUORUM rather than FAILED), but
    # the vote can no longer pass either way: it fails early.
    state, produced = cast_all(opened(strategy="CONSENSUS", quorum=1.0), ballot("a", "yes"),
                               ballot("b", "no"))
    assert produced[0] == [] and state["closed"]
    result = one(produced[1], "VoteResult")
    assert result["outcome"] == "FAILED" and "can no longer pass" in result["reason"]


def test_simple_majority_two_yes_of_three_closes_early():
    state, produced = cast_all(opened(), ballot("a"), ballot("b"))
    assert produced[0] == [] and state["closed"] and state["outcome"] == "PASSED"
    result = one(produced[1], "VoteResult")
    assert (result["outcome"], result["winning_option"], result["ballots_counted"]) == ("PASSED", "yes", 2)
    # The third voter comes too late.
    _, events = ledger.cast(state, ballot("c", "no"), T0 + timedelta(seconds=40))
    assert one(events, "BallotRejected")["reason"] == "LATE"


def test_split_vote_stays_open_until_the_deadline():
    state, produced = cast_all(opened(), ballot("a", "yes"), ballot("b", "no"))
    assert produced == [[], []] and not state["closed"]
    assert not ledger.due(state, DEADLINE - MS) and ledger.due(state, DEADLINE)
    state, events = ledger.close(state, DEADLINE + timedelta(seconds=3))
    result = one(valid(events), "VoteResult")
    assert result["outcome"] == "TIED" and result["closed_at"] == DEADLINE


# --- ledger.due / close at the deadline ---------------------------------------------------------

def test_due_only_when_open_with_its_deadline_passed():
    assert not ledger.due(ledger.new(VOTE, 0), DEADLINE + timedelta(days=1))
    assert not ledger.due(gated(tool_request()), DEADLINE + MS)
    state = opened()
    assert not ledger.due(state, T0) and not ledger.due(state, DEADLINE - MS)
    assert ledger.due(state, DEADLINE) and ledger.due(state, DEADLINE + timedelta(hours=1))
    assert ledger.close(ledger.new(VOTE, 0), DEADLINE) == (ledger.new(VOTE, 0), [])


def test_no_ballot_expires_and_closes_once():
    state = opened()
    late = DEADLINE + timedelta(seconds=7)
    closed, events = ledger.close(state, late)
    closed = stored(closed)
    result = one(valid(events), "VoteResult")
    assert result["outcome"] == "EXPIRED" and result["ballots_counted"] == 0
    assert result["tally"] == {"yes": 0.0, "no": 0.0, "abstain": 0.0}
    assert result["closed_at"] == DEADLINE  # when it closed by rule, not when it was noticed
    assert one(events, "ChatMessage")["created_at"] == late
    assert "expired" in result["reason"]
    assert closed["closed"] and closed["outcome"] == "EXPIRED"
    assert ledger.close(closed, late + timedelta(seconds=1)) == (closed, [])
    assert not ledger.due(closed, late)


def test_too_few_ballots_is_no_quorum():
    state, _ = cast_all(opened(strategy="CONSENSUS", quorum=1.0), ballot("a"))
    closed, events = ledger.close(state, DEADLINE)
    result = one(valid(events), "VoteResult")
    assert result["outcome"] == "NO_QUORUM" and result["ballots_counted"] == 1
    assert result["eligible_count"] == 3 and "no quorum" in result["reason"]
    assert ledger.close(closed, DEADLINE) == (closed, [])


VOTERS = ("a", "b", "c", "d")


@settings(max_examples=60, deadline=None)
@given(
    strategy=st.sampled_from(["SIMPLE_MAJORITY", "QUALIFIED_MAJORITY", "CONSENSUS", "WEIGHTED"]),
    quorum=st.sampled_from([0.0, 0.5, 0.75, 1.0]),
    casts=st.lists(st.tuples(st.sampled_from(VOTERS + ("zed",)),
                             st.sampled_from(["yes", "no", "abstain", "maybe"]),
                             st.integers(-60, 400), st.integers(0, 5)), max_size=8),
    close_after=st.integers(0, 100),
)
def test_any_sequence_keeps_the_ledger_invariants(strategy, quorum, casts, close_after):
    """Whatever arrives: every event is valid, a rejection changes nothing, a vote closes
    once with one result, never after its deadline, and the state stays JSON."""
    state = opened(VOTERS, strategy=strategy, quorum=quorum)
    results = []
    for voter, choice, second, copy_no in casts:
        at = T0 + timedelta(seconds=second)
        b = ballot(voter, choice, at=at, event_id=f"{voter}-{choice}-{second}-{copy_no % 2}")
        before = copy.deepcopy(state)
        state, events = ledger.cast(state, b, max(at, T0))
        valid(events)
        state = stored(state)
        rejected = of(events, "BallotRejected")
        if rejected:
            assert state == before and len(events) == 1
        if events and not rejected:
            assert state["closed"] and not before["closed"]
        results += of(events, "VoteResult")
    if ledger.due(state, DEADLINE + timedelta(seconds=close_after)):
        state, events = ledger.close(state, DEADLINE + timedelta(seconds=close_after))
        results += of(valid(events), "VoteResult")
    assert state["closed"] or not ledger.due(state, DEADLINE)
    assert len(results) <= 1
    if results:
        assert state["closed"] and results[0]["outcome"] == state["outcome"]
        assert results[0]["closed_at"] <= DEADLINE
        assert results[0]["ballots_counted"] == len(state["ballots"])


# --- TOOL_USAGE votes ---------------------------------------------------------------------------

def test_passing_tool_vote_sends_the_request_on_to_run():
    request = tool_request()
    vote_id = vote_id_of(request["event_id"])
    state, _ = tool_vote(request)
    assert ledger.cast(state, ballot("alice", vote_id=vote_id), T0)[1][0][1]["reason"] == "INELIGIBLE"
    state, produced = cast_all(state, ballot("bob", vote_id=vote_id), ballot("carol", vote_id=vote_id))
    assert produced[0] == [] and state["closed"]
    events = produced[1]
    assert [n for n, _ in events] == ["VoteResult", "ChatMessage", "ToolRequest"]
    assert one(events, "ToolRequest") == request  # the same request, same event id, to run
    assert one(events, "VoteResult")["tool_request_id"] == request["event_id"]
    assert one(events, "VoteResult")["vote_type"] == "TOOL_USAGE"
    assert one(events, "VoteResult")["request_sha256"] == request_digest(request)
    assert not of(events, "ToolResult")


def test_a_request_swapped_after_the_vote_opened_is_refused():
    request = tool_request(arguments={"command": "ls"})
    state, _ = tool_vote(request)
    swapped = {**request, "arguments_json": json.dumps({"command": "rm -rf ~"})}
    with pytest.raises(ledger.Refused, match="different tool request"):
        ledger.gate(state, swapped)
    assert ledger.gate(state, request) == state  # the same request again: a replay
    state, produced = cast_all(state, *(ballot(v, vote_id=state["vote_id"])
                                        for v in ("bob", "carol")))
    assert one(produced[-1], "ToolRequest")["arguments_json"] == request["arguments_json"]


def test_a_request_for_another_vote_or_after_the_proposal_is_refused():
    request = tool_request()
    with pytest.raises(ledger.Refused, match="does not belong"):
        ledger.gate(ledger.new(VOTE, 0), request)
    state = opened()
    late = {**tool_request(), "event_id": str(uuid.uuid4())}
    with pytest.raises(ledger.Refused):
        ledger.gate({**state, "vote_id": vote_id_of(late["event_id"])}, late)


def test_a_backdated_ballot_counts_from_when_it_is_handled():
    state = opened()
    backdated = ballot("a", at=T0 + timedelta(seconds=1))  # claims before the deadline
    after, events = ledger.cast(state, backdated, DEADLINE + timedelta(seconds=30))
    [(name, rejected)] = events
    assert name == "BallotRejected" and rejected["reason"] == "LATE"
    assert after == state
    on_time, _ = ledger.cast(state, ballot("a", at=DEADLINE + timedelta(hours=1)), T0)
    assert on_time["ballots"] == {}  # a ballot dated after the deadline stays late


@pytest.mark.parametrize("voters, options, problem", [
    (("a", "ghost-1", "ghost-2"), None, "unknown voters: ghost-1, ghost-2"),
    (tuple(f"agent-{i}" for i in range(ledger.MAX_VOTERS + 1)), None, "over the limit"),
    (("a",), [f"option {i}" for i in range(ledger.MAX_OPTIONS + 1)], "over the limit"),
])
def test_a_proposal_with_unknown_or_too_many_voters_or_options_fails_at_once(
        voters, options, problem):
    p = proposal(voters, options=options)
    known = {"a", "b", "c", *(v for v in voters if v.startswith("agent-"))}
    state, events = ledger.open_vote(ledger.new(VOTE, 0), p, [], set(), known, T0)
    assert state["closed"] and one(valid(events), "VoteResult")["outcome"] == "FAILED"
    assert problem in one(events, "VoteResult")["reason"]
    humans, _ = ledger.open_vote(ledger.new(VOTE, 0), proposal(("a", "human:ana")), [], set(),
                                 known, T0)
    assert not humans["closed"]  # people need no registry entry


def _assert_rejected(events, request, outcome):
    assert not of(events, "ToolRequest")
    vote_id = vote_id_of(request["event_id"])
    vote = one(events, "VoteResult")
    assert vote["outcome"] == outcome
    result = one(events, "ToolResult")
    assert result["event_id"] == derived_id(request["event_id"], "result")
    assert result["request_id"] == request["event_id"] and result["status"] == "REJECTED"
    assert result["vote_id"] == vote_id and result["tool"] == "shell"
    assert result["agent_id"] == request["agent_id"] and result["channel_id"] == CHANNEL
    assert result["output"] == "" and result["started_at"] is None and result["duration_ms"] == 0
    assert result["error"] == f"the tool-usage vote ended {outcome}: {vote['reason']}"
    notices_ = [m for m in of(events, "ChatMessage") if m["metadata"]["kind"] == "tool_result"]
    assert len(notices_) == 1
    notice = notices_[0]
    assert notice["event_id"] == derived_id(request["event_id"], "notice")
    assert notice["metadata"] == {"kind": "tool_result", "tool_request_id": request["event_id"],
                                  "tool": "shell", "status": "REJECTED", "vote_id": vote_id}
    assert "was rejected by vote" in notice["text"] and vote["reason"] in notice["text"]


def test_failing_tool_vote_rejects_the_request():
    request = tool_request()
    vote_id = vote_id_of(request["event_id"])
    state, _ = tool_vote(request)
    state, produced = cast_all(state, ballot("bob", "no", vote_id=vote_id),
                               ballot("carol", "no", vote_id=vote_id))
    assert state["closed"] and state["outcome"] == "FAILED"
    _assert_rejected(produced[1], request, "FAILED")


def test_expired_tool_vote_rejects_the_request():
    request = tool_request()
    state, _ = tool_vote(request)
    state, events = ledger.close(state, DEADLINE + timedelta(seconds=2))
    _assert_rejected(valid(events), request, "EXPIRED")
    assert ledger.close(stored(state), DEADLINE + timedelta(seconds=3)) == (state, [])


def test_tool_vote_passed_on_another_option_is_still_not_run():
    """Only a "yes" runs the tool; a vote that another option won rejects it."""
    request = tool_request()
    vote_id = vote_id_of(request["event_id"])
    p = new_proposal(CHANNEL, "alice", "Run it?", vote_type="TOOL_USAGE", deadline_s=60,
                     options=["allow", "deny"], vote_id=vote_id, tool_request_id=request["event_id"])
    p = {**p, "deadline_at": DEADLINE, "created_at": T0}
    state = ledger.gate(ledger.new(vote_id, 0), request)
    state, _ = ledger.open_vote(state, p, ["bob"], {"bob"}, EVERYONE, T0)
    state, events = ledger.cast(state, ballot("bob", "allow", vote_id=vote_id), T0)
    assert one(valid(events), "VoteResult")["outcome"] == "PASSED"
    assert not of(events, "ToolRequest") and one(events, "ToolResult")["status"] == "REJECTED"


# --- permissions ------------------------------------------------------------------------------

TOOLS = catalog.load()
SHELL, CALC, TEXT = TOOLS["shell"], TOOLS["calculator"], TOOLS["text_formatter"]
POLICY = Policy(channels={
    "lobby": Rule(deny=("category:system",)),
    "ops": Rule(deny=("shell",)),
    "maths": Rule(allow=("calculator", "category:text")),
    "closed": Rule(allow=()),
    "strict": Rule(allow=("shell",), deny=("*",)),
})


def agent(**changes) -> dict:
    return {"state": "ACTIVE", "channels": ["general", "lobby", "ops", "maths", "closed", "strict"],
            "tools": ["shell", "calculator", "text_formatter"],
            "permissions": ["tool:shell", "tool:calculator", "tool:text_formatter", "vote:cast"],
            **changes}


@pytest.mark.parametrize("tool, profile, channel, expected", [
    (SHELL, None, "general", "unknown agent 'bot'"),
    (SHELL, agent(state="PAUSED"), "general", "agent 'bot' is PAUSED"),
    (SHELL, agent(state="MAINTENANCE"), "general", "agent 'bot' is MAINTENANCE"),
    (SHELL, agent(channels=["lobby"]), "general", "agent 'bot' is not a member of channel 'general'"),
    (SHELL, agent(tools=["calculator", "text_formatter"]), "general",
     "'shell' is not one of 'bot''s tools (calculator, text_formatter)"),
    (SHELL, agent(permissions=["tool:calculator"]), "general", "agent 'bot' lacks permission tool:shell"),
    (SHELL, agent(), "ops", "channel 'ops' denies 'shell'"),
    (SHELL, agent(), "lobby", "channel 'lobby' denies 'category:system'"),
    (SHELL, agent(), "maths", "channel 'maths' allows only calculator, category:text"),
    (CALC, agent(), "closed", "channel 'closed' allows only no tools"),
    (SHELL, agent(), "strict", "channel 'strict' denies '*'"),  # deny wins over allow
])
def test_denial_reasons(tool, profile, channel, expected):
    assert denial(tool, profile, "bot", channel, POLICY) == expected


@pytest.mark.parametrize("tool, profile, channel", [
    (SHELL, agent(), "general"),  # no entry: the default rule allows everything
    (SHELL, agent(state="WORKING"), "general"),
    (CALC, agent(), "lobby"),
    (CALC, agent(), "ops"),
    (CALC, agent(), "maths"),
    (TEXT, agent(), "maths"),  # allowed by category
])
def test_allowed(tool, profile, channel):
    assert denial(tool, profile, "bot", channel, POLICY) is None


def test_shipped_policy_keeps_the_shell_out_of_the_lobby():
    policy = load_policy()
    assert policy.default == Rule(allow=("*",), deny=())
    assert policy.rule("lobby").deny == ("category:system",)
    assert policy.rule("anything-else") == policy.default
    assert denial(SHELL, agent(), "bot", "lobby", policy) == "channel 'lobby' denies 'category:system'"
    assert denial(CALC, agent(), "bot", "lobby", policy) is None
    assert denial(SHELL, agent(), "bot", "general", policy) is None


def test_load_policy_defaults(tmp_path: Path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_policy(empty) == Policy()
    partial = tmp_path / "partial.yaml"
    partial.write_text("channels:\n  quiet:\n    deny: [shell]\n  open: {}\n")
    policy = load_policy(partial)
    assert policy.rule("quiet") == Rule(allow=("*",), deny=("shell",))
    assert policy.rule("open") == Rule() and policy.default == Rule()
    assert permissions.POLICIES.name == "policies.yaml"


# --- catalog -------------------------------------------------------------------------------------

ACTIONS = {"ticket.create", "ticket.update", "ticket.close", "notify"}


def test_load_gives_the_shipped_tools():
    assert set(TOOLS) == {"calculator", "chart_generator", "code_analyzer", "csv_processor",
                          "shell", "text_formatter"} | ACTIONS
    for name, tool in TOOLS.items():
        assert tool.name == name and tool.category in catalog.CATEGORIES
        if name in ACTIONS:  # Agora's own, in the worker; a ticket's idempotent by request
            assert tool.runs_in == "worker" and tool.external_effects
            assert tool.idempotent == name.startswith("ticket.")
            assert tool.entrypoint in actions.ACTIONS and tool.category == "incident"
        else:
            assert tool.entrypoint == f"streams.tools.builtin.{name}:run"
            assert tool.runs_in == "sandbox" and not tool.idempotent
        assert tool.permissions == (f"tool:{name}",)
        assert tool.needs_vote == (name in ("shell", "ticket.create", "notify"))
        assert not tool.network
        assert all(getattr(tool.limits, k) > 0 for k in catalog.LIMIT_KEYS)
        assert tool.vote_strategy in catalog.STRATEGIES and 0 <= tool.vote_quorum <= 1
        if not tool.needs_vote:
            assert (tool.vote_strategy, tool.vote_quorum) == ("SIMPLE_MAJORITY", 0.5)
        assert "\n" not in tool.description
    assert SHELL.category == "system"
    assert catalog.load() is TOOLS  # cached


@pytest.mark.parametrize("tool, args", [
    ("calculator", {"expression": "1 + 2"}),
    ("shell", {"command": "ls -la"}),
    ("csv_processor", {"csv": "a,b\n1,2", "operation": "sort", "column": "a", "limit": 5}),
    ("chart_generator", {"kind": "bar", "title": "t", "labels": ["x"], "values": [1.5]}),
])
def test_arguments_accepts_valid_json(tool, args):
    assert catalog.arguments(TOOLS[tool], json.dumps(args)) == args


@pytest.mark.parametrize("tool, text, words", [
    ("calculator", '{"expression": 5}', ["invalid expression", "not of type 'string'"]),
    ("calculator", '{"expression": ""}', ["invalid expression"]),
    ("calculator", "{}", ["'expression' is a required property"]),
    ("calculator", '{"expression": "1", "extra": 1}', ["'extra'", "not allowed"]),
    ("calculator", "[1]", ["invalid arguments", "not of type 'object'"]),
    ("calculator", "{not json", ["arguments are not JSON"]),
    ("calculator", "", ["arguments are not JSON"]),
    ("csv_processor", '{"csv": "a", "operation": "explode"}', ["invalid operation"]),
    ("csv_processor", '{"csv": "a", "operation": "head", "limit": 0}', ["invalid limit"]),
    ("chart_generator", '{"kind": "bar", "title": "t", "labels": ["x"], "values": ["y"]}',
     ["invalid values/0"]),
])
def test_arguments_rejects_with_the_field(tool, text, words):
    with pytest.raises(catalog.InvalidArguments) as caught:
        catalog.arguments(TOOLS[tool], text)
    assert isinstance(caught.value, ValueError)
    for word in words:
        assert word in str(caught.value)


def definition(**changes) -> dict:
    data = {"name": "echo", "category": "text", "description": "Says\n  it   back.",
            "entrypoint": "x:run",
            "parameters": {"type": "object", "properties": {"s": {"type": "string"}}},
            "limits": {"cpu_s": 1, "memory_mb": 64, "wall_s": 0.5, "output_kb": 1,
                       "processes": 1, "file_mb": 1, "disk_mb": 1}}
    return {**data, **changes}


def test_parse_defaults():
    tool = catalog.parse(definition())
    assert tool.description == "Says it back."
    assert tool.permissions == ("tool:echo",) and not tool.needs_vote and not tool.network
    assert tool.limits.wall_s == 0.5
    assert (tool.vote_strategy, tool.vote_quorum) == ("SIMPLE_MAJORITY", 0.5)
    voted = catalog.parse(definition(vote={"strategy": "CONSENSUS", "quorum": 1}, needs_vote=True,
                                      permissions=["a", "b"]))
    assert (voted.vote_strategy, voted.vote_quorum, voted.needs_vote) == ("CONSENSUS", 1.0, True)
    assert voted.permissions == ("a", "b")


LIMITS = definition()["limits"]


@pytest.mark.parametrize("data, words", [
    (definition(category="weather"), "category 'weather' not in"),
    ({k: v for k, v in definition().items() if k != "limits"}, "missing limits"),
    ({k: v for k, v in definition().items() if k not in ("name", "entrypoint")}, "missing entrypoint, name"),
    (definition(limits={k: v for k, v in LIMITS.items() if k != "file_mb"}), "limits need positive"),
    (definition(limits={**LIMITS, "gpus": 1}), "limits need positive"),
    (definition(limits={**LIMITS, "cpu_s": 0}), "limits need positive"),
    (definition(limits={**LIMITS, "memory_mb": -64}), "limits need positive"),
    (definition(limits={**LIMITS, "wall_s": float("nan")}), "limits need positive"),
    (definition(vote={"strategy": "RANKED_CHOICE"}), "vote strategy 'RANKED_CHOICE' not in"),
])
def test_parse_rejects(data, words):
    with pytest.raises(ValueError, match="^bad.yaml: ") as caught:
        catalog.parse(data, "bad.yaml")
    assert words in str(caught.value)


def test_parse_rejects_a_broken_parameter_schema():
    with pytest.raises(jsonschema.SchemaError):
        catalog.parse(definition(parameters={"type": "objekt"}))


def test_load_checks_the_file_name(tmp_path: Path):
    (tmp_path / "echo.yaml").write_text(yaml.safe_dump(definition()))
    assert list(catalog.load(tmp_path)) == ["echo"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "wrong.yaml").write_text(yaml.safe_dump(definition()))
    with pytest.raises(ValueError, match="differs from the file name"):
        catalog.load(other)


# --- records ------------------------------------------------------------------------------------

def test_new_request_and_its_vote_id():
    r = new_request("alice", CHANNEL, "calculator", {"expression": "1+1"}, "sum", None)
    back = roundtrip("ToolRequest", r)  # timestamps travel as milliseconds
    assert back == {**r, "requested_at": back["requested_at"]}
    assert codec.epoch_ms(back["requested_at"]) == codec.epoch_ms(r["requested_at"])
    assert json.loads(r["arguments_json"]) == {"expression": "1+1"}
    assert r["requested_at"].tzinfo is not None and r["source_message_id"] is None
    other = new_request("alice", CHANNEL, "calculator", {"expression": "1+1"}, "sum")
    assert other["event_id"] != r["event_id"]
    assert vote_id_of(r["event_id"]) == vote_id_of(r["event_id"]) == derived_id(r["event_id"], "vote")
    assert vote_id_of(r["event_id"]) != vote_id_of(other["event_id"])


def test_new_proposal_and_ballot_are_valid_records():
    before = datetime.now(timezone.utc)
    p = new_proposal(CHANNEL, "alice", "Lunch?", vote_type="PROJECT_DECISION", deadline_s=30)
    assert p["event_id"] == p["vote_id"] and p["options"] == ["yes", "no"]
    assert p["eligible_voters"] == [] and p["weights"] == {} and p["quorum"] == 0.5
    assert p["strategy"] == "SIMPLE_MAJORITY" and p["tool_request_id"] is None
    assert p["deadline_at"] - p["created_at"] == timedelta(seconds=30) and p["created_at"] >= before
    codec.encode("VoteProposal", p)
    named = new_proposal(CHANNEL, "alice", "Lunch?", vote_type="RESOURCE_ALLOCATION", deadline_s=1,
                         strategy="WEIGHTED", weights={"a": 2.0}, vote_id="v", event_id="e",
                         options=["pizza", "soup"], eligible_voters=["a", "b"])
    assert (named["vote_id"], named["event_id"]) == ("v", "e")
    codec.encode("VoteProposal", named)
    b = new_ballot("v", CHANNEL, "a", "pizza")
    assert b["rationale"] == "" and b["cast_at"].tzinfo is not None
    codec.encode("Ballot", b)
    assert new_ballot("v", CHANNEL, "a", "pizza")["event_id"] != b["event_id"]


def test_result_ids_derive_from_the_request():
    request = tool_request(tool="calculator", arguments={"expression": "1+1"})
    first = valid(result_events(request, "OK", T0, output="2"))
    again = valid(result_events(request, "OK", T0 + timedelta(seconds=5), output="2"))
    assert [n for n, _ in first] == ["ToolResult", "ChatMessage"]
    ids = [r["event_id"] for _, r in first]
    assert ids == [r["event_id"] for _, r in again]
    assert ids == [derived_id(request["event_id"], "result"), derived_id(request["event_id"], "notice")]
    other = result_events(tool_request(tool="calculator"), "OK", T0)
    assert not set(ids) & {r["event_id"] for _, r in other}
    result, notice = first[0][1], first[1][1]
    assert result["vote_id"] is None and "vote_id" not in notice["metadata"]
    assert notice["thread_id"] == notice["event_id"] and notice["author_kind"] == "SYSTEM"
    assert notice["author_id"] == "agora.tools" and notice["channel_id"] == CHANNEL


@pytest.mark.parametrize("status", ["OK", "DENIED", "REJECTED", "FAILED", "TIMEOUT"])
def test_statuses_read_as_words(status):
    request = tool_request()
    started = T0 - timedelta(seconds=2)
    events = valid(result_events(request, status, T0, output="out" if status == "OK" else "",
                                 error=None if status == "OK" else "why not",
                                 artifacts=["/runs/a.png"], vote_id="v-1", started_at=started,
                                 duration_ms=1500))
    result, notice = one(events, "ToolResult"), one(events, "ChatMessage")
    assert result["status"] == status and result["artifacts"] == ["/runs/a.png"]
    assert result["started_at"] == started and result["finished_at"] == T0
    assert result["duration_ms"] == 1500 and result["vote_id"] == "v-1"
    assert notice["text"].startswith(f'Tool shell for alice {SHOWN[status]}: {{"command": "ls -la"}}')
    assert ("Reason: why not" in notice["text"]) == (status != "OK")
    assert notice["text"].endswith("Artifact: /runs/a.png")
    assert notice["metadata"] == {"kind": "tool_result", "tool_request_id": request["event_id"],
                                  "tool": "shell", "status": status, "vote_id": "v-1"}
    assert notice["created_at"] == T0
    assert SHOWN["OK"] == "ran" and SHOWN["DENIED"] == "was denied"


def test_long_output_is_cut_in_the_notice_only():
    request = tool_request(arguments={"command": "y" * 400})
    output = "z" * (notices.MAX_TEXT * 2)
    result, notice = (r for _, r in valid(result_events(request, "OK", T0, output=output)))
    assert result["output"] == output
    assert len(notice["text"]) == notices.MAX_TEXT and notice["text"].endswith("…")
    first_line = notice["text"].split("\n")[0]
    assert first_line.endswith("…") and len(first_line) == len("Tool shell for alice ran: ") + 301


def test_system_message_cuts_at_max_text():
    exact = notices.system_message(derived_id("m"), CHANNEL, "x", "a" * notices.MAX_TEXT, T0, {})
    assert exact["text"] == "a" * notices.MAX_TEXT
    over = notices.system_message(derived_id("m"), CHANNEL, "x", "a" * (notices.MAX_TEXT + 1), T0, {},
                                  mentions=["p"])
    assert over["text"] == "a" * (notices.MAX_TEXT - 1) + "…" and over["mentions"] == ["p"]
    valid([("ChatMessage", over)])


def test_a_run_the_ledger_knows_is_published_failed_or_run_by_its_effects():
    tools = catalog.load()
    shell, calculator = tools["shell"], tools["calculator"]
    assert shell.external_effects and not calculator.external_effects
    for tool in (shell, calculator):
        assert runs.next_step(None, tool) == "run"  # never claimed
        assert runs.next_step("claimed", tool) == "run"  # claimed, never started
        assert runs.next_step("done", tool) == runs.next_step("failed", tool) == "publish"
    assert runs.next_step("running", shell) == "interrupted"  # it may have acted
    assert runs.next_step("running", calculator) == "run"  # running it again changes nothing
    reason = runs.interrupted_reason(shell, "worker-7")
    assert "worker-7" in reason and "not run a second time" in reason
    # A definition that does not say is taken to have external effects.
    data = yaml.safe_load((catalog.CATALOG / "calculator.yaml").read_text())
    del data["external_effects"]
    assert catalog.parse(data).external_effects


def test_an_oncall_agent_opens_a_sev1_ticket_without_a_vote():
    create, shell = TOOLS["ticket.create"], TOOLS["shell"]
    sev1, sev2 = {"title": "API down", "severity": "SEV1"}, {"title": "slow", "severity": "SEV2"}
    assert not catalog.needs_vote(create, "devops-oncall", sev1)
    assert catalog.needs_vote(create, "devops-oncall", sev2)  # a lesser incident: the vote
    assert catalog.needs_vote(create, "developer-backend", sev1)  # not on call: the vote
    assert catalog.needs_vote(shell, "devops-oncall", {"severity": "SEV1"})  # never exempt
    assert not catalog.needs_vote(TOOLS["calculator"], None, {})
    # An idempotent action cut off mid-run simply runs again: it finds what it did; an
    # alert may have gone out, so it is never sent twice.
    assert runs.next_step("running", create) == "run"
    assert runs.next_step("running", TOOLS["notify"]) == "interrupted"

"""Vote counting rules: thresholds, quorum, ties, weights, early close and ballot rejection.

Pure and fast: no servers. Voters are "v0".."vN"; ballots map voter -> choice.
"""

from __future__ import annotations

import itertools
import math
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streams.domain.votes.tally import (
    ABSTAIN,
    STRATEGIES,
    Outcome,
    doomed,
    judge_ballot,
    settled,
    tally,
)

DEADLINE = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
YES_NO = ("yes", "no")
ABC = ("a", "b", "c")
FAST = settings(max_examples=150, deadline=None)
UNWEIGHTED = ("SIMPLE_MAJORITY", "QUALIFIED_MAJORITY", "CONSENSUS")


def proposal(strategy="SIMPLE_MAJORITY", options=YES_NO, voters=5, quorum=0.0, weights=None) -> dict:
    return {
        "event_id": "e-1",
        "vote_id": "vote-1",
        "channel_id": "c-general",
        "proposer_id": "alice",
        "vote_type": "PROJECT_DECISION",
        "strategy": strategy,
        "title": "Ship it?",
        "description": "",
        "options": list(options),
        "eligible_voters": [f"v{i}" for i in range(voters)],
        "weights": dict(weights or {}),
        "quorum": quorum,
        "deadline_at": DEADLINE,
        "created_at": DEADLINE - timedelta(hours=1),
        "tool_request_id": None,
    }


def cast(*choices: str) -> dict[str, str]:
    return {f"v{i}": c for i, c in enumerate(choices)}


def counts(**n: int) -> list[str]:
    return [c for c, k in n.items() for _ in range(k)]


def result(p: dict, b: dict) -> tuple[str, str | None]:
    o = tally(p, b)
    return o.outcome, o.winning_option


@st.composite
def decisive_votes(draw, options=YES_NO, max_size=12):
    """A non-empty list of choices with at least one decisive ballot."""
    choices = draw(st.lists(st.sampled_from((*options, ABSTAIN)), min_size=1, max_size=max_size))
    assume(any(c != ABSTAIN for c in choices))
    return choices


# --- thresholds ---------------------------------------------------------------------------


@FAST
@given(yes=st.integers(0, 15), no=st.integers(0, 15), abstain=st.integers(0, 5))
def test_simple_majority_passes_iff_more_than_half(yes, no, abstain):
    assume(yes + no > 0)
    choices = counts(yes=yes, no=no, abstain=abstain)
    got = result(proposal(voters=len(choices)), cast(*choices))
    if 2 * yes > yes + no:
        assert got == ("PASSED", "yes")
    elif yes == no:
        assert got == ("TIED", None)
    else:  # "no" won: the proposal is rejected
        assert got == ("FAILED", None)


@FAST
@given(yes=st.integers(0, 15), no=st.integers(0, 15), abstain=st.integers(0, 5))
def test_qualified_majority_passes_iff_two_thirds(yes, no, abstain):
    assume(yes + no > 0)
    choices = counts(yes=yes, no=no, abstain=abstain)
    got = result(proposal("QUALIFIED_MAJORITY", voters=len(choices)), cast(*choices))
    if yes == no:
        assert got == ("TIED", None)
    else:
        assert (got == ("PASSED", "yes")) == (3 * yes >= 2 * (yes + no))


@pytest.mark.parametrize(
    "yes,no,outcome",
    [(2, 1, "PASSED"), (3, 2, "FAILED"), (4, 2, "PASSED"), (6, 4, "FAILED"), (7, 3, "PASSED")],
)
def test_qualified_majority_boundaries(yes, no, outcome):
    choices = counts(yes=yes, no=no)
    assert tally(proposal("QUALIFIED_MAJORITY", voters=len(choices)), cast(*choices)).outcome == outcome


def test_simple_majority_boundaries():
    assert result(proposal(voters=5), cast(*counts(yes=3, no=2))) == ("PASSED", "yes")
    assert result(proposal(options=ABC, voters=4), cast("a", "a", "b", "c")) == ("FAILED", None)  # 50% is not more


@FAST
@given(choices=decisive_votes(ABC))
def test_consensus_passes_iff_unanimous(choices):
    got = result(proposal("CONSENSUS", ABC, voters=len(choices)), cast(*choices))
    picked = {c for c in choices if c != ABSTAIN}
    assert got == (("PASSED", picked.pop()) if len(picked) == 1 else ("FAILED", None))


@FAST
@given(choices=decisive_votes(ABC), strategy=st.sampled_from(("SIMPLE_MAJORITY", "QUALIFIED_MAJORITY", "WEIGHTED")))
def test_multi_option_leader_and_ties(choices, strategy):
    n = [choices.count(o) for o in ABC]
    top, total = max(n), sum(n)
    got = result(proposal(strategy, ABC, voters=len(choices)), cast(*choices))
    if n.count(top) > 1:
        assert got == ("TIED", None)
    elif (3 * top >= 2 * total) if strategy == "QUALIFIED_MAJORITY" else (2 * top > total):
        assert got == ("PASSED", ABC[n.index(top)])
    else:
        assert got == ("FAILED", None)


def test_unknown_strategy_counts_as_consensus():
    p = proposal("RANKED_CHOICE", voters=3)
    assert result(p, cast("yes", "yes", "no")) == ("FAILED", None)
    assert result(p, cast("yes", "yes", "abstain")) == ("PASSED", "yes")


# --- quorum -------------------------------------------------------------------------------

QUORUMS = ["0", "0.1", "0.25", "0.3", "0.5", "0.6", "0.7", "0.9", "1"]


@FAST
@given(q=st.sampled_from(QUORUMS), eligible=st.integers(1, 20), data=st.data())
def test_quorum_is_ceil_of_exact_fraction(q, eligible, data):
    need = max(1, math.ceil(Fraction(q) * eligible))  # the decimal as written: 0.9 of 10 needs 9
    voted = data.draw(st.integers(1, eligible))
    p = proposal(voters=eligible, quorum=float(q))
    got = tally(p, cast(*["yes"] * voted))
    assert got.outcome == ("NO_QUORUM" if voted < need else "PASSED")
    assert got.eligible_count == eligible and got.ballots_counted == voted


@pytest.mark.parametrize(
    "quorum,eligible,need",
    [(0.1, 10, 1), (0.9, 10, 9), (2 / 3, 3, 2), (0.5, 5, 3), (0.0, 7, 1), (1.0, 4, 4), (1.5, 4, 4), (-1.0, 4, 1),
     (float("nan"), 3, 3)],
)
def test_quorum_examples(quorum, eligible, need):
    p = proposal(voters=eligible, quorum=quorum)
    assert tally(p, cast(*["yes"] * (need - 1))).outcome in ("NO_QUORUM", "EXPIRED")
    assert tally(p, cast(*["yes"] * need)).outcome == "PASSED"


def test_no_quorum_reason_gives_numbers():
    got = tally(proposal(voters=10, quorum=0.5), cast("yes", "abstain"))
    assert got.outcome == "NO_QUORUM"
    assert "2 of 10" in got.reason and "needs 5" in got.reason


def test_abstentions_count_for_quorum():
    p = proposal(voters=4, quorum=0.75)
    assert result(p, cast("yes", "abstain")) == ("NO_QUORUM", None)
    assert result(p, cast("yes", "abstain", "abstain")) == ("PASSED", "yes")


# --- ties, abstentions, special outcomes ------------------------------------------------


@FAST
@given(k=st.integers(1, 8), strategy=st.sampled_from(("SIMPLE_MAJORITY", "QUALIFIED_MAJORITY", "WEIGHTED")))
def test_even_split_ties(k, strategy):
    got = tally(proposal(strategy, voters=2 * k), cast(*counts(yes=k, no=k)))
    assert (got.outcome, got.winning_option) == ("TIED", None)
    assert "yes and no" in got.reason


def test_consensus_disagreement_fails_not_ties():
    got = tally(proposal("CONSENSUS", voters=4), cast("yes", "yes", "no", "no"))
    assert (got.outcome, got.winning_option) == ("FAILED", None)
    assert "2 of 4 disagreed" in got.reason


@FAST
@given(
    choices=decisive_votes(ABC),
    extra=st.integers(1, 6),
    strategy=st.sampled_from(STRATEGIES),
    options=st.sampled_from((YES_NO, ABC)),
)
def test_abstentions_never_change_the_winner(choices, extra, strategy, options):
    choices = [c if c in options or c == ABSTAIN else options[0] for c in choices]
    assume(any(c != ABSTAIN for c in choices))
    p = proposal(strategy, options, voters=len(choices) + extra, quorum=0.0)
    assert result(p, cast(*choices)) == result(p, cast(*choices, *[ABSTAIN] * extra))


def test_no_ballots_expire():
    got = tally(proposal(voters=3), {})
    assert (got.outcome, got.winning_option, got.ballots_counted) == ("EXPIRED", None, 0)
    assert got.tally == {"yes": 0.0, "no": 0.0, ABSTAIN: 0.0}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_everyone_abstained_fails(strategy):
    got = tally(proposal(strategy, voters=3), cast(ABSTAIN, ABSTAIN))
    assert (got.outcome, got.winning_option) == ("FAILED", None)
    assert "abstained" in got.reason


def test_no_majority_rejects_yes_no_question():
    got = tally(proposal(voters=4), cast("no", "no", "no", "yes"))
    assert (got.outcome, got.winning_option) == ("FAILED", None)
    assert "no won" in got.reason


def test_multi_option_pass_carries_the_option():
    got = tally(proposal(options=("postgres", "mysql", "sqlite"), voters=4), cast("mysql", "mysql", "mysql", "sqlite"))
    assert (got.outcome, got.winning_option) == ("PASSED", "mysql")


def test_empty_options_mean_yes_no():
    got = tally(proposal(options=(), voters=3), cast("yes", "yes", "no"))
    assert (got.outcome, got.winning_option) == ("PASSED", "yes")
    assert set(got.tally) == {"yes", "no", ABSTAIN}


def test_example_reason():
    got = tally(proposal(voters=4, quorum=0.5), cast("yes", "yes", "yes"))
    assert got.reason == (
        "passed: yes has 3 of 3 decisive ballots (100%), more than the 50% a simple majority needs; "
        "3 of 4 eligible voted (quorum 2)"
    )


@FAST
@given(
    choices=st.lists(st.sampled_from((*ABC, ABSTAIN)), max_size=12),
    strategy=st.sampled_from(UNWEIGHTED),
)
def test_tally_map_has_every_option_and_sums_to_ballots(choices, strategy):
    got = tally(proposal(strategy, ABC, voters=len(choices)), cast(*choices))
    assert set(got.tally) == {*ABC, ABSTAIN}
    assert sum(got.tally.values()) == got.ballots_counted == len(choices)
    assert all(got.tally[c] == choices.count(c) for c in (*ABC, ABSTAIN))


# --- weights ------------------------------------------------------------------------------


@FAST
@given(
    choices=decisive_votes(ABC),
    w=st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False),
    explicit=st.booleans(),
)
def test_equal_weights_match_simple_majority(choices, w, explicit):
    voters = len(choices)
    weights = {f"v{i}": w for i in range(voters)} if explicit else {}  # missing weighs 1.0
    weighted = result(proposal("WEIGHTED", ABC, voters, weights=weights), cast(*choices))
    assert weighted == result(proposal("SIMPLE_MAJORITY", ABC, voters), cast(*choices))


def test_heavy_voter_carries_the_vote():
    p = proposal("WEIGHTED", voters=6, weights={"v0": 10.0})
    got = tally(p, cast("yes", "no", "no", "no", "no", "no"))
    assert (got.outcome, got.winning_option) == ("PASSED", "yes")
    assert got.tally == {"yes": 10.0, "no": 5.0, ABSTAIN: 0.0}


def test_missing_weight_counts_one():
    p = proposal("WEIGHTED", voters=3, weights={"v0": 2.0})
    assert result(p, cast("yes", "no", "no")) == ("TIED", None)
    assert tally(p, cast("yes", "no", ABSTAIN)).tally == {"yes": 2.0, "no": 1.0, ABSTAIN: 1.0}


@pytest.mark.parametrize("bad", [0.0, -3.0, float("nan"), float("inf"), float("-inf")])
def test_zero_negative_and_nonfinite_weights_count_nothing(bad):
    p = proposal("WEIGHTED", voters=3, weights={"v0": bad, "v1": bad})
    assert result(p, cast("no", "no", "yes")) == ("PASSED", "yes")
    got = tally(p, cast("no", "no"))
    assert (got.outcome, got.winning_option) == ("FAILED", None) and "no weight" in got.reason


def test_weights_compare_with_tolerance():
    p = proposal("WEIGHTED", voters=3, weights={"v0": 0.1, "v1": 0.2, "v2": 0.3})
    assert result(p, cast("yes", "yes", "no")) == ("TIED", None)


# --- ordering and invariance --------------------------------------------------------------


@FAST
@given(choices=decisive_votes(YES_NO), options=st.sampled_from((YES_NO, ABC)))
def test_strictness_ordering(choices, options):
    choices = [c if c in options or c == ABSTAIN else options[0] for c in choices]
    passed = {
        s: tally(proposal(s, options, len(choices)), cast(*choices)).outcome == "PASSED" for s in UNWEIGHTED
    }
    assert passed["CONSENSUS"] <= passed["QUALIFIED_MAJORITY"] <= passed["SIMPLE_MAJORITY"]


@FAST
@given(
    choices=st.lists(st.sampled_from((*ABC, ABSTAIN)), max_size=10),
    strategy=st.sampled_from(STRATEGIES),
    weights=st.lists(st.floats(0, 100, allow_nan=False), min_size=10, max_size=10),
    data=st.data(),
)
def test_ballot_order_does_not_matter(choices, strategy, weights, data):
    p = proposal(strategy, ABC, voters=10, quorum=0.3, weights={f"v{i}": w for i, w in enumerate(weights)})
    ballots = cast(*choices)
    shuffled = dict(data.draw(st.permutations(list(ballots.items()))))
    assert tally(p, shuffled) == tally(p, ballots)


# --- settled ------------------------------------------------------------------------------


@st.composite
def open_votes(draw):
    """A proposal with 1..6 eligible voters and the ballots of some of them."""
    strategy = draw(st.sampled_from(STRATEGIES))
    options = draw(st.sampled_from((YES_NO, ABC, ("a",))))
    voters = draw(st.integers(1, 6))
    weights = draw(st.lists(st.sampled_from((0.0, 0.5, 1.0, 2.0, 3.0)), min_size=voters, max_size=voters))
    quorum = draw(st.sampled_from((0.0, 0.25, 0.5, 2 / 3, 1.0)))
    p = proposal(strategy, options, voters, quorum, {f"v{i}": w for i, w in enumerate(weights)})
    picks = draw(st.lists(st.sampled_from((*options, ABSTAIN, None)), min_size=voters, max_size=voters))
    return p, {f"v{i}": c for i, c in enumerate(picks) if c is not None}


def completions(p: dict, ballots: dict):
    """Every way the voters yet to vote can act: an option, abstain, or stay away (None)."""
    left = [v for v in p["eligible_voters"] if v not in ballots]
    for picks in itertools.product((*p["options"], ABSTAIN, None), repeat=len(left)):
        yield {**ballots, **{v: c for v, c in zip(left, picks) if c is not None}}


@settings(max_examples=300, deadline=None)
@given(vote=open_votes())
def test_settled_matches_brute_force(vote):
    p, ballots = vote
    early = settled(p, ballots)
    finals = {result(p, b) for b in completions(p, ballots)}
    if early is None:
        assert len(finals) > 1
    else:
        assert early == tally(p, ballots)
        assert finals == {(early.outcome, early.winning_option)}


@FAST
@given(vote=open_votes(), data=st.data())
def test_settled_outcome_survives_random_completions(vote, data):
    p, ballots = vote
    early = settled(p, ballots)
    assume(early is not None)
    for _ in range(5):
        rest = {
            v: c
            for v in p["eligible_voters"]
            if v not in ballots and (c := data.draw(st.sampled_from((*p["options"], ABSTAIN, None)))) is not None
        }
        assert result(p, {**ballots, **rest}) == (early.outcome, early.winning_option)


@FAST
@given(vote=open_votes(), data=st.data())
def test_settled_when_all_voted_is_tally(vote, data):
    p, ballots = vote
    everyone = {v: ballots.get(v) or data.draw(st.sampled_from((*p["options"], ABSTAIN))) for v in p["eligible_voters"]}
    assert settled(p, everyone) == tally(p, everyone)


def test_settled_examples():
    p = proposal(voters=3, quorum=0.5)
    assert settled(p, cast("yes")) is None  # two more "no" would reject it
    assert settled(p, {}) is None
    got = settled(proposal(voters=5, quorum=0.5), cast("yes", "yes", "yes"))
    assert isinstance(got, Outcome) and (got.outcome, got.winning_option) == ("PASSED", "yes")
    # one "no" already sinks a consensus vote, whatever the others do
    assert settled(proposal("CONSENSUS", voters=5), cast("yes", "no")).outcome == "FAILED"


def test_settled_handles_many_voters_quickly():
    p = proposal(voters=150, quorum=0.5)
    assert settled(p, cast(*["yes"] * 76)).winning_option == "yes"
    assert settled(p, cast(*["yes"] * 75)) is None


# --- judge_ballot -------------------------------------------------------------------------


def ballot(voter="v0", choice="yes", at=DEADLINE - timedelta(minutes=1)) -> dict:
    return {
        "event_id": "b-1",
        "vote_id": "vote-1",
        "channel_id": "c-general",
        "voter_id": voter,
        "choice": choice,
        "rationale": "",
        "cast_at": at,
    }


def reason(p, counted, closed, b) -> str | None:
    got = judge_ballot(p, counted, closed, b)
    return got and got[0]


def test_judge_ballot_reasons_in_priority_order():
    p = proposal(voters=3)
    late, stranger, bad = DEADLINE + timedelta(seconds=1), "mallory", "maybe"
    counted = {"v0": "no", "mallory": "no"}
    assert reason(None, counted, True, ballot(stranger, bad, late)) == "UNKNOWN_VOTE"
    assert reason(p, counted, True, {**ballot(), "channel_id": "c-other"}) == "UNKNOWN_VOTE"
    assert reason(p, counted, True, ballot("v1")) == "LATE"  # closed, even before the deadline
    assert reason(p, counted, False, ballot(stranger, bad, late)) == "LATE"
    assert reason(p, counted, False, ballot(stranger, bad)) == "INELIGIBLE"
    assert reason(p, counted, False, ballot("v0", bad)) == "INVALID_CHOICE"
    assert reason(p, counted, False, ballot("v0")) == "DUPLICATE"
    assert reason(p, counted, False, ballot("v1")) is None


def test_judge_ballot_accepts_abstain_and_deadline_itself():
    p = proposal(voters=2)
    assert judge_ballot(p, {}, False, ballot(choice=ABSTAIN, at=DEADLINE)) is None
    assert judge_ballot(proposal(options=(), voters=2), {}, False, ballot(choice="no")) is None


def test_judge_ballot_details_explain():
    p = proposal(options=ABC, voters=2)
    assert "2025-01-01 12:00:00 UTC" in judge_ballot(p, {}, False, ballot(choice="a", at=DEADLINE + timedelta(1)))[1]
    assert "a, b, c or abstain" in judge_ballot(p, {}, False, ballot(choice="d"))[1]
    assert "'b'" in judge_ballot(p, {"v0": "b"}, False, ballot(choice="a"))[1]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_doomed_means_no_completion_passes(data):
    strategy = data.draw(st.sampled_from(STRATEGIES))
    voters = [f"v{i}" for i in range(data.draw(st.integers(1, 5)))]
    proposal = {"strategy": strategy, "options": ["yes", "no"], "eligible_voters": voters,
                "quorum": data.draw(st.sampled_from([0.0, 0.5, 0.66, 1.0])),
                "weights": {v: data.draw(st.sampled_from([0.5, 1.0, 2.0])) for v in voters}}
    cast = data.draw(st.lists(st.sampled_from(voters), unique=True))
    ballots = {v: data.draw(st.sampled_from(["yes", "no", "abstain"])) for v in cast}
    verdict = doomed(proposal, ballots)
    rest = [v for v in voters if v not in ballots]
    for _ in range(20):
        final = dict(ballots)
        for v in rest:
            choice = data.draw(st.sampled_from(["yes", "no", "abstain", None]))
            if choice:
                final[v] = choice
        if verdict is not None:
            assert tally(proposal, final).outcome != "PASSED"
            assert verdict.outcome == "FAILED" and "can no longer pass" in verdict.reason


def test_one_no_dooms_a_consensus_early():
    proposal = {"strategy": "CONSENSUS", "options": ["yes", "no"],
                "eligible_voters": ["a", "b", "c"], "quorum": 1.0}
    assert settled(proposal, {"a": "yes", "b": "no"}) is None  # NO_QUORUM or FAILED yet
    verdict = doomed(proposal, {"a": "yes", "b": "no"})
    assert verdict is not None and verdict.outcome == "FAILED"
    assert doomed(proposal, {"a": "yes", "b": "yes"}) is None

"""How a vote is counted, when it can close early, and why a ballot is not counted.

Records are plain dicts shaped like the Avro records VoteProposal and Ballot; the
result fields match VoteResult and the rejection reasons match BallotRejected.
`ballots` maps voter_id -> choice for the ballots already admitted (one per eligible
voter, each an option or "abstain").

Options: the proposal's options, or ["yes", "no"] when it lists none; "abstain" is
always allowed besides them. The count (`tally`) at close goes in this order:

1. No ballot at all -> EXPIRED.
2. Quorum: the ballots cast, abstentions included, must be at least
   ceil(quorum * eligible voters) and at least 1, else NO_QUORUM. The quorum is
   clamped to [0, 1] (NaN counts as 1) and read as the decimal it prints as, so
   0.1 of 10 voters needs 1 ballot, not 2.
3. Decisive ballots are the non-abstaining ones; shares are of decisive ballots
   only, so abstaining never helps or hurts an option. None decisive -> FAILED.
4. By strategy (an unknown strategy counts as CONSENSUS, the strictest):
   - SIMPLE_MAJORITY: the leading option needs more than half.
   - QUALIFIED_MAJORITY: the leading option needs at least two thirds.
   - WEIGHTED: more than half of the decisive weight; a voter weighs
     proposal["weights"][voter], 1.0 when missing, 0.0 when negative, NaN or
     infinite. No decisive weight -> FAILED. Weights are compared with a relative
     tolerance of 1e-9, so 0.1 + 0.2 ties with 0.3.
   - CONSENSUS: every decisive ballot must pick the same option, else FAILED.
   For the first three, two leading options with equal count (or weight) -> TIED.
   A leader without the needed share -> FAILED. Otherwise PASSED with the leader as
   winning option, except on a yes/no question (options exactly yes and no), where a
   winning "no" rejects the proposal: FAILED, no winning option.

The tally map has every option and "abstain" (counts, or weights for WEIGHTED).

`settled` closes a vote early: it returns the current tally when every way the
voters who have not voted yet could still act (any option, abstain, or not vote)
ends with the same outcome and winning option; otherwise None. It enumerates those
ways exactly and gives up (None: wait for the deadline) past SETTLE_BUDGET cases.
`doomed` closes it early as FAILED when none of those ways passes (one "no" under
CONSENSUS, say), so a request gated by the vote is rejected at once.

`judge_ballot` says why a ballot is not counted, checking in this order:
UNKNOWN_VOTE (no such vote, or the ballot names another channel), LATE (vote closed,
or cast after the deadline), INELIGIBLE, INVALID_CHOICE, DUPLICATE (the voter already
has a counted ballot); None counts it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from itertools import product
from typing import Mapping

from schemas.events import RejectReason, VoteOutcome

ABSTAIN = "abstain"
STRATEGIES = ("SIMPLE_MAJORITY", "QUALIFIED_MAJORITY", "CONSENSUS", "WEIGHTED")
YES_NO = ("yes", "no")
WEIGHT_TOLERANCE = Fraction(1, 10**9)  # relative: float weights are rarely exact decimals
SETTLE_BUDGET = 20_000  # most completions settled() enumerates before it waits for the deadline


@dataclass(frozen=True)
class Outcome:
    outcome: VoteOutcome
    winning_option: str | None
    tally: dict[str, float]  # every option and "abstain", counted (weights for WEIGHTED)
    ballots_counted: int  # valid ballots incl. abstentions
    eligible_count: int
    reason: str  # one human-readable sentence shown in the chat channel


def options_of(proposal: dict) -> tuple[str, ...]:
    """The proposal's distinct options in order; "abstain" is never one (it is always allowed)."""
    opts = tuple(dict.fromkeys(o for o in proposal.get("options") or () if o != ABSTAIN))
    return opts or YES_NO


@dataclass(frozen=True)
class _Rules:
    strategy: str
    options: tuple[str, ...]
    eligible: tuple[str, ...]
    quorum: Fraction
    need: int  # ballots needed for quorum
    weights: Mapping[str, float]

    @classmethod
    def of(cls, proposal: dict) -> _Rules:
        strategy = proposal.get("strategy")
        eligible = tuple(dict.fromkeys(proposal.get("eligible_voters") or ()))
        q = proposal.get("quorum", 1.0)
        q = 1.0 if q != q else min(max(float(q), 0.0), 1.0)  # NaN: strictest
        quorum = Fraction(repr(q))  # the decimal the user wrote: Fraction(0.9) * 10 > 9
        return cls(
            strategy=strategy if strategy in STRATEGIES else "CONSENSUS",
            options=options_of(proposal),
            eligible=eligible,
            quorum=quorum,
            need=max(1, math.ceil(quorum * len(eligible))),
            weights=proposal.get("weights") or {},
        )

    @property
    def weighted(self) -> bool:
        return self.strategy == "WEIGHTED"

    def weight(self, voter: str) -> int | Fraction:
        # Exact Fractions: sums neither overflow nor depend on ballot order.
        if not self.weighted:
            return 1
        w = self.weights.get(voter, 1.0)
        return Fraction(w) if math.isfinite(w) and w > 0 else 0

    def decide(self, votes: list, decisive: int) -> tuple[VoteOutcome, str | None, str]:
        """(outcome, winner, reason) from per-option counts/weights, quorum already met."""
        if decisive == 0:
            return "FAILED", None, "failed: everyone abstained, so no option was chosen"
        total = sum(votes)
        if total == 0:
            return "FAILED", None, f"failed: the {decisive} decisive ballots carry no weight, so no option can win"
        order = sorted(range(len(votes)), key=lambda i: -votes[i])  # stable: option order breaks ties
        lead, name = votes[order[0]], self.options[order[0]]
        second = votes[order[1]] if len(order) > 1 else 0
        unit = "decisive weight" if self.weighted else "decisive ballots"
        share = f"{_num(lead)} of {_num(total)} {unit} ({_pct(lead / total)})"
        if self.strategy == "CONSENSUS":
            if lead != total:
                return "FAILED", None, (
                    f"failed: consensus needs every decisive ballot on one option, "
                    f"but {total - lead} of {total} disagreed with the leading option, {name}"
                )
            rule = "as consensus needs"
        else:
            tol = total * WEIGHT_TOLERANCE if self.weighted else 0
            if lead - second <= tol:
                tied = [o for o, x in zip(self.options, votes) if lead - x <= tol]
                return "TIED", None, f"tied: {_and(tied)} each have {share}"
            if self.strategy == "QUALIFIED_MAJORITY":
                ok, rule = 3 * lead >= 2 * total, "the two thirds a qualified majority needs"
                rule = ("at least " if ok else "less than ") + rule
            else:
                ok = 2 * lead - total > 2 * tol
                kind = "weighted" if self.weighted else "simple"
                rule = ("more than" if ok else "not more than") + f" the 50% a {kind} majority needs"
            if not ok:
                return "FAILED", None, f"failed: the leading option, {name}, has {share}, {rule}"
        if name == "no" and set(self.options) == set(YES_NO):
            return "FAILED", None, f"failed: no won with {share}, so the proposal was rejected"
        return "PASSED", name, f"passed: {name} has {share}, {rule}"


def tally(proposal: dict, ballots: Mapping[str, str]) -> Outcome:
    """The final count of the admitted ballots (see the module docstring)."""
    rules = _Rules.of(proposal)
    index = {o: i for i, o in enumerate(rules.options)}
    votes: list = [0] * len(rules.options)
    abstained: int | Fraction = 0
    decisive = 0
    for voter, choice in ballots.items():
        w = rules.weight(voter)
        if choice in index:
            votes[index[choice]] += w
            decisive += 1
        else:  # abstain (an unknown choice is never admitted; if one is, it decides nothing)
            abstained += w
    counted, eligible = len(ballots), len(rules.eligible)
    turnout = f"{counted} of {eligible} eligible voted (quorum {rules.need})"
    outcome: VoteOutcome
    if counted == 0:
        outcome, winner, reason = "EXPIRED", None, f"expired: no ballot was cast before the vote closed; {turnout}"
    elif counted < rules.need:
        outcome, winner, reason = "NO_QUORUM", None, (
            f"no quorum: only {counted} of {eligible} eligible voted (abstentions included), "
            f"but a quorum of {_pct(rules.quorum)} needs {rules.need}"
        )
    else:
        outcome, winner, reason = rules.decide(votes, decisive)
        reason = f"{reason}; {turnout}"
    table = {o: _float(x) for o, x in zip(rules.options, votes)} | {ABSTAIN: _float(abstained)}
    return Outcome(outcome, winner, table, counted, eligible, reason)


def possible_outcomes(proposal: dict, ballots: Mapping[str, str]) -> set[tuple[str, str | None]] | None:
    """Every (outcome, winner) the vote can still end with, whatever the voters yet to vote
    do (any option, abstain, or not vote); None when there are too many cases to check."""
    rules = _Rules.of(proposal)
    remaining = [v for v in rules.eligible if v not in ballots]
    if not remaining:
        now = tally(proposal, ballots)
        return {(now.outcome, now.winning_option)}
    m = len(rules.options)
    # Voters of equal weight are interchangeable: enumerate how many of each weight go to
    # each option or to neither (abstain and absent differ only in the ballot count, covered below).
    groups = Counter(rules.weight(v) for v in remaining)
    if math.prod(math.comb(n + m, m) for n in groups.values()) > SETTLE_BUDGET:
        return None
    index = {o: i for i, o in enumerate(rules.options)}
    base: list = [0] * m
    for voter, choice in ballots.items():
        if choice in index:
            base[index[choice]] += rules.weight(voter)
    base_decisive = sum(c in index for c in ballots.values())
    found: set[tuple[str, str | None]] = set()
    splits = [[(w, c) for c in _compositions(n, m + 1)] for w, n in groups.items()]
    for combo in product(*splits):
        votes, added = list(base), 0
        for w, c in combo:
            for i in range(m):
                votes[i] += c[i] * w
            added += sum(c[:m])
        # The others abstain or stay away: any ballot count from lo to hi is reachable.
        lo, hi = len(ballots) + added, len(ballots) + len(remaining)
        if lo == 0:
            found.add(("EXPIRED", None))
        if max(lo, 1) < rules.need:
            found.add(("NO_QUORUM", None))
        if hi >= rules.need:
            found.add(rules.decide(votes, base_decisive + added)[:2])
    return found


def settled(proposal: dict, ballots: Mapping[str, str]) -> Outcome | None:
    """tally(proposal, ballots) if nothing the voters yet to vote do can change its outcome and
    winner; else None (also when there are too many possibilities to check)."""
    now = tally(proposal, ballots)
    return now if possible_outcomes(proposal, ballots) == {(now.outcome, now.winning_option)} \
        else None


def doomed(proposal: dict, ballots: Mapping[str, str]) -> Outcome | None:
    """A FAILED outcome when the vote can no longer pass, whatever happens before its
    deadline (for example one "no" under CONSENSUS); else None."""
    possible = possible_outcomes(proposal, ballots)
    if possible is None or any(outcome == "PASSED" for outcome, _ in possible):
        return None
    now = tally(proposal, ballots)
    left = now.eligible_count - now.ballots_counted
    reason = (f"failed: it can no longer pass, whatever the {left} voter"
              f"{'s' if left != 1 else ''} yet to vote do; so far {now.reason}")
    return Outcome("FAILED", None, now.tally, now.ballots_counted, now.eligible_count, reason)


def judge_ballot(
    proposal: dict | None, counted: Mapping[str, str], closed: bool, ballot: dict
) -> tuple[RejectReason, str] | None:
    """(RejectReason, detail for the voter) when the ballot is not counted; None when it is."""
    if proposal is None:
        return "UNKNOWN_VOTE", f"There is no open vote {ballot['vote_id']}, so your ballot was not counted."
    if ballot["channel_id"] != proposal["channel_id"]:
        # Ballots from the gateway name the channel their caller may use: a vote of
        # another channel does not exist for it.
        return "UNKNOWN_VOTE", (f"There is no vote {ballot['vote_id']} in channel "
                                f"{ballot['channel_id']}, so your ballot was not counted.")
    deadline = _when(proposal["deadline_at"])
    if closed:
        return "LATE", f"The vote had already closed (deadline {deadline}), so your ballot was not counted."
    if ballot["cast_at"] > proposal["deadline_at"]:
        return "LATE", (
            f"Your ballot was cast at {_when(ballot['cast_at'])}, after the vote's deadline "
            f"of {deadline}, so it was not counted."
        )
    voter, choice = ballot["voter_id"], ballot["choice"]
    if voter not in (proposal.get("eligible_voters") or ()):
        return "INELIGIBLE", "You are not one of this vote's eligible voters, so your ballot was not counted."
    allowed = options_of(proposal)
    if choice != ABSTAIN and choice not in allowed:
        return "INVALID_CHOICE", (
            f"'{choice}' is not a choice in this vote; pick one of: {', '.join(allowed)} or {ABSTAIN}."
        )
    if voter in counted:
        return "DUPLICATE", (
            f"You already have a counted ballot ('{counted[voter]}') in this vote; "
            f"only your first valid ballot counts."
        )
    return None


def _compositions(n: int, k: int):
    """Every way to put n interchangeable voters into k buckets, as k-tuples of counts."""
    if k == 1:
        yield (n,)
        return
    for i in range(n + 1):
        for rest in _compositions(n - i, k - 1):
            yield (i, *rest)


def _float(x) -> float:
    try:
        return float(x)
    except OverflowError:  # a sum of huge weights; Avro doubles hold inf
        return math.inf


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{_float(x):g}"


def _pct(x) -> str:
    return f"{_float(x) * 100:.1f}".rstrip("0").rstrip(".") + "%"


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _when(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

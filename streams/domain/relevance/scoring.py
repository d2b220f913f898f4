"""Relevance engine decision logic: which agents should answer a chat message, and why.

Pure functions over plain data. The Faust agent at the edge gathers the message (with its
embedding), the registry's agents and the channel state into `Message` and `Candidate`
values, calls `decide`, and publishes the resulting `Decision` as a RelevanceDecision
event. Nothing here does I/O except `load_config`, which reads one YAML file.

Every eligible agent (allowed in the channel, ACTIVE or WORKING, not the author) is scored
on five factors in [0,1]:

- expertise: cosine of the message embedding with the agent's expertise vector (the mean
             of its expertise sentence and its template's example messages), plus a share
             of the message's distinctive words found in those texts (IDF over the pool);
- workload:  1 for an idle agent, falling linearly to 0 at `workload_saturation` open tasks;
- social:    mentioned (1), replied to (0.8), recently exchanged with the author (0.5);
- timing:    0 right after the agent spoke in the channel, back to 1 after 4 cool-downs;
- quality:   the agent's running performance score.

The score is the weighted mean of the factors. Mentioned agents are always selected;
otherwise agents outside their cool-down with a score at or above the threshold are
selected, best first, up to `top_k` per message. Each score carries a one-sentence reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ELIGIBLE_STATES",
    "Candidate",
    "Decision",
    "Factors",
    "Message",
    "RelevanceConfig",
    "Score",
    "Weights",
    "decide",
    "eligible",
    "expertise_factor",
    "load_config",
    "quality_factor",
    "social_factor",
    "timing_factor",
    "words",
    "workload_factor",
]

#: The config shipped beside this module.
DEFAULT_CONFIG_PATH = Path(__file__).with_name("config.yaml")

#: Lifecycle states in which an agent takes new messages. WORKING agents are busy but
#: available; the workload factor, not eligibility, makes them less likely to be picked.
ELIGIBLE_STATES = frozenset({"ACTIVE", "WORKING"})

#: Social factor values, strongest signal first.
SOCIAL_MENTIONED = 1.0
SOCIAL_REPLIED_TO = 0.8
SOCIAL_RECENT_EXCHANGE = 0.5

#: The timing factor climbs back from 0 to 1 over this many cool-down periods, so an agent
#: that just left its cool-down still yields to agents that have been quiet for longer.
TIMING_RECOVERY_COOLDOWNS = 4.0

_FACTOR_NAMES = ("expertise", "workload", "social", "timing", "quality")
# Words that say nothing about a topic, in English and French (the seeds' workspace).
_STOPWORDS = frozenset("""
a about after all an and any are as at be been before but by can could do does for from
had has have how i if in into is it its just me more most my no not of on or our should so
some than that the their then there this to us was we were what when where which who why
will with would you your
au aux avec c ce ces cette d dans de des du elle en est et il ils je l la le les leur mais
me mon ne nous on ou par pas plus pour qu que qui sa se son sont sur ta te tu un une vous
""".split())
_AUTHOR_KINDS = frozenset({"HUMAN", "AGENT", "SYSTEM"})


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Weights:
    """Relative weight of each factor in the score. `load_config` normalises them to sum 1."""

    expertise: float
    workload: float
    social: float
    timing: float
    quality: float

    def total(self) -> float:
        """Sum of the five weights."""
        return self.expertise + self.workload + self.social + self.timing + self.quality


@dataclass(frozen=True)
class RelevanceConfig:
    """Weights, threshold and budgets of the relevance engine (see config.yaml for defaults)."""

    weights: Weights
    lexical: float  # weight of the shared distinctive words in the expertise factor
    threshold: float  # minimum weighted score (in [0,1]) to be selected
    top_k: int  # at most k agents selected per message (mentions included; mentions first)
    cooldown_s: float  # an agent that spoke in the channel less than this ago is held back (unless mentioned)
    max_thread_turns: int  # a message written by an AGENT at thread_depth >= this selects nobody
    workload_saturation: int  # open tasks at which the workload factor reaches 0
    social_window_s: float  # how recent a human<->agent exchange counts for the social factor
    version: str  # content hash of the config file, for RelevanceDecision.config_version


_TOP_KEYS = (
    "weights",
    "lexical",
    "threshold",
    "top_k",
    "cooldown_s",
    "max_thread_turns",
    "workload_saturation",
    "social_window_s",
)


def load_config(path: str | Path | None = None) -> RelevanceConfig:
    """Read and validate a relevance config YAML file (by default the bundled one).

    Weights must be finite, >= 0 and sum to > 0; they are normalised to sum 1 so that the
    score stays in [0,1] and the threshold keeps its meaning whatever scale the file uses.
    Unknown keys are rejected, since a typo would otherwise silently fall back to nothing.
    `version` is the first 12 hex characters of the SHA-256 of the file's canonical JSON
    (sorted keys, no whitespace), so comments and formatting do not change it.

    Raises:
        ValueError: naming the offending key (for example ``weights.social``).
    """
    path = Path(path or DEFAULT_CONFIG_PATH)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: the config must be a mapping of keys to values")

    unknown = sorted(set(map(str, data)) - set(_TOP_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(_TOP_KEYS)})")
    for key in _TOP_KEYS:
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}")

    raw_weights = data["weights"]
    if not isinstance(raw_weights, Mapping):
        raise ValueError(f"{path}: 'weights' must be a mapping of factor to weight")
    unknown = sorted(set(map(str, raw_weights)) - set(_FACTOR_NAMES))
    if unknown:
        raise ValueError(f"{path}: unknown key 'weights.{unknown[0]}' (known: {', '.join(_FACTOR_NAMES)})")
    values = {}
    for name in _FACTOR_NAMES:
        key = f"weights.{name}"
        if name not in raw_weights:
            raise ValueError(f"{path}: missing key {key!r}")
        values[name] = _number(path, key, raw_weights[name], low=0.0)
    total = sum(values.values())
    if total <= 0:
        raise ValueError(f"{path}: 'weights' must sum to more than 0 (got {total})")
    weights = Weights(**{name: value / total for name, value in values.items()})

    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return RelevanceConfig(
        weights=weights,
        lexical=_number(path, "lexical", data["lexical"], low=0.0, high=1.0),
        threshold=_number(path, "threshold", data["threshold"], low=0.0, high=1.0),
        top_k=_integer(path, "top_k", data["top_k"], low=1),
        cooldown_s=_number(path, "cooldown_s", data["cooldown_s"], low=0.0),
        max_thread_turns=_integer(path, "max_thread_turns", data["max_thread_turns"], low=1),
        workload_saturation=_integer(path, "workload_saturation", data["workload_saturation"], low=1),
        social_window_s=_number(path, "social_window_s", data["social_window_s"], low=0.0),
        version=hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12],
    )


def _number(path: Path, key: str, value: Any, *, low: float, high: float | None = None) -> float:
    # bool is an int subclass; `threshold: yes` is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: {key!r} must be a finite number (got {value!r})")
    if value < low or (high is not None and value > high):
        bounds = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ValueError(f"{path}: {key!r} must be {bounds} (got {value!r})")
    return float(value)


def _integer(path: Path, key: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{path}: {key!r} must be an integer (got {value!r})")
    if value < low:
        raise ValueError(f"{path}: {key!r} must be >= {low} (got {value!r})")
    return value


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Candidate:
    """An agent as the registry and the channel state see it at decision time.

    `expertise` is excluded from equality and hashing: numpy arrays have neither a
    truth value nor a hash, and the vector is derived from the agent's expertise text.
    """

    agent_id: str
    state: str  # "ACTIVE", "WORKING", "PAUSED", "ERROR", "MAINTENANCE"
    channels: tuple[str, ...]
    expertise: np.ndarray | None = field(compare=False)  # L2-normalised, None until computed
    performance_score: float  # in [0,1]
    open_tasks: int
    last_spoke_ms: int | None  # last time it spoke in THIS channel (epoch ms), None if never
    last_exchange_with_author_ms: int | None  # last reply to / from the message author in this channel
    keywords: frozenset[str] = frozenset()  # `words` of its expertise sentence and examples


@dataclass(frozen=True)
class Message:
    """The chat message being decided on. `embedding` is excluded from equality (see Candidate)."""

    message_id: str
    channel_id: str
    author_id: str
    author_kind: str  # HUMAN | AGENT | SYSTEM
    mentions: tuple[str, ...]  # agent_ids mentioned in the text
    reply_to_author: str | None  # author of the message this one replies to, if any
    thread_depth: int  # 0 for a thread root, +1 per reply
    created_ms: int  # epoch ms
    embedding: np.ndarray = field(compare=False)  # L2-normalised
    vote_call: bool = False  # a SYSTEM message asking the agents it mentions to vote
    words: frozenset[str] = frozenset()  # `words` of its text


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Factors:
    """The five factor values of one agent for one message, each in [0,1]."""

    expertise: float
    workload: float
    social: float
    timing: float
    quality: float


@dataclass(frozen=True)
class Score:
    """Score of one eligible agent, whether it was selected, and a sentence saying why."""

    agent_id: str
    score: float
    factors: Factors
    selected: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    """All scores (best first), the selected agent_ids (mentions first, then best first),
    and `skip_reason` when nobody was even considered."""

    scores: tuple[Score, ...]
    selected: tuple[str, ...]
    skip_reason: str | None


# --------------------------------------------------------------------------- factors


def eligible(message: Message, candidates: Sequence[Candidate]) -> list[Candidate]:
    """Agents that may answer: in the message's channel, ACTIVE or WORKING, not the author.

    Input order is kept (first entry wins for a duplicated agent_id); `decide` imposes
    its own deterministic order.
    """
    seen: set[str] = set()
    out = []
    for c in candidates:
        # A duplicated registry entry must not give one agent two turns: first one wins.
        if c.agent_id in seen:
            continue
        seen.add(c.agent_id)
        if message.channel_id in c.channels and c.state in ELIGIBLE_STATES and c.agent_id != message.author_id:
            out.append(c)
    return out


def words(text: str) -> frozenset[str]:
    """The words of a text that can name a topic: lower case, letters and digits ("502"
    counts), stop words dropped, a plural's final s removed."""
    found = set()
    for word in re.findall(r"[^\W_]+", text.lower()):
        if len(word) > 1 and word not in _STOPWORDS:
            found.add(word[:-1] if len(word) > 3 and word.endswith("s") else word)
    return frozenset(found)


def expertise_factor(message: Message, candidate: Candidate, config: RelevanceConfig,
                     frequency: Mapping[str, int] | None = None, pool: int = 1) -> float:
    """max(0, cosine) of the message with the agent's expertise vector, plus
    ``config.lexical`` times the share of the message's word weight found in the agent's
    keywords, clamped to [0,1].

    A word weighs log(1 + pool / agents of the pool that know it) (``frequency``): a
    word only one agent knows ("rollback", "CSS") says much, one all know says little,
    one nobody knows counts as rare, so a message of unknown words matches nobody. The
    embedder (all-MiniLM-L6-v2) blurs short messages and knows no French; the words keep
    what it misses. Negative cosine means "unrelated", not "anti-relevant", so it maps to
    0; a missing, zero, non-finite or wrongly sized vector gives cosine 0: one bad
    registry entry must not break decisions for the whole channel.
    """
    return _unit(_cosine(message, candidate) + config.lexical * _shared_words(
        message.words, candidate.keywords, frequency or {}, pool))


def _cosine(message: Message, candidate: Candidate) -> float:
    if candidate.expertise is None:
        return 0.0
    a = np.asarray(message.embedding, dtype=np.float64).ravel()
    b = np.asarray(candidate.expertise, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size == 0:
        return 0.0
    # Divide by the norms anyway: cheap, and robust to vectors that were not normalised.
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if not math.isfinite(norms) or norms == 0.0:
        return 0.0
    return _unit(float(np.dot(a, b)) / norms)


def _shared_words(said: frozenset[str], known: frozenset[str], frequency: Mapping[str, int],
                  pool: int) -> float:
    weight = {w: math.log1p(max(pool, 1) / max(frequency.get(w, 0), 1)) for w in said}
    total = sum(weight.values())
    return sum(weight[w] for w in said & known) / total if total else 0.0


def workload_factor(candidate: Candidate, config: RelevanceConfig) -> float:
    """1 - open_tasks / workload_saturation, clamped to [0,1]: idle agents are preferred."""
    return _unit(1.0 - max(candidate.open_tasks, 0) / config.workload_saturation)


def social_factor(message: Message, candidate: Candidate, config: RelevanceConfig) -> float:
    """How directly the message addresses the agent.

    1 if mentioned; else 0.8 if the message replies to one of its messages; else 0.5 if it
    exchanged with the author in this channel within `social_window_s`; else 0.
    """
    if candidate.agent_id in message.mentions:
        return SOCIAL_MENTIONED
    if message.reply_to_author is not None and message.reply_to_author == candidate.agent_id:
        return SOCIAL_REPLIED_TO
    if candidate.last_exchange_with_author_ms is not None:
        # An exchange stamped after the message (clock skew, reordering) counts as "just now".
        elapsed_s = max(0, message.created_ms - candidate.last_exchange_with_author_ms) / 1000.0
        if elapsed_s <= config.social_window_s:
            return SOCIAL_RECENT_EXCHANGE
    return 0.0


def timing_factor(message: Message, candidate: Candidate, config: RelevanceConfig) -> float:
    """Quiet time since the agent last spoke in the channel, as a value in [0,1].

    1 if it never spoke; otherwise a linear climb from 0 (just spoke) to 1 after
    4 x cooldown_s. Linear keeps it monotone and easy to read in a reason; the long
    recovery lets agents that have been quiet win over one that just talked.
    With cooldown_s = 0 there is no cool-down and timing is always 1.
    """
    if candidate.last_spoke_ms is None:
        return 1.0
    horizon_s = TIMING_RECOVERY_COOLDOWNS * config.cooldown_s
    if horizon_s <= 0:
        return 1.0
    return _unit(_since_s(message, candidate.last_spoke_ms) / horizon_s)


def quality_factor(candidate: Candidate) -> float:
    """The agent's running performance score, clamped to [0,1] (non-finite counts as 0)."""
    return _unit(candidate.performance_score)


def _unit(x: float) -> float:
    """Clamp to [0,1]; NaN becomes 0 so that a corrupt input can only lower a score."""
    x = float(x)
    if math.isnan(x):
        return 0.0
    return min(1.0, max(0.0, x))


def _since_s(message: Message, then_ms: int) -> float:
    """Seconds from `then_ms` to the message; a time after the message counts as 0."""
    return max(0, message.created_ms - then_ms) / 1000.0


def _in_cooldown(message: Message, candidate: Candidate, config: RelevanceConfig) -> bool:
    return candidate.last_spoke_ms is not None and _since_s(message, candidate.last_spoke_ms) < config.cooldown_s


# --------------------------------------------------------------------------- decision


def decide(message: Message, candidates: Sequence[Candidate], config: RelevanceConfig) -> Decision:
    """Score every eligible agent and select who answers the message.

    Rules, in order:
      1. SYSTEM messages select nobody (tool results and notices are not conversation),
         except a vote call, which selects the eligible agents it mentions to cast ballots.
      2. An AGENT message at thread_depth >= max_thread_turns selects nobody, so agents
         cannot keep answering each other forever; a person can always restart the thread.
      3. Each eligible agent is scored; ineligible agents are not scored at all.
      4. Mentioned eligible agents are always selected, even in cool-down or below threshold,
         and come first. They count towards top_k; if more agents are mentioned than top_k,
         all of them are still selected (the author asked for them by name).
      5. Other agents in their cool-down are held back.
      6. The rest are selected if score >= threshold, best first, while fewer than top_k
         agents are selected in total.

    Scores are ordered by score descending, then agent_id, so the decision is deterministic.

    An unknown author_kind is treated like SYSTEM, as the ChatMessage schema prescribes.

    Raises:
        ValueError: for weights that sum to 0 (load_config never produces them).
    """
    if message.author_kind not in _AUTHOR_KINDS:
        # The ChatMessage schema maps unknown future kinds to SYSTEM; do the same, never crash.
        reason = f"unknown author kind {message.author_kind!r}, treated as a system message"
        return Decision(scores=(), selected=(), skip_reason=reason)
    if message.author_kind == "SYSTEM":
        if message.vote_call:
            return _vote_call(message, candidates)
        return Decision(scores=(), selected=(), skip_reason="system message")
    if message.author_kind == "AGENT" and message.thread_depth >= config.max_thread_turns:
        return Decision(
            scores=(),
            selected=(),
            skip_reason=f"turn budget of {config.max_thread_turns} agent turns reached in this thread",
        )

    pool = eligible(message, candidates)
    if not pool:
        return Decision(scores=(), selected=(), skip_reason="no eligible agent in this channel")

    w = config.weights
    total_weight = w.total()
    if not total_weight > 0:
        raise ValueError("relevance weights must sum to more than 0")

    frequency = Counter(w for c in pool for w in c.keywords & message.words)
    scored: list[tuple[float, Candidate, Factors]] = []
    for candidate in pool:
        f = Factors(
            expertise=expertise_factor(message, candidate, config, frequency, len(pool)),
            workload=workload_factor(candidate, config),
            social=social_factor(message, candidate, config),
            timing=timing_factor(message, candidate, config),
            quality=quality_factor(candidate),
        )
        # Weighted mean rather than sum: stays in [0,1] even for hand-built, unnormalised weights.
        raw = (
            w.expertise * f.expertise
            + w.workload * f.workload
            + w.social * f.social
            + w.timing * f.timing
            + w.quality * f.quality
        ) / total_weight
        scored.append((_unit(raw), candidate, f))
    scored.sort(key=lambda item: (-item[0], item[1].agent_id))

    mentioned = set(message.mentions)
    picked_mentions = [c.agent_id for _, c, _ in scored if c.agent_id in mentioned]
    picked_others: list[str] = []
    scores: list[Score] = []
    for value, c, f in scored:
        selected = False
        if c.agent_id in mentioned:
            selected, reason = True, f"mentioned in the message (score {value:.2f}; {_factor_text(f)})"
        elif _in_cooldown(message, c, config):
            ago = _since_s(message, c.last_spoke_ms)  # type: ignore[arg-type]  # not None in cool-down
            reason = f"cool-down: spoke {_secs(ago)} ago, under the {_secs(config.cooldown_s)} cool-down"
        elif value < config.threshold:
            shown, limit = _versus(value, config.threshold)
            reason = f"below threshold: score {shown} < {limit} ({_factor_text(f)})"
        elif len(picked_mentions) + len(picked_others) >= config.top_k:
            reason = (
                f"not in top {config.top_k}: score {value:.2f} >= threshold {config.threshold:.2f}, "
                f"but {config.top_k} agent(s) were mentioned or ranked higher"
            )
        else:
            picked_others.append(c.agent_id)
            selected, reason = True, f"score {value:.2f} >= threshold {config.threshold:.2f} ({_factor_text(f)})"
        scores.append(Score(agent_id=c.agent_id, score=value, factors=f, selected=selected, reason=reason))
    return Decision(scores=tuple(scores), selected=tuple(picked_mentions + picked_others), skip_reason=None)


def _vote_call(message: Message, candidates: Sequence[Candidate]) -> Decision:
    """Voters are chosen by the vote, not by relevance: no factor is computed."""
    none = Factors(expertise=0.0, workload=0.0, social=0.0, timing=0.0, quality=0.0)
    called = sorted(c.agent_id for c in eligible(message, candidates)
                    if c.agent_id in set(message.mentions))
    if not called:
        return Decision(scores=(), selected=(), skip_reason="vote call: no eligible voter to ask")
    scores = tuple(Score(agent_id=a, score=0.0, factors=none, selected=True,
                         reason="called to cast a ballot in the vote") for a in called)
    return Decision(scores=scores, selected=tuple(called), skip_reason=None)


def _versus(value: float, threshold: float) -> tuple[str, str]:
    """Format a score and the threshold so that the shown numbers never look equal
    when they are not (0.4199 vs 0.42 would read as '0.42 < 0.42')."""
    for digits in (2, 3, 4, 6):
        a, b = f"{value:.{digits}f}", f"{threshold:.{digits}f}"
        if a != b:
            return a, b
    return f"{value!r}", f"{threshold!r}"


def _factor_text(f: Factors) -> str:
    return ", ".join(f"{name} {getattr(f, name):.2f}" for name in _FACTOR_NAMES)


def _secs(seconds: float) -> str:
    """12.0 -> '12s', 2.5 -> '2.5s': whole seconds unless the fraction matters."""
    return f"{seconds:.0f}s" if seconds >= 10 or float(seconds).is_integer() else f"{seconds:.1f}s"

"""Relevance engine decision logic: factors, selection rules, config and agent templates.

Pure and fast: no servers. Expertise uses small synthetic unit vectors whose cosine with
the message is chosen by the test.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.relevance.scoring import (
    DEFAULT_CONFIG_PATH,
    Candidate,
    Decision,
    Message,
    RelevanceConfig,
    Weights,
    decide,
    eligible,
    expertise_factor,
    load_config,
    quality_factor,
    social_factor,
    timing_factor,
    words,
    workload_factor,
)
from streams.domain.tools.catalog import load as load_catalog

DIM = 8
NOW = 1_700_000_000_000  # epoch ms of the message under test
CHANNEL = "c-general"
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "streams" / "domain" / "templates"
TOOLS = set(load_catalog())  # templates may only name tools that exist
REQUIRED_TEMPLATES = {
    "developer-backend",
    "developer-frontend",
    "analyst-data",
    "moderator-quality",
    "researcher-tech",
    "creative-writer",
    "devops-oncall",
}
TEMPLATE_KEYS = {"template", "name", "persona", "system_prompt", "expertise", "tools",
                 "permissions", "performance_score", "examples"}

# --------------------------------------------------------------------------- helpers

MSG_VEC = np.eye(DIM)[0]


def vec_with_cos(cos: float) -> np.ndarray:
    """A unit vector whose cosine with MSG_VEC is `cos`."""
    v = np.zeros(DIM)
    v[0], v[1] = cos, math.sqrt(max(0.0, 1.0 - cos * cos))
    return v


def config(**overrides) -> RelevanceConfig:
    base = dict(
        weights=Weights(expertise=0.5, workload=0.1, social=0.15, timing=0.1, quality=0.15),
        lexical=0.3,
        threshold=0.41,
        top_k=2,
        cooldown_s=20.0,
        max_thread_turns=4,
        workload_saturation=5,
        social_window_s=600.0,
        version="test",
    )
    base.update(overrides)
    return RelevanceConfig(**base)


def agent(agent_id: str, cos: float | None = 0.5, **overrides) -> Candidate:
    base = dict(
        agent_id=agent_id,
        state="ACTIVE",
        channels=(CHANNEL,),
        expertise=None if cos is None else vec_with_cos(cos),
        performance_score=0.7,
        open_tasks=0,
        last_spoke_ms=None,
        last_exchange_with_author_ms=None,
    )
    base.update(overrides)
    return Candidate(**base)


def message(**overrides) -> Message:
    base = dict(
        message_id="m-1",
        channel_id=CHANNEL,
        author_id="u-alice",
        author_kind="HUMAN",
        mentions=(),
        reply_to_author=None,
        thread_depth=0,
        created_ms=NOW,
        embedding=MSG_VEC,
    )
    base.update(overrides)
    return Message(**base)


def by_id(decision: Decision) -> dict:
    return {s.agent_id: s for s in decision.scores}


# --------------------------------------------------------------------------- strategies

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
unit_interval = st.floats(min_value=0.0, max_value=1.0)
agent_ids = st.sampled_from([f"a-{i}" for i in range(8)])
maybe_time = st.none() | st.integers(min_value=NOW - 10_000_000, max_value=NOW + 10_000)


@st.composite
def vectors(draw):
    kind = draw(st.sampled_from(["none", "cos", "raw", "zero", "wrong-dim"]))
    if kind == "none":
        return None
    if kind == "cos":
        return vec_with_cos(draw(st.floats(min_value=-1.0, max_value=1.0)))
    if kind == "zero":
        return np.zeros(DIM)
    if kind == "wrong-dim":
        return np.ones(DIM + 1)
    return np.array(draw(st.lists(finite, min_size=DIM, max_size=DIM)))


@st.composite
def candidates(draw, agent_id=None):
    return Candidate(
        agent_id=agent_id or draw(agent_ids),
        state=draw(st.sampled_from(["ACTIVE", "ACTIVE", "WORKING", "PAUSED", "ERROR", "MAINTENANCE"])),
        channels=draw(st.sampled_from([(CHANNEL,), ("other",), (CHANNEL, "other"), ()])),
        expertise=draw(vectors()),
        performance_score=draw(st.floats(min_value=-2.0, max_value=2.0) | st.just(float("nan"))),
        open_tasks=draw(st.integers(min_value=-1, max_value=20)),
        last_spoke_ms=draw(maybe_time),
        last_exchange_with_author_ms=draw(maybe_time),
    )


@st.composite
def candidate_pools(draw):
    ids = draw(st.lists(agent_ids, unique=True, max_size=8))
    return [draw(candidates(agent_id=i)) for i in ids]


@st.composite
def messages(draw):
    return message(
        author_id=draw(st.sampled_from(["u-alice", "a-0", "a-1"])),
        author_kind=draw(st.sampled_from(["HUMAN", "HUMAN", "AGENT", "SYSTEM"])),
        mentions=tuple(draw(st.lists(agent_ids, max_size=4))),
        reply_to_author=draw(st.none() | agent_ids),
        thread_depth=draw(st.integers(min_value=0, max_value=8)),
    )


@st.composite
def configs(draw):
    return config(
        weights=Weights(*draw(st.lists(unit_interval, min_size=5, max_size=5).filter(lambda w: sum(w) > 0.01))),
        lexical=draw(unit_interval),
        threshold=draw(unit_interval),
        top_k=draw(st.integers(min_value=1, max_value=4)),
        cooldown_s=draw(st.floats(min_value=0.0, max_value=3600.0)),
        max_thread_turns=draw(st.integers(min_value=1, max_value=6)),
        workload_saturation=draw(st.integers(min_value=1, max_value=10)),
        social_window_s=draw(st.floats(min_value=0.0, max_value=3600.0)),
    )


# --------------------------------------------------------------------------- factors


@given(messages(), candidates(), configs())
def test_every_factor_is_in_unit_interval(msg, cand, cfg):
    for value in (
        expertise_factor(msg, cand, cfg, {"502": 1}, 3),
        workload_factor(cand, cfg),
        social_factor(msg, cand, cfg),
        timing_factor(msg, cand, cfg),
        quality_factor(cand),
    ):
        assert 0.0 <= value <= 1.0


@given(messages().filter(lambda m: m.author_kind == "HUMAN"), candidate_pools(), configs())
def test_every_score_and_factor_of_a_decision_is_in_unit_interval(msg, pool, cfg):
    for s in decide(msg, pool, cfg).scores:
        assert 0.0 <= s.score <= 1.0
        assert all(0.0 <= v <= 1.0 for v in dataclasses.astuple(s.factors))


def test_expertise_is_positive_cosine_and_zero_without_a_usable_vector():
    msg, cfg = message(), config()
    assert expertise_factor(msg, agent("a", cos=0.6), cfg) == pytest.approx(0.6)
    assert expertise_factor(msg, agent("a", cos=-0.4), cfg) == 0.0
    assert expertise_factor(msg, agent("a", cos=None), cfg) == 0.0
    assert expertise_factor(msg, agent("a", expertise=np.zeros(DIM)), cfg) == 0.0
    assert expertise_factor(msg, agent("a", expertise=np.ones(DIM + 1)), cfg) == 0.0
    # Not normalised upstream: still a cosine.
    assert expertise_factor(msg, agent("a", expertise=3 * vec_with_cos(0.6)), cfg) == \
        pytest.approx(0.6)


def test_words_name_topics_in_english_and_french():
    assert words("The API returns 502s since the deploy!") == {"api", "return", "502", "since",
                                                                "deploy"}
    assert words("Le serveur est en panne") == {"serveur", "panne"}
    assert words("") == frozenset() and words("a I ?") == frozenset()


def test_distinctive_shared_words_add_to_the_cosine():
    msg = message(words=words("rollback the deploy now"))  # rollback, deploy, now
    ops = agent("ops", cos=0.2, keywords=words("deploy rollback alert"))
    dev = agent("dev", cos=0.2, keywords=words("deploy code review"))
    cfg = config(lexical=0.3)
    frequency = {"deploy": 2, "rollback": 1}  # agents of the pool that know each word
    # Each word weighs log(1 + pool / frequency); "now", known by nobody, weighs the most.
    weight = {"deploy": math.log1p(2 / 2), "rollback": math.log1p(2), "now": math.log1p(2)}
    total = sum(weight.values())
    assert expertise_factor(msg, ops, cfg, frequency, 2) == pytest.approx(
        0.2 + 0.3 * (weight["deploy"] + weight["rollback"]) / total)
    assert expertise_factor(msg, dev, cfg, frequency, 2) == pytest.approx(
        0.2 + 0.3 * weight["deploy"] / total)
    assert expertise_factor(msg, ops, config(lexical=0.0), frequency, 2) == pytest.approx(0.2)
    # No words, no keywords, or a factor that would pass 1: still in [0,1].
    assert expertise_factor(message(), ops, cfg, frequency, 2) == pytest.approx(0.2)
    assert expertise_factor(msg, agent("x", cos=0.9, keywords=msg.words), config(lexical=1.0),
                            frequency, 2) == 1.0


def test_a_shared_rare_word_decides_between_agents_the_embedder_cannot_tell_apart():
    msg = message(words=words("Serveur down, plus rien ne répond"))
    pool = [agent("nox", cos=0.15, keywords=words("Le serveur est en panne")),
            agent("writer", cos=0.18, keywords=words("Write a short poem"))]
    d = decide(msg, pool, config())
    assert d.scores[0].agent_id == "nox"
    assert d.scores[0].factors.expertise > d.scores[1].factors.expertise


def test_workload_falls_linearly_to_zero_at_saturation():
    cfg = config(workload_saturation=5)
    assert [workload_factor(agent("a", open_tasks=n), cfg) for n in (0, 1, 5, 9)] == pytest.approx(
        [1.0, 0.8, 0.0, 0.0]
    )


def test_social_prefers_mention_then_reply_then_recent_exchange():
    cfg = config(social_window_s=600)
    recent = agent("a", last_exchange_with_author_ms=NOW - 60_000)
    stale = agent("a", last_exchange_with_author_ms=NOW - 601_000)
    assert social_factor(message(mentions=("a",), reply_to_author="a"), recent, cfg) == 1.0
    assert social_factor(message(reply_to_author="a"), recent, cfg) == 0.8
    assert social_factor(message(), recent, cfg) == 0.5
    assert social_factor(message(), stale, cfg) == 0.0
    assert social_factor(message(reply_to_author="someone-else"), agent("a"), cfg) == 0.0


@given(st.integers(min_value=0, max_value=10_000_000), st.integers(min_value=0, max_value=10_000_000))
def test_timing_is_monotone_zero_right_after_speaking_and_one_if_never(a, b):
    cfg = config(cooldown_s=20)
    early, late = sorted((a, b))
    t_early = timing_factor(message(), agent("x", last_spoke_ms=NOW - early), cfg)
    t_late = timing_factor(message(), agent("x", last_spoke_ms=NOW - late), cfg)
    assert t_early <= t_late
    assert timing_factor(message(), agent("x", last_spoke_ms=NOW), cfg) == 0.0
    assert timing_factor(message(), agent("x", last_spoke_ms=None), cfg) == 1.0
    assert timing_factor(message(), agent("x", last_spoke_ms=NOW - 80_000), cfg) == 1.0


def test_quality_is_the_clamped_performance_score():
    assert quality_factor(agent("a", performance_score=0.7)) == 0.7
    assert quality_factor(agent("a", performance_score=1.5)) == 1.0
    assert quality_factor(agent("a", performance_score=-0.1)) == 0.0
    assert quality_factor(agent("a", performance_score=float("nan"))) == 0.0


# --------------------------------------------------------------------------- eligibility


def test_eligible_keeps_active_and_working_agents_of_the_channel_except_the_author():
    pool = [
        agent("active"),
        agent("working", state="WORKING"),
        agent("paused", state="PAUSED"),
        agent("error", state="ERROR"),
        agent("maintenance", state="MAINTENANCE"),
        agent("elsewhere", channels=("other",)),
        agent("author"),
    ]
    got = eligible(message(author_id="author", author_kind="AGENT"), pool)
    assert [c.agent_id for c in got] == ["active", "working"]


def test_author_is_not_scored_even_when_it_mentions_itself():
    pool = [agent("a-writer", cos=0.9), agent("a-other", cos=0.9)]
    d = decide(message(author_id="a-writer", author_kind="AGENT", thread_depth=1, mentions=("a-writer",)), pool, config())
    assert "a-writer" not in by_id(d)
    assert "a-writer" not in d.selected


def test_paused_or_absent_agents_are_not_scored_even_when_mentioned():
    pool = [agent("paused", state="PAUSED"), agent("absent", channels=("other",)), agent("ok", cos=0.0)]
    d = decide(message(mentions=("paused", "absent")), pool, config())
    assert set(by_id(d)) == {"ok"}
    assert d.selected == ()


def test_nobody_eligible_gives_a_skip_reason():
    d = decide(message(), [agent("paused", state="PAUSED")], config())
    assert d.scores == () and d.selected == ()
    assert d.skip_reason and "eligible" in d.skip_reason


# --------------------------------------------------------------------------- rules


def test_mention_selects_even_in_cool_down_and_below_threshold():
    cand = agent("a-bob", cos=0.0, last_spoke_ms=NOW - 1_000, open_tasks=5)
    d = decide(message(mentions=("a-bob",)), [cand], config())
    score = by_id(d)["a-bob"]
    assert score.score < config().threshold
    assert d.selected == ("a-bob",)
    assert score.selected and score.reason.startswith("mentioned")


def test_mentions_come_first_and_count_towards_top_k():
    pool = [agent("expert-1", cos=0.9), agent("expert-2", cos=0.8), agent("mentioned", cos=0.0)]
    d = decide(message(mentions=("mentioned",)), pool, config(top_k=2))
    assert d.selected == ("mentioned", "expert-1")
    assert by_id(d)["expert-2"].reason.startswith("not in top 2")


def test_all_mentioned_agents_are_selected_even_beyond_top_k():
    pool = [agent(f"a-{i}", cos=0.0) for i in range(3)]
    d = decide(message(mentions=("a-0", "a-1", "a-2")), pool, config(top_k=1))
    assert set(d.selected) == {"a-0", "a-1", "a-2"}


def test_cool_down_holds_back_a_relevant_agent():
    cfg = config(cooldown_s=20)
    d = decide(message(), [agent("a-hot", cos=1.0, last_spoke_ms=NOW - 5_000)], cfg)
    score = by_id(d)["a-hot"]
    assert not score.selected and d.selected == ()
    assert score.reason.startswith("cool-down") and "5s" in score.reason
    # Out of the cool-down (exactly at its end) and relevant enough: selected again.
    d = decide(message(), [agent("a-hot", cos=1.0, last_spoke_ms=NOW - 20_000)], cfg)
    assert d.selected == ("a-hot",)


@pytest.mark.parametrize("depth, selects", [(0, True), (3, True), (4, False), (9, False)])
def test_turn_budget_stops_agent_to_agent_threads(depth, selects):
    pool = [agent("a-expert", cos=1.0)]
    d = decide(message(author_id="a-peer", author_kind="AGENT", thread_depth=depth), pool, config(max_thread_turns=4))
    assert bool(d.selected) is selects
    if not selects:
        assert d.scores == ()
        assert d.skip_reason == "turn budget of 4 agent turns reached in this thread"


def test_turn_budget_does_not_limit_people():
    d = decide(message(thread_depth=50, mentions=("a-x",)), [agent("a-x")], config(max_thread_turns=4))
    assert d.selected == ("a-x",) and d.skip_reason is None


def test_system_messages_select_nobody():
    d = decide(message(author_kind="SYSTEM", mentions=("a-x",)), [agent("a-x", cos=1.0)], config())
    assert d == Decision(scores=(), selected=(), skip_reason="system message")


def test_a_vote_call_selects_the_eligible_agents_it_mentions_whatever_their_state():
    voters = [agent("a-1", cos=0.0, last_spoke_ms=NOW - 1000), agent("a-2", cos=None),
              agent("a-3", state="PAUSED"), agent("a-4", channels=("elsewhere",)),
              agent("a-5", cos=1.0)]
    d = decide(message(author_kind="SYSTEM", author_id="agora.votes", vote_call=True,
                       mentions=("a-2", "a-1", "a-3", "a-4")), voters, config(top_k=1))
    # Cool-down, score and top_k do not matter; paused, absent and unmentioned agents are out.
    assert d.selected == ("a-1", "a-2") and d.skip_reason is None
    assert all(s.reason == "called to cast a ballot in the vote" for s in d.scores)
    nobody = decide(message(author_kind="SYSTEM", vote_call=True, mentions=("a-3",)), voters,
                    config())
    assert nobody.selected == () and "no eligible voter" in nobody.skip_reason


def test_unknown_author_kind_is_treated_as_system():
    d = decide(message(author_kind="ROBOT", mentions=("a",)), [agent("a", cos=1.0)], config())
    assert d.selected == () and d.scores == ()
    assert "system message" in d.skip_reason


def test_threshold_separates_selected_from_below_threshold():
    cfg = config(weights=Weights(1, 0, 0, 0, 0), threshold=0.5, top_k=5)
    d = decide(message(), [agent("above", cos=0.6), agent("below", cos=0.4)], cfg)
    scores = by_id(d)
    assert d.selected == ("above",)
    assert scores["above"].reason.startswith("score 0.60 >= threshold 0.50")
    assert scores["below"].reason.startswith("below threshold: score 0.40 < 0.50")


def test_reason_never_shows_equal_numbers_for_a_score_just_below_threshold():
    cfg = config(weights=Weights(1, 0, 0, 0, 0), threshold=0.42)
    d = decide(message(), [agent("close", cos=0.4199)], cfg)
    assert "score 0.4199 < 0.4200" in by_id(d)["close"].reason


def test_ties_are_broken_by_agent_id():
    pool = [agent("b", cos=0.7), agent("a", cos=0.7), agent("c", cos=0.7)]
    d = decide(message(), pool, config(top_k=2))
    assert [s.agent_id for s in d.scores] == ["a", "b", "c"]
    assert d.selected == ("a", "b")


@settings(max_examples=200)
@given(messages(), candidate_pools(), configs())
def test_selection_invariants(msg, pool, cfg):
    d = decide(msg, pool, cfg)
    elig = eligible(msg, pool)
    elig_ids = {c.agent_id for c in elig}
    if msg.author_kind == "SYSTEM" or (msg.author_kind == "AGENT" and msg.thread_depth >= cfg.max_thread_turns):
        assert d.scores == () and d.selected == () and d.skip_reason
        return
    scores = by_id(d)
    # Every eligible agent scored exactly once; nobody else.
    assert sorted(scores) == sorted(elig_ids) and len(d.scores) == len(elig_ids)
    # Deterministic order: score desc, then agent_id.
    assert [(-s.score, s.agent_id) for s in d.scores] == sorted((-s.score, s.agent_id) for s in d.scores)
    # Selected: a subset of the eligible, no duplicates, flags consistent.
    assert set(d.selected) <= elig_ids and len(set(d.selected)) == len(d.selected)
    assert {s.agent_id for s in d.scores if s.selected} == set(d.selected)
    mentioned = [a for a in d.selected if a in msg.mentions]
    others = [a for a in d.selected if a not in msg.mentions]
    # Every mentioned eligible agent selected, first; the others fill up to top_k.
    assert set(mentioned) == elig_ids & set(msg.mentions)
    assert list(d.selected) == mentioned + others
    assert len(d.selected) <= max(cfg.top_k, len(mentioned))
    if others:
        assert len(d.selected) <= cfg.top_k
    # Non-mentioned selections clear the threshold, best first.
    assert all(scores[a].score >= cfg.threshold for a in others)
    assert [scores[a].score for a in others] == sorted((scores[a].score for a in others), reverse=True)
    for s in d.scores:
        assert s.reason and len(s.reason) < 200


@given(messages(), candidate_pools(), configs(), st.randoms(use_true_random=False))
def test_decision_does_not_depend_on_candidate_order(msg, pool, cfg, rnd):
    shuffled = list(pool)
    rnd.shuffle(shuffled)
    assert decide(msg, pool, cfg) == decide(msg, shuffled, cfg)


def test_decide_is_deterministic_across_calls():
    rng = random.Random(7)
    pool = [agent(f"a-{i}", cos=rng.uniform(-1, 1), open_tasks=rng.randint(0, 6)) for i in range(10)]
    assert decide(message(), pool, config()) == decide(message(), list(reversed(pool)), config())


# --------------------------------------------------------------------------- config


def write(tmp_path: Path, data, name="relevance.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def shipped_data() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))


def test_shipped_config_loads_with_normalised_weights():
    cfg = load_config(DEFAULT_CONFIG_PATH)
    assert sum(dataclasses.astuple(cfg.weights)) == pytest.approx(1.0)
    assert 0.0 <= cfg.threshold <= 1.0 and cfg.top_k >= 1
    assert re.fullmatch(r"[0-9a-f]{12}", cfg.version)


def test_shipped_config_lets_expertise_decide_for_a_fresh_agent():
    """Real all-MiniLM-L6-v2 cosines: a related agent scores 0.21-0.55, unrelated <= 0.17."""
    cfg = load_config(DEFAULT_CONFIG_PATH)
    pool = [agent("backend", cos=0.55), agent("frontend", cos=0.17), agent("writer", cos=-0.05)]
    d = decide(message(), pool, cfg)
    assert d.selected == ("backend",)
    assert decide(message(), [agent("weak-match", cos=0.22)], cfg).selected == ("weak-match",)
    assert decide(message(), [agent("small-talk", cos=0.17)], cfg).selected == ()


def test_weights_are_normalised(tmp_path):
    data = shipped_data()
    data["weights"] = {"expertise": 5, "workload": 1, "social": 1.5, "timing": 1, "quality": 1.5}
    w = load_config(write(tmp_path, data)).weights
    assert (w.expertise, w.social) == pytest.approx((0.5, 0.15))


def test_version_ignores_comments_and_tracks_values(tmp_path):
    text = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8")
    base = load_config(DEFAULT_CONFIG_PATH).version
    assert load_config(write(tmp_path, "# another comment\n" + text)).version == base
    changed = shipped_data() | {"top_k": 3}
    assert load_config(write(tmp_path, changed)).version != base


def _set(data: dict, dotted: str, value) -> dict:
    head, _, tail = dotted.partition(".")
    if tail:
        data[head] = _set(dict(data[head]), tail, value)
    elif value is _DELETE:
        data.pop(head)
    else:
        data[head] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    "key, value",
    [
        ("weights.expertise", -0.1),
        ("weights.social", "high"),
        ("weights.timing", _DELETE),
        ("weights.typo", 0.1),
        ("threshold", 1.5),
        ("threshold", -0.01),
        ("threshold", True),
        ("top_k", 0),
        ("top_k", 2.5),
        ("cooldown_s", -1),
        ("cooldown_s", float("inf")),
        ("max_thread_turns", 0),
        ("workload_saturation", 0),
        ("social_window_s", "ten minutes"),
        ("social_window_s", _DELETE),
        ("tresholds", 0.4),
    ],
)
def test_load_config_errors_name_the_bad_key(tmp_path, key, value):
    with pytest.raises(ValueError, match=re.escape(key)):
        load_config(write(tmp_path, _set(shipped_data(), key, value)))


def test_load_config_rejects_all_zero_weights_and_non_mappings(tmp_path):
    zero = _set(shipped_data(), "weights", dict.fromkeys(("expertise", "workload", "social", "timing", "quality"), 0))
    with pytest.raises(ValueError, match="weights"):
        load_config(write(tmp_path, zero))
    with pytest.raises(ValueError, match="mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(ValueError, match="weights"):
        load_config(write(tmp_path, _set(shipped_data(), "weights", [0.5, 0.5])))


# --------------------------------------------------------------------------- templates


def load_templates() -> dict[str, dict]:
    return {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(TEMPLATES_DIR.glob("*.yaml"))}


def test_the_seven_templates_ship():
    assert REQUIRED_TEMPLATES <= set(load_templates())


@pytest.mark.parametrize("name", sorted(REQUIRED_TEMPLATES))
def test_template_is_complete_and_consistent(name):
    t = load_templates()[name]
    assert TEMPLATE_KEYS <= set(t), f"missing {TEMPLATE_KEYS - set(t)}"
    assert t["template"] == name
    for key in ("name", "persona", "system_prompt", "expertise"):
        assert isinstance(t[key], str) and t[key].strip(), key
    assert len(t["expertise"].split()) >= 10
    assert isinstance(t["tools"], list) and t["tools"], "tools"
    assert set(t["tools"]) <= TOOLS, set(t["tools"]) - TOOLS
    assert isinstance(t["permissions"], list) and all(isinstance(p, str) and ":" in p for p in t["permissions"])
    tool_permissions = {p.split(":", 1)[1] for p in t["permissions"] if p.startswith("tool:")}
    assert tool_permissions == set(t["tools"])
    assert isinstance(t["performance_score"], (int, float)) and 0.0 <= t["performance_score"] <= 1.0
    # Example messages: relevance's evidence beside the expertise sentence, all distinct.
    examples = t["examples"]
    assert isinstance(examples, list) and len(examples) >= 8
    assert all(isinstance(e, str) and 3 <= len(e.split()) <= 40 for e in examples)
    assert len(set(examples)) == len(examples) and t["expertise"] not in examples


def test_template_expertise_texts_are_distinct():
    texts = [t["expertise"].lower() for t in load_templates().values()]
    assert len(set(texts)) == len(texts)
    # Word overlap stays low between any two agents, so their embeddings separate.
    found = [set(re.findall(r"[a-z]{4,}", text)) for text in texts]
    for i in range(len(found)):
        for j in range(i + 1, len(found)):
            assert len(found[i] & found[j]) / len(found[i] | found[j]) < 0.2

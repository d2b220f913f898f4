"""Incident detection: does a chat message report an incident, how severe, on what?

Plain functions over plain data. The relevance agent, which already has each message's
embedding, calls ``assess`` for every person's message and ``incident_of`` to open or
join the channel's incident, and publishes ``IncidentDetected``. Nothing here does I/O
except ``load_config``, which reads one YAML file (``config.yaml`` beside this module
explains the signals and their weights).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from schemas.codec import epoch_ms
from schemas.events import AgentProfile, ChatMessage, IncidentDetected, Severity, ToolRequest
from schemas.ids import derived_id
from streams.domain.relevance.scoring import ELIGIBLE_STATES

DEFAULT_CONFIG_PATH = Path(__file__).with_name("config.yaml")
SEVERITIES: tuple[Severity, ...] = ("SEV1", "SEV2", "SEV3")
SIGNALS = ("similarity", "words", "mention")
OPEN_KEPT = 32  # open incidents remembered per channel (the oldest are forgotten first)
_KEYS = ("enabled", "threshold", "weights", "margin", "window_s", "oncall_templates",
         "first_response", "words", "services", "incidents", "calm")


@dataclass(frozen=True)
class IncidentConfig:
    enabled: bool
    threshold: float  # score at which a message reports an incident
    weights: Mapping[str, float]  # per signal
    margin: float  # cosine lead over the calm exemplars that makes similarity 1
    window_s: float  # a message joins an open incident seen less than this ago
    oncall_templates: frozenset[str]
    first_response: frozenset[Severity]  # severities whose opening pages at once
    words: Mapping[Severity, tuple[str, ...]]  # incident words and the severity each suggests
    services: Mapping[str, tuple[str, ...]]  # service -> the words that name it
    incidents: Mapping[Severity, tuple[str, ...]]  # exemplar messages per severity
    calm: tuple[str, ...]  # ordinary messages that only look alarming
    version: str  # content hash of the file, for IncidentDetected.config_version


def load_config(path: str | Path | None = None) -> IncidentConfig:
    """Read and validate a detection config (by default the bundled one).

    Raises:
        ValueError: naming the offending key.
    """
    path = Path(path or DEFAULT_CONFIG_PATH)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or set(map(str, data)) != set(_KEYS):
        found = set(map(str, data)) if isinstance(data, dict) else set()
        raise ValueError(f"{path}: keys must be {', '.join(_KEYS)} (missing: "
                         f"{sorted(set(_KEYS) - found)}, unknown: {sorted(found - set(_KEYS))})")
    weights = data["weights"]
    if not isinstance(weights, dict) or set(weights) != set(SIGNALS):
        raise ValueError(f"{path}: 'weights' must give {', '.join(SIGNALS)}")
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return IncidentConfig(
        enabled=_flag(path, "enabled", data["enabled"]),
        threshold=_number(path, "threshold", data["threshold"], 0.0, 1.0),
        weights={s: _number(path, f"weights.{s}", weights[s], 0.0, 1.0) for s in SIGNALS},
        margin=_number(path, "margin", data["margin"], 1e-6, 2.0),
        window_s=_number(path, "window_s", data["window_s"], 0.0, math.inf),
        oncall_templates=frozenset(_texts(path, "oncall_templates", data["oncall_templates"])),
        first_response=_severities(path, "first_response", data["first_response"]),
        words=_by_severity(path, "words", data["words"]),
        services={str(name): _texts(path, f"services.{name}", names)
                  for name, names in _mapping(path, "services", data["services"]).items()},
        incidents=_by_severity(path, "incidents", data["incidents"]),
        calm=_texts(path, "calm", data["calm"]),
        version=hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12],
    )


def _flag(path: Path, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{path}: {key!r} must be true or false (got {value!r})")
    return value


def _number(path: Path, key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not low <= value <= high or math.isnan(value):
        raise ValueError(f"{path}: {key!r} must be a number in [{low:g}, {high:g}] "
                         f"(got {value!r})")
    return float(value)


def _mapping(path: Path, key: str, value: Any) -> dict:
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{path}: {key!r} must be a non-empty mapping")
    return value


def _texts(path: Path, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or \
            not all(isinstance(v, (str, int)) and str(v).strip() for v in value):
        raise ValueError(f"{path}: {key!r} must be a non-empty list of texts")
    return tuple(str(v).lower() if key.startswith(("words", "services")) else str(v)
                 for v in value)


def _severities(path: Path, key: str, value: Any) -> frozenset[Severity]:
    if not isinstance(value, list) or not set(value) <= set(SEVERITIES):
        raise ValueError(f"{path}: {key!r} must list some of {', '.join(SEVERITIES)}")
    return frozenset(value)


def _by_severity(path: Path, key: str, value: Any) -> dict[Severity, tuple[str, ...]]:
    found = _mapping(path, key, value)
    if set(found) != set(SEVERITIES):
        raise ValueError(f"{path}: {key!r} must give {', '.join(SEVERITIES)}")
    return {s: _texts(path, f"{key}.{s}", found[s]) for s in SEVERITIES}


# --------------------------------------------------------------------------- exemplars


def exemplar_texts(config: IncidentConfig) -> set[str]:
    """Every text whose embedding ``Exemplars`` needs."""
    return {t for texts in config.incidents.values() for t in texts} | set(config.calm)


@dataclass(frozen=True)
class Exemplars:
    """The config's exemplar messages, embedded (rows L2-normalised)."""

    incidents: np.ndarray
    severities: tuple[Severity, ...]  # of each incident row
    texts: tuple[str, ...]  # of each incident row
    calm: np.ndarray


def exemplars(config: IncidentConfig, vectors: Mapping[str, np.ndarray]) -> Exemplars:
    pairs = [(s, t) for s in SEVERITIES for t in config.incidents[s]]
    return Exemplars(incidents=_rows([vectors[t] for _, t in pairs]),
                     severities=tuple(s for s, _ in pairs), texts=tuple(t for _, t in pairs),
                     calm=_rows([vectors[t] for t in config.calm]))


def _rows(vectors: Sequence[np.ndarray]) -> np.ndarray:
    rows = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


# --------------------------------------------------------------------------- assessment


@dataclass(frozen=True)
class Signal:
    signal: str
    value: float  # in [0,1], before its weight
    detail: str


@dataclass(frozen=True)
class Assessment:
    detected: bool
    score: float
    severity: Severity
    service: str | None
    evidence: tuple[Signal, ...]  # strongest weighted first


def assess(text: str, embedding: np.ndarray, oncall_mentioned: Sequence[str],
           known: Exemplars, config: IncidentConfig) -> Assessment:
    """Score ``text`` (with its embedding) against the exemplars, words and mentions.

    Severity: each level's mean cosine with its two nearest exemplars, plus 0.1 when the
    message holds one of that level's words; the highest wins, so "some users get 502s"
    stays SEV2 though "502" alone suggests SEV1.
    """
    vector = np.asarray(embedding, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(vector))
    vector = vector / norm if norm > 0 and math.isfinite(norm) else np.zeros_like(vector)
    incident_cos = known.incidents @ vector if vector.size == known.incidents.shape[1] \
        else np.zeros(len(known.severities))
    calm_cos = known.calm @ vector if vector.size == known.calm.shape[1] \
        else np.zeros(len(known.calm))
    nearest = int(np.argmax(incident_cos))
    lead = float(incident_cos[nearest] - calm_cos.max())
    similarity = _unit(lead / config.margin)
    said = {s: found_words(text, config.words[s]) for s in SEVERITIES}
    words_seen = [w for s in SEVERITIES for w in said[s]]
    signals = (
        Signal("similarity", similarity, f"closest to {known.texts[nearest]!r} "
               f"(cosine {incident_cos[nearest]:.2f}, calm {calm_cos.max():.2f})"),
        Signal("words", 1.0 if words_seen else 0.0, ", ".join(dict.fromkeys(words_seen))),
        Signal("mention", 1.0 if oncall_mentioned else 0.0, ", ".join(oncall_mentioned)),
    )
    score = _unit(sum(config.weights[s.signal] * s.value for s in signals))
    level = {s: float(np.mean(np.sort(incident_cos[[i for i, k in enumerate(known.severities)
                                                    if k == s]])[-2:])) + 0.1 * bool(said[s])
             for s in SEVERITIES}
    evidence = tuple(sorted((s for s in signals if s.value > 0),
                            key=lambda s: -config.weights[s.signal] * s.value))
    return Assessment(detected=config.enabled and score >= config.threshold, score=score,
                      severity=max(SEVERITIES, key=lambda s: level[s]),
                      service=service_of(text, config), evidence=evidence)


@lru_cache(maxsize=512)
def _pattern(phrase: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(phrase)}s?(?!\w)")  # "502s" too


def found_words(text: str, phrases: Sequence[str]) -> list[str]:
    """The phrases that occur in ``text`` as whole words (case-insensitive)."""
    lowered = text.lower()
    return [p for p in phrases if _pattern(p).search(lowered)]


def service_of(text: str, config: IncidentConfig) -> str | None:
    """The first configured service whose words the text names, else None."""
    return next((name for name, names in config.services.items()
                 if found_words(text, names)), None)


def mentioned(text: str, mentions: Sequence[str], oncall: Sequence[str]) -> list[str]:
    """The on-call agents a message names, in its mentions or as @agent in its text."""
    named = set(mentions) | set(re.findall(r"@([A-Za-z0-9._:-]+)", text))
    return sorted(a for a in oncall if a in named)


def _unit(x: float) -> float:
    return 0.0 if math.isnan(x) else min(1.0, max(0.0, x))


# --------------------------------------------------------------------------- incidents


def incident_of(open_incidents: Mapping[str, dict], channel_id: str, message_id: str,
                created_ms: int, assessment: Assessment, window_s: float
                ) -> tuple[str, bool, dict[str, dict]]:
    """(incident id, whether this message opened it, the channel's open incidents after).

    A detected message joins the channel's most recent incident seen less than
    ``window_s`` before it on the same service (or where either names none); otherwise
    it opens one whose id derives from the channel and the message, so a replay finds
    the same id (and a replayed opener is the opener again).
    """
    for incident_id, seen in open_incidents.items():
        if seen["opened_by"] == message_id:  # a replay of the opening message
            return incident_id, True, dict(open_incidents)
    window_ms = window_s * 1000
    current = [(seen["last_ms"], incident_id) for incident_id, seen in open_incidents.items()
               if 0 <= created_ms - seen["last_ms"] <= window_ms or seen["last_ms"] > created_ms]
    for _, incident_id in sorted(current, reverse=True):
        seen = open_incidents[incident_id]
        if None in (seen["service"], assessment.service) or \
                seen["service"] == assessment.service:
            after = {**open_incidents, incident_id: {
                **seen, "last_ms": max(seen["last_ms"], created_ms),
                "service": seen["service"] or assessment.service}}
            return incident_id, False, after
    incident_id = derived_id(channel_id, message_id, "incident")
    live = {i: s for i, s in open_incidents.items() if created_ms - s["last_ms"] <= window_ms}
    live[incident_id] = {"opened_by": message_id, "last_ms": created_ms,
                         "service": assessment.service}
    kept = sorted(live.items(), key=lambda item: item[1]["last_ms"])[-OPEN_KEPT:]
    return incident_id, True, dict(kept)


def detected_record(message: ChatMessage, assessment: Assessment, incident_id: str,
                    opened: bool, now: datetime, config_version: str) -> IncidentDetected:
    """The IncidentDetected event of ``message``; its id derives from the message's."""
    return {
        "event_id": derived_id(message["event_id"], "incident"), "incident_id": incident_id,
        "opened": opened, "channel_id": message["channel_id"],
        "message_id": message["event_id"], "author_id": message["author_id"],
        "text": message["text"], "severity": assessment.severity,
        "service": assessment.service, "score": assessment.score,
        "evidence": [{"signal": s.signal, "value": s.value, "detail": s.detail}
                     for s in assessment.evidence],
        "message_at": message["created_at"], "detected_at": now,
        "config_version": config_version,
    }


def detect(message: ChatMessage, embedding: np.ndarray, channel: Mapping[str, Any],
           oncall: Sequence[str], known: Exemplars, config: IncidentConfig, now: datetime
           ) -> tuple[IncidentDetected | None, dict[str, dict]]:
    """The IncidentDetected event of a message (None when it reports none) and the
    channel's open incidents after it. Only people's messages are assessed: agents
    discuss incidents (and quote runbooks) without reporting them."""
    open_incidents = dict(channel.get("incidents") or {})
    if message["author_kind"] != "HUMAN" or not config.enabled:
        return None, open_incidents
    assessment = assess(message["text"], embedding,
                        mentioned(message["text"], message["mentions"], oncall), known, config)
    if not assessment.detected:
        return None, open_incidents
    incident_id, opened, open_incidents = incident_of(
        open_incidents, message["channel_id"], message["event_id"],
        epoch_ms(message["created_at"]), assessment, config.window_s)
    return detected_record(message, assessment, incident_id, opened, now,
                           config.version), open_incidents


def first_response(incident: IncidentDetected, on_call: Mapping[str, AgentProfile],
                   config: IncidentConfig) -> list[ToolRequest]:
    """The on-call agent's first moves when an incident opens at a severity of
    ``config.first_response`` in a channel where one can act (``on_call``: the on-call
    agents' profiles; the first by id in the channel, active or working, acts): open
    the incident's ticket, then page the people on call. Request ids derive from the
    incident, so a replay asks again for the same runs, which the tool ledger runs once."""
    present = sorted(a for a, p in on_call.items() if incident["channel_id"] in p["channels"]
                     and p["state"] in ELIGIBLE_STATES)
    if not incident["opened"] or incident["severity"] not in config.first_response or \
            not present:
        return []
    agent, incident_id = present[0], incident["incident_id"]
    title = " ".join(incident["text"].split())[:200]
    service = {"service": incident["service"]} if incident["service"] else {}
    asks = [("ticket.create", {"title": title if len(title) >= 3 else "Incident reported",
                               "severity": incident["severity"], "incident_id": incident_id,
                               "message_ids": [incident["message_id"]], **service}),
            ("notify", {"message": f"{incident['severity']} incident reported by "
                                   f"{incident['author_id']}: {title}"[:500],
                        "severity": incident["severity"], "incident_id": incident_id})]
    return [{"event_id": derived_id(incident_id, "first-response", tool),
             "channel_id": incident["channel_id"], "agent_id": agent, "tool": tool,
             "arguments_json": json.dumps(arguments), "source_message_id": incident["message_id"],
             "reason": f"first response to the {incident['severity']} incident it detected",
             "requested_at": incident["detected_at"]} for tool, arguments in asks]

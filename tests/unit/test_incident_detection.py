"""Incident detection as plain functions: config, signals, severity, service, joining."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone

import numpy as np
import pytest
import yaml

from schemas import codec
from streams.domain.incidents.detection import (
    DEFAULT_CONFIG_PATH,
    OPEN_KEPT,
    Assessment,
    Exemplars,
    assess,
    detect,
    exemplar_texts,
    exemplars,
    first_response,
    found_words,
    incident_of,
    load_config,
    mentioned,
    service_of,
)
from support.samples import sample

E = np.eye(4)
KNOWN = Exemplars(incidents=E[:3], severities=("SEV1", "SEV2", "SEV3"),
                  texts=("all down", "slow for some", "cert expires"), calm=E[3:])
CONFIG = load_config()
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


def test_the_shipped_config_loads_and_names_every_exemplar():
    assert CONFIG.enabled and 0 < CONFIG.threshold <= 1
    texts = exemplar_texts(CONFIG)
    assert len(texts) >= 40 and set(CONFIG.calm) <= texts
    vectors = {t: np.ones(4) for t in texts}
    built = exemplars(CONFIG, vectors)
    assert built.incidents.shape == (len(texts) - len(CONFIG.calm), 4)
    assert set(built.severities) == {"SEV1", "SEV2", "SEV3"}
    assert np.allclose(np.linalg.norm(built.calm, axis=1), 1)


@pytest.mark.parametrize("change, named", [
    (lambda d: d.pop("window_s"), "missing"),
    (lambda d: d.update(surprise=1), "unknown"),
    (lambda d: d["weights"].pop("mention"), "weights"),
    (lambda d: d.update(threshold=1.5), "threshold"),
    (lambda d: d.update(enabled="yes"), "enabled"),
    (lambda d: d["words"].pop("SEV3"), "words"),
    (lambda d: d.update(calm=[]), "calm"),
])
def test_a_wrong_config_is_refused_by_name(tmp_path, change, named):
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    change(data)
    path = tmp_path / "incidents.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=named):
        load_config(path)


def test_words_match_whole_words_in_either_language():
    assert found_words("The API is DOWN, 502s everywhere", ["down", "502"]) == ["down", "502"]
    assert found_words("download the report", ["down"]) == []
    assert found_words("Le serveur est en panne", ["en panne", "panne"]) == ["en panne", "panne"]
    assert service_of("@nox Serveur down", CONFIG) == "server"
    assert service_of("checkout is broken", CONFIG) == "checkout"
    assert service_of("hello there", CONFIG) is None
    assert mentioned("@nox Serveur down", [], ["nox", "ops"]) == ["nox"]
    assert mentioned("help", ["ops"], ["nox", "ops"]) == ["ops"]


def test_a_message_like_an_incident_with_its_words_is_detected_with_evidence():
    found = assess("Production is down for everyone", E[0], [], KNOWN, CONFIG)
    assert found.detected and found.severity == "SEV1"
    signals = {s.signal: s for s in found.evidence}
    assert signals["similarity"].value == 1.0 and "all down" in signals["similarity"].detail
    assert "down" in signals["words"].detail and "mention" not in signals
    w = CONFIG.weights
    assert found.score == pytest.approx(min(1.0, w["similarity"] + w["words"]))


def test_alarming_words_in_calm_chat_are_not_an_incident():
    calm = assess("I'm down for lunch", E[3], [], KNOWN, CONFIG)
    assert not calm.detected and calm.score == pytest.approx(CONFIG.weights["words"])
    # Disabled detection reports nothing, whatever the message.
    off = dataclasses.replace(CONFIG, enabled=False)
    assert not assess("Production is down", E[0], [], KNOWN, off).detected


def test_an_oncall_mention_counts_and_words_steer_the_severity():
    # Nearer calm chat than any incident, as near the SEV1 exemplar as the SEV2 one.
    between = (E[0] + E[1] + 1.2 * E[3]) / np.linalg.norm([1, 1, 0, 1.2])
    found = assess("@nox errors for some users", between, ["nox"], KNOWN, CONFIG)
    assert {s.signal for s in found.evidence} == {"words", "mention"}
    assert found.detected and found.severity == "SEV2"  # its words tip the tie
    # A wrongly sized or zero embedding only loses the similarity signal.
    assert assess("down", np.zeros(7), [], KNOWN, CONFIG).score == \
        pytest.approx(CONFIG.weights["words"])


def assessment(service=None, severity="SEV1") -> Assessment:
    return Assessment(detected=True, score=0.9, severity=severity, service=service,
                      evidence=())


def test_messages_of_one_incident_join_it_within_the_window():
    first, opened, state = incident_of({}, "ops", "m1", 1_000, assessment("api"), 60)
    assert opened and state[first]["opened_by"] == "m1"
    same, opened, state = incident_of(state, "ops", "m2", 30_000, assessment(None), 60)
    assert (same, opened) == (first, False) and state[first]["last_ms"] == 30_000
    other, opened, state = incident_of(state, "ops", "m3", 31_000, assessment("email"), 60)
    assert opened and other != first and len(state) == 2
    later, opened, state = incident_of(state, "ops", "m4", 200_000, assessment("api"), 60)
    assert opened and later not in (first, other) and set(state) == {later}
    # Replays find the same incident: the opener opens it again, a joiner joins it again.
    assert incident_of(state, "ops", "m4", 200_000, assessment("api"), 60)[:2] == (later, True)
    assert incident_of({}, "ops", "m4", 200_000, assessment("api"), 60)[0] == later


def test_a_channel_remembers_a_bounded_number_of_open_incidents():
    state: dict = {}
    for n in range(OPEN_KEPT + 5):
        _, _, state = incident_of(state, "ops", f"m{n}", n, assessment(f"svc{n}"), 3600)
    assert len(state) == OPEN_KEPT


def test_a_persons_incident_report_becomes_an_event_and_opens_the_channels_incident():
    _, message = sample("m1")
    message = {**message, "author_kind": "HUMAN", "text": "Payments are down!", "mentions": []}
    record, open_incidents = detect(message, E[0], {}, ["nox"], KNOWN, CONFIG, NOW)
    assert record is not None and record["opened"] and record["severity"] == "SEV1"
    assert record["service"] == "checkout" and set(open_incidents) == {record["incident_id"]}
    assert codec.decode(codec.encode("IncidentDetected", record))[1]["text"] == message["text"]
    again, _ = detect(message, E[0], {"incidents": open_incidents}, ["nox"], KNOWN, CONFIG, NOW)
    assert again == record  # a replay writes the same event
    agent = {**message, "author_kind": "AGENT"}
    assert detect(agent, E[0], {}, ["nox"], KNOWN, CONFIG, NOW) == (None, {})
    calm = {**message, "text": "lunch?"}
    assert detect(calm, E[3], {"incidents": open_incidents}, [], KNOWN, CONFIG, NOW) == \
        (None, open_incidents)


def test_a_sev1_opening_gets_the_oncall_agents_first_response_once():
    _, message = sample("m1")
    message = {**message, "author_kind": "HUMAN", "text": "Checkout is down!", "mentions": []}
    record, _ = detect(message, E[0], {}, ["nox"], KNOWN, CONFIG, NOW)
    assert record is not None and record["severity"] == "SEV1"
    channel = message["channel_id"]
    on_call = {"nox-2": {"channels": [channel], "state": "ACTIVE"},
               "nox": {"channels": [channel], "state": "WORKING"},
               "nox-0": {"channels": [channel], "state": "PAUSED"},  # cannot act now
               "nox-1": {"channels": ["elsewhere"], "state": "ACTIVE"}}
    ticket, page = first_response(record, on_call, CONFIG)
    assert (ticket["tool"], page["tool"]) == ("ticket.create", "notify")
    assert ticket["agent_id"] == page["agent_id"] == "nox"
    assert ticket["channel_id"] == message["channel_id"]
    arguments = json.loads(ticket["arguments_json"])
    assert arguments["incident_id"] == record["incident_id"]
    assert arguments["severity"] == "SEV1" and arguments["service"] == "checkout"
    assert arguments["message_ids"] == [message["event_id"]]
    assert json.loads(page["arguments_json"])["incident_id"] == record["incident_id"]
    for request in (ticket, page):
        codec.encode("ToolRequest", request)
    # The same incident asks for the same runs (the ledger runs them once).
    assert first_response(record, on_call, CONFIG) == [ticket, page]
    # Nobody on call, a joined message, or a lesser severity: no first response.
    assert first_response(record, {a: on_call[a] for a in ("nox-0", "nox-1")}, CONFIG) == []
    assert first_response({**record, "opened": False}, on_call, CONFIG) == []
    assert first_response({**record, "severity": "SEV2"}, on_call, CONFIG) == []

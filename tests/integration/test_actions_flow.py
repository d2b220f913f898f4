"""Tools and votes end to end: a worker on the real broker, Triton and Qdrant.

Agents act through the tools agent (permissions, sandbox) and decide together
through the votes agent (tallies, deadlines). The voters of the gated-tool tests are
paused agents: still eligible, never asked by the generator, so the test casts
their ballots and the outcome is known. The last test lets active agents vote
through the generator.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import psycopg
import pytest

from conftest import run_agora
from gateway.registry import Registry
from ops.core import kafka
from ops.core.kafka import ensure_topics
from ops.devstack.process import members, start_worker, stop, survivors
from ops.store.ledger import ToolLedger
from ops.store.tickets import TicketStore
from schemas import codec
from schemas.topics import (
    ALL,
    CHAT_MESSAGES,
    DEADLETTER,
    TOOL_APPROVED,
    TOOL_REQUESTS,
    TOOL_RESULTS,
    VOTE_RESULTS,
    VOTES,
)
from streams.domain.tools.records import new_request, result_events, vote_id_of
from streams.domain.votes.records import new_ballot, new_proposal
from support.kafka import publish_events

pytestmark = pytest.mark.stack
DEADLINE_S = 15


@pytest.fixture(scope="module")
def team(settings):
    """A channel with a requester (backend developer: shell, calculator) and three
    paused voters."""
    ensure_topics(settings, ALL)
    suffix = uuid.uuid4().hex[:6]
    channel, registry = f"ops-{suffix}", Registry(settings)
    requester = f"dev-{suffix}"
    registry.create("developer-backend", channel, requester)
    voters = [f"voter{i}-{suffix}" for i in range(3)]
    for voter in voters:
        registry.create("moderator-quality", channel, voter)
        registry.set_state(voter, "PAUSED", "votes by the test")
    # Active voters of a second channel, known to the worker from its start: a vote
    # naming agents the worker does not know fails at once.
    deciders = [f"lead-{suffix}", f"writer-{suffix}"]
    registry.create("developer-frontend", f"{channel}-decide", deciders[0])
    registry.create("creative-writer", f"{channel}-decide", deciders[1])
    # NOX on call in a channel of its own; the requester may open tickets too.
    nox = f"nox-{suffix}"
    registry.create("devops-oncall", f"{channel}-oncall", nox)
    registry.grant(requester, ["tool:ticket.create"])
    return {"channel": channel, "requester": requester, "voters": voters, "suffix": suffix,
            "deciders": deciders, "nox": nox, "oncall": f"{channel}-oncall"}


@pytest.fixture(scope="module")
def worker(settings, team):
    proc = start_worker(settings, "actions", AGORA_VOTE_DEADLINE_S=str(DEADLINE_S))
    tracked = members(proc)
    yield proc
    stop(proc, grace_s=15)
    log = settings.stack_dir / "logs" / "worker-actions.log"
    print("--- last lines of the worker log:\n" + "\n".join(log.read_text().splitlines()[-60:]))
    assert not survivors(tracked)


def request(settings, team, tool: str, arguments: dict, agent_id: str | None = None,
            channel: str | None = None) -> dict:
    channel = channel or team["channel"]
    record = new_request(agent_id or team["requester"], channel, tool, arguments,
                         "the test needs it")
    publish_events(settings, TOOL_REQUESTS.name, [("ToolRequest", channel, record)])
    return record


def ballot(settings, team, vote_id: str, voter: str, choice: str) -> dict:
    record = new_ballot(vote_id, team["channel"], voter, choice, "by the test")
    publish_events(settings, VOTES.name, [("Ballot", vote_id, record)])
    return record


def result_of(results, req: dict, timeout_s: float = 60) -> dict:
    [found] = results.wait(lambda n, r: n == "ToolResult" and r["request_id"] == req["event_id"],
                           timeout_s=timeout_s)
    return found


def never_ran(settings, req: dict) -> bool:
    """No sandbox was started for the request (the worker logs each start)."""
    log = settings.stack_dir / "logs" / "worker-actions.log"
    return not any("tools.sandbox_run" in line and req["event_id"] in line
                   for line in log.read_text().splitlines())


def test_a_permitted_tool_call_returns_its_result_into_the_channel(settings, team, worker,
                                                                   reader):
    results, chat = reader(TOOL_RESULTS.name), reader(CHAT_MESSAGES.name)
    req = request(settings, team, "calculator", {"expression": "0.17 * 2340"})
    result = result_of(results, req)
    assert result["status"] == "OK" and "397.8" in result["output"], result
    assert result["error"] is None and result["vote_id"] is None
    assert result["started_at"] is not None and result["duration_ms"] > 0
    [notice] = chat.wait(lambda n, r: r["metadata"].get("tool_request_id") == req["event_id"])
    assert notice["author_kind"] == "SYSTEM" and notice["channel_id"] == team["channel"]
    assert "397.8" in notice["text"] and notice["metadata"]["status"] == "OK"


def test_denied_and_invalid_requests_run_nothing(settings, team, worker, reader):
    results = reader(TOOL_RESULTS.name)
    not_its_tool = request(settings, team, "chart_generator",
                           {"kind": "bar", "title": "t", "labels": ["a"], "values": [1]})
    stranger = request(settings, team, "calculator", {"expression": "1+1"},
                       agent_id=f"nobody-{team['suffix']}")
    paused = request(settings, team, "text_formatter", {"text": "hi", "operation": "upper"},
                     agent_id=team["voters"][0])
    bad_args = request(settings, team, "calculator", {"formula": "1+1"})
    unknown = request(settings, team, "teleport", {})
    expected = {not_its_tool["event_id"]: ("DENIED", "not one of"),
                stranger["event_id"]: ("DENIED", "unknown agent"),
                paused["event_id"]: ("DENIED", "PAUSED"),
                bad_args["event_id"]: ("FAILED", "invalid"),
                unknown["event_id"]: ("FAILED", "unknown tool")}
    found = results.wait(lambda n, r: r["request_id"] in expected, count=len(expected))
    for result in found:
        status, reason = expected[result["request_id"]]
        assert result["status"] == status and reason in result["error"], result
        assert result["started_at"] is None and result["duration_ms"] == 0
    for req in (not_its_tool, stranger, paused, bad_args, unknown):
        assert never_ran(settings, req)


def test_a_vote_gated_tool_runs_only_after_three_ballots_pass(settings, team, worker, reader):
    votes, outcomes = reader(VOTES.name), reader(VOTE_RESULTS.name)
    results = reader(TOOL_RESULTS.name)
    token = uuid.uuid4().hex
    req = request(settings, team, "shell", {"command": f"echo gated-{token}"})
    vote_id = vote_id_of(req["event_id"])
    [proposal] = votes.wait(lambda n, r: n == "VoteProposal" and r["vote_id"] == vote_id)
    assert proposal["vote_type"] == "TOOL_USAGE" and proposal["tool_request_id"] == req["event_id"]
    assert proposal["strategy"] == "CONSENSUS"

    first, second, third = team["voters"]
    ballot(settings, team, vote_id, first, "yes")
    ballot(settings, team, vote_id, second, "yes")
    again = ballot(settings, team, vote_id, first, "no")
    own = ballot(settings, team, vote_id, team["requester"], "yes")
    rejected = outcomes.wait(lambda n, r: n == "BallotRejected" and r["vote_id"] == vote_id,
                             count=2)
    assert {(r["ballot_event_id"], r["reason"]) for r in rejected} == {
        (again["event_id"], "DUPLICATE"), (own["event_id"], "INELIGIBLE")}
    results.poll(2)
    assert not [r for n, r in results.records if r["request_id"] == req["event_id"]]
    assert never_ran(settings, req)  # two of three ballots: the shell has not run

    ballot(settings, team, vote_id, third, "yes")
    [vote] = outcomes.wait(lambda n, r: n == "VoteResult" and r["vote_id"] == vote_id)
    assert vote["outcome"] == "PASSED" and vote["ballots_counted"] == 3
    assert vote["eligible_count"] == 3 and vote["tally"]["yes"] == 3
    result = result_of(results, req)
    assert result["status"] == "OK" and f"gated-{token}" in result["output"], result["error"]
    assert result["vote_id"] == vote_id

    late = ballot(settings, team, vote_id, third, "no")
    [rejection] = outcomes.wait(lambda n, r: n == "BallotRejected"
                                and r["ballot_event_id"] == late["event_id"])
    assert rejection["reason"] == "LATE"


def test_a_hostile_command_passed_by_vote_leaves_the_worker_working(settings, team, worker,
                                                                     reader):
    votes, results = reader(VOTES.name), reader(TOOL_RESULTS.name)
    bomb = request(settings, team, "shell", {"command": "f() { f | f & }; f; sleep 60"})
    vote_id = vote_id_of(bomb["event_id"])
    votes.wait(lambda n, r: n == "VoteProposal" and r["vote_id"] == vote_id)
    for voter in team["voters"]:
        ballot(settings, team, vote_id, voter, "yes")
    result = result_of(results, bomb)
    assert result["status"] in ("TIMEOUT", "FAILED") and result["error"], result
    after = request(settings, team, "calculator", {"expression": "2**10"})
    assert result_of(results, after)["output"].startswith("2**10 = 1024")
    assert worker.pid in members(worker)  # the worker itself is alive and well


def test_a_failed_vote_rejects_the_tool(settings, team, worker, reader):
    votes, outcomes = reader(VOTES.name), reader(VOTE_RESULTS.name)
    results = reader(TOOL_RESULTS.name)
    req = request(settings, team, "shell", {"command": "echo should-not-run"})
    vote_id = vote_id_of(req["event_id"])
    votes.wait(lambda n, r: n == "VoteProposal" and r["vote_id"] == vote_id)
    ballot(settings, team, vote_id, team["voters"][0], "yes")
    ballot(settings, team, vote_id, team["voters"][1], "no")
    [vote] = outcomes.wait(lambda n, r: n == "VoteResult" and r["vote_id"] == vote_id)
    assert vote["outcome"] == "FAILED"  # consensus broken: closed before the third ballot
    result = result_of(results, req)
    assert result["status"] == "REJECTED" and "FAILED" in result["error"]
    assert result["output"] == "" and never_ran(settings, req)


def test_an_expired_vote_rejects_the_tool(settings, team, worker, reader):
    outcomes, results = reader(VOTE_RESULTS.name), reader(TOOL_RESULTS.name)
    req = request(settings, team, "shell", {"command": "echo should-not-run"})
    vote_id = vote_id_of(req["event_id"])
    [vote] = outcomes.wait(lambda n, r: n == "VoteResult" and r["vote_id"] == vote_id,
                           timeout_s=DEADLINE_S + 30)
    assert vote["outcome"] == "EXPIRED" and vote["ballots_counted"] == 0
    result = result_of(results, req)
    assert result["status"] == "REJECTED" and "EXPIRED" in result["error"]
    assert never_ran(settings, req)


def test_bad_vote_records_are_dead_lettered_or_rejected(settings, team, worker, reader):
    outcomes, dead = reader(VOTE_RESULTS.name), reader(DEADLETTER.name)
    producer = kafka.producer(settings)
    producer.produce(VOTES.name, key=b"garbage", value=b"\x00not avro")
    assert producer.flush(10) == 0
    [letter] = dead.wait(lambda n, r: r["source_topic"] == VOTES.name and r["key"] == b"garbage")
    assert letter["stage"] == "votes" and letter["reason"]
    stray = ballot(settings, team, str(uuid.uuid4()), team["voters"][0], "yes")
    [rejection] = outcomes.wait(lambda n, r: n == "BallotRejected"
                                and r["ballot_event_id"] == stray["event_id"])
    assert rejection["reason"] == "UNKNOWN_VOTE"


def test_active_agents_cast_their_ballots_through_the_generator(settings, team, worker, reader):
    channel, agents = f"{team['channel']}-decide", team["deciders"]
    votes, outcomes, chat = reader(VOTES.name), reader(VOTE_RESULTS.name), reader(CHAT_MESSAGES.name)
    proposal = new_proposal(channel, "human:carol", "Ship the new onboarding page on Monday?",
                            vote_type="PROJECT_DECISION", deadline_s=240, quorum=1.0,
                            eligible_voters=agents)
    publish_events(settings, VOTES.name, [("VoteProposal", proposal["vote_id"], proposal)])

    [call] = chat.wait(lambda n, r: r["metadata"].get("kind") == "vote_call"
                       and r["metadata"].get("vote_id") == proposal["vote_id"])
    assert sorted(call["mentions"]) == sorted(agents) and call["author_kind"] == "SYSTEM"
    cast = votes.wait(lambda n, r: n == "Ballot" and r["vote_id"] == proposal["vote_id"],
                      count=2, timeout_s=240)
    assert {b["voter_id"] for b in cast} == set(agents)
    assert all(b["choice"] in ("yes", "no", "abstain") for b in cast)
    [vote] = outcomes.wait(lambda n, r: n == "VoteResult"
                           and r["vote_id"] == proposal["vote_id"], timeout_s=60)
    assert vote["ballots_counted"] == 2 and vote["eligible_count"] == 2
    assert vote["outcome"] in ("PASSED", "FAILED", "TIED")
    [closed] = chat.wait(lambda n, r: r["metadata"].get("kind") == "vote_result"
                         and r["metadata"].get("vote_id") == proposal["vote_id"])
    assert vote["outcome"] in closed["text"]
    # Every voter also said why in the channel, replying to the vote call.
    chat.wait(lambda n, r: r["reply_to"] == call["event_id"] and r["author_id"] in agents,
              count=2, timeout_s=60)


def test_the_cli_opens_a_weighted_vote_and_casts_ballots(settings, team, worker, reader):
    def agora(*args: str) -> str:
        done = run_agora(settings.stack_dir, *args, timeout_s=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert "shell" in agora("tools", "list")
    outcomes = reader(VOTE_RESULTS.name)
    first, second, third = team["voters"]
    vote_id = agora("vote", "start", "Move the standup to 10:00?", "-c", team["channel"],
                    "--strategy", "WEIGHTED", "--voter", first, "--voter", second,
                    "--voter", third, "--weight", f"{first}=3", "--quorum", "0.5")
    agora("vote", "cast", vote_id, "maybe", "--voter", third, "-c", team["channel"])
    [rejected] = outcomes.wait(lambda n, r: n == "BallotRejected" and r["vote_id"] == vote_id)
    assert rejected["reason"] == "INVALID_CHOICE" and rejected["voter_id"] == third
    agora("vote", "cast", vote_id, "yes", "--voter", first, "-c", team["channel"])
    agora("vote", "cast", vote_id, "no", "--voter", second, "-c", team["channel"])
    # 3 against 1 by weight: passed whatever the third voter still does, so it closes.
    [vote] = outcomes.wait(lambda n, r: n == "VoteResult" and r["vote_id"] == vote_id)
    assert (vote["outcome"], vote["winning_option"]) == ("PASSED", "yes")
    assert vote["tally"] == {"yes": 3.0, "no": 1.0, "abstain": 0.0}


def pass_vote(settings, team, votes, req: dict) -> str:
    vote_id = vote_id_of(req["event_id"])
    votes.wait(lambda n, r: n == "VoteProposal" and r["vote_id"] == vote_id)
    for voter in team["voters"]:
        ballot(settings, team, vote_id, voter, "yes")
    return vote_id


def test_a_forged_approval_never_runs(settings, team, worker, reader):
    results, dead = reader(TOOL_RESULTS.name), reader(DEADLETTER.name)
    forged = new_request(team["requester"], team["channel"], "shell",
                         {"command": "echo forged"}, "approved by nobody")
    publish_events(settings, TOOL_APPROVED.name, [("ToolRequest", team["channel"], forged)])
    [letter] = dead.wait(lambda n, r: r["source_topic"] == TOOL_APPROVED.name
                         and forged["event_id"].encode() in (r["value"] or b""))
    assert letter["stage"] == "tools" and "no passed tool-usage vote" in letter["reason"]
    results.poll(2)
    assert not [r for _, r in results.records if r["request_id"] == forged["event_id"]]
    assert never_ran(settings, forged)


def test_a_request_swapped_after_its_vote_opened_never_runs(settings, team, worker, reader):
    votes, results, dead = reader(VOTES.name), reader(TOOL_RESULTS.name), reader(DEADLETTER.name)
    token = uuid.uuid4().hex
    req = request(settings, team, "shell", {"command": f"echo voted-{token}"})
    vote_id = vote_id_of(req["event_id"])
    votes.wait(lambda n, r: n == "VoteProposal" and r["vote_id"] == vote_id)
    swapped = {**req, "arguments_json": f'{{"command": "echo swapped-{token}"}}'}
    publish_events(settings, VOTES.name, [("ToolRequest", vote_id, swapped)])
    [letter] = dead.wait(lambda n, r: r["source_topic"] == VOTES.name
                         and f"swapped-{token}".encode() in (r["value"] or b""))
    assert letter["stage"] == "votes" and "different tool request" in letter["reason"]
    pass_vote(settings, team, votes, req)
    result = result_of(results, req)
    assert result["status"] == "OK" and f"voted-{token}" in result["output"], result
    # The swapped request sent straight to the approvals topic after the vote passed.
    publish_events(settings, TOOL_APPROVED.name, [("ToolRequest", team["channel"], swapped)])
    [letter] = dead.wait(lambda n, r: r["source_topic"] == TOOL_APPROVED.name
                         and f"swapped-{token}".encode() in (r["value"] or b""))
    assert "differs from the one vote" in letter["reason"]
    results.poll(2)
    assert not [r for _, r in results.records if f"swapped-{token}" in r["output"]]


@pytest.mark.parametrize("event_id", ["../../victim", "/tmp/agora-victim", "..", "A" * 36])
def test_a_request_id_that_is_not_a_uuid_is_dead_lettered(settings, team, worker, reader,
                                                          event_id):
    dead = reader(DEADLETTER.name)
    record = {**new_request(team["requester"], team["channel"], "calculator",
                            {"expression": "1+1"}, "traversal"), "event_id": event_id}
    producer = kafka.producer(settings)
    producer.produce(TOOL_REQUESTS.name, key=team["channel"].encode(),
                     value=codec.encode("ToolRequest", record))
    assert producer.flush(10) == 0
    [letter] = dead.wait(lambda n, r: r["source_topic"] == TOOL_REQUESTS.name
                         and event_id.encode() in (r["value"] or b""))
    assert "is not a UUID" in letter["reason"]
    assert not (settings.stack_dir / "victim").exists()
    assert never_ran(settings, record)


def test_a_file_name_that_is_not_utf8_still_gives_a_result(settings, team, worker, reader):
    votes, results = reader(VOTES.name), reader(TOOL_RESULTS.name)
    req = request(settings, team, "shell", {"command": "touch \"$(printf 'bad\\377')\" ok"})
    pass_vote(settings, team, votes, req)
    result = result_of(results, req)
    assert result["status"] == "OK", result
    assert sorted(p.rsplit("/", 1)[1] for p in result["artifacts"]) == ["bad\ufffd", "ok"]
    assert "not valid UTF-8" in result["error"]


def test_proposals_naming_unknown_voters_fail_at_once_and_delay_no_vote(settings, team, worker,
                                                                         reader):
    outcomes = reader(VOTE_RESULTS.name)
    ghosts = [new_proposal(team["channel"], "human:mallory", f"Ghost vote {i}",
                           vote_type="PROJECT_DECISION", deadline_s=60,
                           eligible_voters=[f"ghost-{uuid.uuid4().hex[:8]}"]) for i in range(50)]
    real = new_proposal(team["channel"], "human:carol", "Rotate the on-call?",
                        vote_type="PROJECT_DECISION", deadline_s=60,
                        eligible_voters=team["voters"])
    publish_events(settings, VOTES.name, [("VoteProposal", p["vote_id"], p)
                                         for p in [*ghosts, real]])
    for voter in team["voters"]:
        ballot(settings, team, real["vote_id"], voter, "yes")
    # Before, each ghost held the votes actor for 5 s: the real vote waited 250 s.
    [vote] = outcomes.wait(lambda n, r: n == "VoteResult" and r["vote_id"] == real["vote_id"],
                           timeout_s=60)
    assert vote["outcome"] == "PASSED"
    failed = outcomes.wait(lambda n, r: n == "VoteResult" and r["vote_id"] in
                           {g["vote_id"] for g in ghosts}, count=50, timeout_s=60)
    assert all(r["outcome"] == "FAILED" and "unknown voters" in r["reason"] for r in failed)


def test_an_interrupted_run_of_a_tool_with_external_effects_is_never_run_twice(
        settings, team, worker, reader):
    votes, results = reader(VOTES.name), reader(TOOL_RESULTS.name)
    req = request(settings, team, "shell", {"command": f"echo once-{uuid.uuid4().hex}"})
    # The ledger as a worker killed during the run leaves it: claimed, then running.
    ledger = ToolLedger(settings.postgres_dsn)
    try:
        assert ledger.claim(req["event_id"], "shell", "worker-gone") is None
        ledger.running(req["event_id"])
        pass_vote(settings, team, votes, req)
        result = result_of(results, req)
        assert result["status"] == "FAILED" and "interrupted" in result["error"]
        assert "worker-gone" in result["error"] and never_ran(settings, req)
        row = ledger.claim(req["event_id"], "shell", "someone-else")
        assert row is not None and row.state == "failed" and len(row.outcome) == 2
    finally:
        ledger.close()


def test_a_finished_run_is_published_again_and_a_pure_tool_reruns(settings, team, worker,
                                                                  reader):
    results = reader(TOOL_RESULTS.name)
    ledger = ToolLedger(settings.postgres_dsn)
    try:
        # Finished before the worker died, its result unpublished: published as stored.
        done = new_request(team["requester"], team["channel"], "calculator",
                           {"expression": "6 * 7"}, "the test needs it")
        ledger.claim(done["event_id"], "calculator", "worker-gone")
        stored = result_events(done, "OK", datetime.now(timezone.utc), output="stored: 42")
        ledger.finish(done["event_id"], "done", "OK",
                      [codec.encode(name, record) for name, record in stored])
        publish_events(settings, TOOL_REQUESTS.name, [("ToolRequest", team["channel"], done)])
        assert result_of(results, done)["output"] == "stored: 42" and never_ran(settings, done)
        # Cut off while running a tool without external effects: simply run again.
        cut = new_request(team["requester"], team["channel"], "calculator",
                          {"expression": "6 * 7"}, "the test needs it")
        ledger.claim(cut["event_id"], "calculator", "worker-gone")
        ledger.running(cut["event_id"])
        publish_events(settings, TOOL_REQUESTS.name, [("ToolRequest", team["channel"], cut)])
        again = result_of(results, cut)
        assert again["status"] == "OK" and "42" in again["output"]
        assert not never_ran(settings, cut)
        assert ledger.claim(cut["event_id"], "calculator", "x").state == "done"
    finally:
        ledger.close()


def test_nox_opens_a_sev1_ticket_at_once_once_per_incident_and_resolves_it(
        settings, team, worker, reader):
    results, votes = reader(TOOL_RESULTS.name), reader(VOTES.name)
    incident = str(uuid.uuid4())

    def act(tool: str, **arguments) -> dict:
        return result_of(results, request(settings, team, tool, arguments, team["nox"],
                                          team["oncall"]))

    opened = act("ticket.create", title="API returns 502 since the deploy", severity="SEV1",
                 service="api", incident_id=incident)
    assert opened["status"] == "OK" and opened["output"].startswith("opened: INC-")
    name = opened["output"].split()[1]
    again = act("ticket.create", title="The API is down", severity="SEV1", incident_id=incident)
    assert again["output"].startswith(f"already open: {name} ")  # one ticket per incident
    assert act("ticket.update", ticket=name, status="in_progress",
               assignee="human:maya")["status"] == "OK"
    closed = act("ticket.close", ticket=name, resolution="rolled back to v1.4.2")
    assert closed["status"] == "OK" and closed["output"].startswith("resolved: ")
    missing = act("ticket.close", ticket="INC-999999999", resolution="nothing")
    assert missing["status"] == "FAILED" and "no ticket" in missing["error"]
    tickets = TicketStore(settings.postgres_dsn)
    try:
        row = tickets.get(name)
        assert (row["status"], row["assignee"], row["incident_id"]) == \
            ("resolved", "human:maya", incident)
        assert row["resolution"] == "rolled back to v1.4.2" and row["closed_at"] is not None
    finally:
        tickets.close()
    # Anyone else's Sev1 ticket waits for the channel's vote; it opens nothing yet.
    gated = request(settings, team, "ticket.create", {"title": "Checkout down",
                                                      "severity": "SEV1"})
    [proposal] = votes.wait(lambda n, r: n == "VoteProposal"
                            and r["tool_request_id"] == gated["event_id"])
    assert proposal["vote_type"] == "TOOL_USAGE" and never_ran(settings, gated)


def test_a_worker_killed_after_writing_the_ticket_opens_no_second_one(settings, team, worker,
                                                                      reader):
    results = reader(TOOL_RESULTS.name)
    incident = str(uuid.uuid4())
    req = new_request(team["nox"], team["oncall"], "ticket.create",
                      {"title": "Serveur down", "severity": "SEV1", "incident_id": incident},
                      "the test needs it")
    # What the killed worker left: the run claimed and running, the ticket written, the
    # result never published (so the request's offset was never committed).
    ledger, tickets = ToolLedger(settings.postgres_dsn), TicketStore(settings.postgres_dsn)
    try:
        ledger.claim(req["event_id"], "ticket.create", "worker-gone")
        ledger.running(req["event_id"])
        written, _ = tickets.open(req["event_id"], team["oncall"], team["nox"], "Serveur down",
                                  "SEV1", None, incident)
        publish_events(settings, TOOL_REQUESTS.name, [("ToolRequest", team["oncall"], req)])
        result = result_of(results, req)
        assert result["status"] == "OK"
        assert result["output"].startswith(f"already open: INC-{written['id']} ")
        with psycopg.connect(settings.postgres_dsn) as conn:
            assert conn.execute("SELECT count(*) FROM tickets WHERE incident_id = %s",
                                (incident,)).fetchone()[0] == 1
        assert ledger.claim(req["event_id"], "ticket.create", "x").state == "done"
    finally:
        ledger.close(), tickets.close()

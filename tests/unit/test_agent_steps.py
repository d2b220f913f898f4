"""The Faust agents' own steps, without Kafka: each agent is a class whose methods take a
record and return what it would send, so they run here on a Faust app that is never
started, with the registry as plain data."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from ops.core.config import Settings
from schemas.topics import TOOL_REQUESTS
from streams.agents.tools import Tools
from streams.agents.votes import Votes
from streams.app import create_app
from streams.domain.registry import new_profile
from streams.domain.tools.records import new_request
from streams.domain.votes import ledger
from streams.domain.votes.records import new_proposal

CHANNEL = "general"


@pytest.fixture
def app(tmp_path):
    return create_app(Settings(stack_dir=tmp_path, _env_file=None))


@pytest.fixture
def services(tmp_path):
    agents = {"developer-backend": new_profile("developer-backend", [CHANNEL]),
              "creative-writer": new_profile("creative-writer", [CHANNEL]),
              "analyst-data": new_profile("analyst-data", ["elsewhere"])}
    agents["creative-writer"]["state"] = "PAUSED"
    registry = SimpleNamespace(data=agents, get=agents.get)
    return SimpleNamespace(settings=Settings(stack_dir=tmp_path, _env_file=None),
                           registry=registry, ledger=None, tickets=None, oncall=None)


def _tools_asked(app, services, tool: str, arguments: dict, agent: str = "developer-backend"):
    request = new_request(agent, CHANNEL, tool, arguments, "a test")
    message = SimpleNamespace(topic=TOOL_REQUESTS.name)
    return request, asyncio.run(Tools(app, services).handle(request, message))


def test_the_tools_agent_fails_an_unknown_tool_without_running_anything(app, services):
    _, produced = _tools_asked(app, services, "teleport", {})
    [(name, result), (notice, _)] = produced
    assert (name, notice) == ("ToolResult", "ChatMessage")
    assert result["status"] == "FAILED" and "unknown tool 'teleport'" in result["error"]


def test_the_tools_agent_denies_a_tool_the_agent_may_not_use(app, services):
    _, produced = _tools_asked(app, services, "shell", {"command": "ls"}, agent="creative-writer")
    assert produced[0][1]["status"] == "DENIED"


def test_the_tools_agent_refuses_arguments_outside_the_tool_s_schema(app, services):
    _, produced = _tools_asked(app, services, "shell", {"command": ""})
    assert produced[0][1]["status"] == "FAILED" and "command" in produced[0][1]["error"]


def test_the_tools_agent_sends_a_shell_request_to_a_vote_first(app, services):
    request, produced = _tools_asked(app, services, "shell", {"command": "ls"})
    assert [name for name, _ in produced] == ["ToolRequest", "VoteProposal"]
    proposal = produced[1][1]
    assert proposal["vote_type"] == "TOOL_USAGE" and proposal["strategy"] == "CONSENSUS"
    assert proposal["tool_request_id"] == request["event_id"]
    assert json.loads(produced[0][1]["arguments_json"]) == {"command": "ls"}


def test_the_votes_agent_opens_a_vote_among_the_channel_s_voters(app, services):
    votes = Votes(app, services, table={})
    assert votes.voters(CHANNEL) == (["creative-writer", "developer-backend"],
                                     {"developer-backend"})  # paused: eligible, not asked
    proposal = new_proposal(CHANNEL, "human:maya", "Adopt the checklist?",
                            vote_type="DECISION", deadline_s=60)
    state, produced = votes.apply("VoteProposal", proposal,
                                  ledger.new(proposal["vote_id"], 0),
                                  datetime.now(timezone.utc))
    assert state["proposal"]["eligible_voters"] == ["creative-writer", "developer-backend"]
    assert not state["closed"] and produced

"""The responder's pure logic: the action schema, the few-shot prompt and the events an
action becomes. No servers: every produced record is checked against its Avro contract
with the codec instead."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.ids import derived_id
from streams import channels
from streams.registry.profiles import changed, new_profile, templates
from streams.responder.actions import (CHOICES, EXAMPLES, LINE_CHARS, VOTE_TYPES,
                                       action_schema, build_prompt, events)

TEMPLATES = sorted(templates())
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- helpers


def agent_from(template: str, **fields) -> dict:
    profile = new_profile(template, ["general"])
    codec.encode("AgentProfile", profile)  # a real registry record
    return changed(profile, **fields) if fields else profile


def chat(event_id: str, author_id: str, text: str, *, kind: str = "HUMAN",
         reply_to: str | None = None, thread_id: str | None = None, depth: int = 0,
         metadata: dict | None = None, at: datetime = T0) -> dict:
    return {"event_id": event_id, "channel_id": "general",
            "thread_id": thread_id or event_id, "reply_to": reply_to, "author_id": author_id,
            "author_kind": kind, "text": text, "mentions": [], "thread_depth": depth,
            "created_at": at, "task_id": None, "metadata": metadata or {}}


def task_for(message: dict, agent_id: str, task_id: str | None = None) -> dict:
    """An InferenceTask as the responder receives it (through the codec)."""
    record = {"event_id": task_id or str(uuid.uuid4()), "decision_id": str(uuid.uuid4()),
              "message_id": message["event_id"], "channel_id": message["channel_id"],
              "thread_id": message["thread_id"], "thread_depth": message["thread_depth"],
              "agent_id": agent_id, "context_message_ids": [],
              "created_at": T0, "deadline_at": T0 + timedelta(minutes=2)}
    return codec.decode(codec.encode("InferenceTask", record), expected="InferenceTask")[1]


def responder_message(state_entry: dict, task: dict) -> dict:
    """The message dict the responder builds from the channel history entry."""
    return {"event_id": state_entry["id"], "channel_id": task["channel_id"],
            "thread_id": state_entry["thread_id"], "thread_depth": task["thread_depth"],
            "author_id": state_entry["author_id"], "text": state_entry["text"],
            "metadata": state_entry["metadata"]}


def setup(text: str = "How slow is the orders query?", *, metadata: dict | None = None,
          thread_id: str | None = None, depth: int = 0, task_id: str | None = None):
    msg_id = str(uuid.uuid4())
    chat_msg = chat(msg_id, "alice", text, thread_id=thread_id, depth=depth,
                    metadata=metadata)
    codec.encode("ChatMessage", chat_msg)
    task = task_for(chat_msg, "developer-backend", task_id)
    message = responder_message(channels.entry(chat_msg), task)
    return task, message


def reply_only(text: str = "Let me look at the query plan.") -> dict:
    return {"reply": text, "tool_call": None, "vote": None, "ballot": None}


def assert_round_trips(name: str, record: dict) -> None:
    data = codec.encode(name, record)
    decoded_name, decoded = codec.decode(data, expected=name)
    assert decoded_name == name
    for key, value in record.items():
        if isinstance(value, datetime):
            assert decoded[key].tzinfo is not None
            assert abs(decoded[key] - value) < timedelta(milliseconds=1), key
        else:
            assert decoded[key] == value, key


def validator(tools: list[str], ballot_open: bool) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(action_schema(tools, ballot_open))


# --------------------------------------------------------------------------- action_schema


@pytest.mark.parametrize("ballot_open", [False, True])
@pytest.mark.parametrize("tools", [[], ["calculator"], ["text_formatter", "calculator"]])
def test_action_schema_is_a_valid_json_schema(tools, ballot_open):
    jsonschema.Draft202012Validator.check_schema(action_schema(tools, ballot_open))


def _string_schemas(node, path="$"):
    """Every sub-schema that admits a string (type string, or a type list with it)."""
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "string" or (isinstance(kind, list) and "string" in kind):
            yield path, node
        for key, value in node.items():
            yield from _string_schemas(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _string_schemas(value, f"{path}[{i}]")


@pytest.mark.parametrize("ballot_open", [False, True])
@pytest.mark.parametrize("template", TEMPLATES)
def test_every_string_in_the_schema_is_bounded(template, ballot_open):
    schema = action_schema(agent_from(template)["tools"], ballot_open)
    found = list(_string_schemas(schema))
    assert found, "the walk found no string at all"
    unbounded = [path for path, node in found if not isinstance(node.get("maxLength"), int)]
    assert not unbounded, f"strings without maxLength: {unbounded}"
    # No free-form container either: every object is closed, no arrays at all.
    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object":
                assert node.get("additionalProperties") is False
            assert node.get("type") != "array"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(schema)


def test_the_walk_sees_every_string_field():
    paths = {path for path, _ in _string_schemas(action_schema(["calculator"], True))}
    leaves = {p.rsplit(".", 1)[-1] for p in paths}
    assert leaves == {"reply", "input", "title", "rationale"}


def test_reply_only_action_is_accepted():
    for tools in ([], ["calculator"]):
        for ballot_open in (False, True):
            validator(tools, ballot_open).validate(reply_only())


def test_tool_call_only_for_the_agents_own_tools():
    agent = agent_from("developer-frontend")  # code_analyzer, text_formatter
    v = validator(agent["tools"], False)
    for tool in agent["tools"]:
        v.validate({**reply_only(), "tool_call": {"tool": tool, "input": "x"}})
    assert not v.is_valid({**reply_only(), "tool_call": {"tool": "calculator", "input": "1+1"}})
    assert not v.is_valid({**reply_only(), "tool_call": {"tool": "code_analyzer"}})
    assert not v.is_valid({**reply_only(),
                           "tool_call": {"tool": "code_analyzer", "input": "x", "extra": 1}})


def test_tool_call_rejected_when_the_agent_has_no_tools():
    v = validator([], False)
    assert not v.is_valid({**reply_only(), "tool_call": {"tool": "calculator", "input": "1"}})
    assert not v.is_valid({**reply_only(), "tool_call": {}})
    v.validate({**reply_only(), "tool_call": None})


def test_ballot_only_when_a_ballot_is_open():
    ballot = {"choice": "yes", "rationale": "It is the simplest option."}
    assert not validator(["calculator"], False).is_valid({**reply_only(), "ballot": ballot})
    validator(["calculator"], True).validate({**reply_only(), "ballot": ballot})
    for choice in CHOICES:
        validator([], True).validate({**reply_only(), "ballot": {"choice": choice,
                                                                 "rationale": ""}})
    assert not validator([], True).is_valid(
        {**reply_only(), "ballot": {"choice": "maybe", "rationale": ""}})


def test_votes():
    v = validator([], False)
    for vote_type in VOTE_TYPES:
        v.validate({**reply_only(), "vote": {"title": "Adopt ruff", "vote_type": vote_type}})
    for vote_type in ("TOOL_USAGE", "project_decision", "", "OTHER"):
        assert not v.is_valid({**reply_only(),
                               "vote": {"title": "Adopt ruff", "vote_type": vote_type}})
    assert not v.is_valid({**reply_only(), "vote": {"title": "no", "vote_type": VOTE_TYPES[0]}})


@pytest.mark.parametrize("field,limit", [("reply", 280), ("tool_call.input", 160),
                                         ("vote.title", 100), ("ballot.rationale", 120)])
def test_over_long_strings_are_rejected(field, limit):
    v = validator(["calculator"], True)
    base = {"reply": "ok", "tool_call": {"tool": "calculator", "input": "1"},
            "vote": {"title": "Adopt ruff", "vote_type": "PROJECT_DECISION"},
            "ballot": {"choice": "no", "rationale": "r"}}

    def with_text(text):
        action = json.loads(json.dumps(base))
        *outer, leaf = field.split(".")
        target = action[outer[0]] if outer else action
        target[leaf] = text
        return action

    v.validate(with_text("é" * limit))
    assert not v.is_valid(with_text("é" * (limit + 1)))


def test_unknown_and_missing_keys_are_rejected():
    v = validator(["calculator"], True)
    assert not v.is_valid({**reply_only(), "mood": "happy"})
    assert not v.is_valid({"reply": "hi"})  # every key is required (null when unused)
    assert not v.is_valid({**reply_only(), "reply": ""})
    assert not v.is_valid({**reply_only(),
                           "vote": {"title": "Adopt ruff", "vote_type": "PROJECT_DECISION",
                                    "deadline": "tomorrow"}})
    assert not v.is_valid({**reply_only(),
                           "ballot": {"choice": "yes", "rationale": "", "weight": 2}})


# --------------------------------------------------------------------------- build_prompt


def history_of(*messages: dict) -> list[dict]:
    state = channels.empty()
    for m in messages:
        state = channels.remember(state, m, 50)
    return state["history"]


def test_prompt_has_the_agent_and_ends_with_the_message():
    agent = agent_from("developer-backend", name="Bea")
    task, message = setup("Why is   the\n orders query\tslow?")
    prompt = build_prompt(agent, [], [], message, False)
    assert agent["system_prompt"] in prompt
    assert "Bea" in prompt and agent["agent_id"] in prompt
    assert agent["persona"] in prompt
    for tool in agent["tools"]:
        assert tool in prompt
    assert prompt.endswith("\nMessage from alice: Why is the orders query slow?\nJSON: ")
    assert "Earlier messages" not in prompt and "Recent messages" not in prompt
    assert "A vote is open" not in prompt


@pytest.mark.parametrize("template", TEMPLATES)
def test_examples_only_for_tools_the_agent_has(template):
    agent = agent_from(template)
    _, message = setup()
    prompt = build_prompt(agent, [], [], message, False)
    schema = validator(agent["tools"], False)
    for author, text, action in EXAMPLES:
        shown = f"Message from {author}: {text}\nJSON: {json.dumps(action)}" in prompt
        expected = action["tool_call"] is None or action["tool_call"]["tool"] in agent["tools"]
        assert shown == expected, (template, text)
        if shown:  # a few-shot example must itself be a valid action for this agent
            schema.validate(action)


def test_examples_depend_on_the_tools():
    _, message = setup()
    with_calc = build_prompt(agent_from("analyst-data"), [], [], message, False)
    without = build_prompt(agent_from("creative-writer"), [], [], message, False)
    assert "17 percent of 2340" in with_calc and "17 percent of 2340" not in without
    assert "tabs or spaces" in without and "Good morning everyone!" in without
    no_tools = build_prompt(agent_from("creative-writer", tools=[]), [], [], message, False)
    assert "Your tools: none." in no_tools


def test_prompt_history_memories_and_ballot():
    agent = agent_from("moderator-quality")
    vote_id = str(uuid.uuid4())
    first = chat("m1", "bob", "We should   split\nthe service.", at=T0)
    second = chat("m2", "developer-backend", "Agreed, the\t\tqueue first.", kind="AGENT",
                  reply_to="m1", thread_id="m1", depth=1, at=T0 + timedelta(seconds=5))
    trigger = chat("m3", "carol", "Please  vote\n on it.", metadata={"vote_id": vote_id},
                   at=T0 + timedelta(seconds=9))
    history = history_of(first, second, trigger)
    task = task_for(trigger, agent["agent_id"])
    message = responder_message(history[-1], task)
    memories = [{"message_id": "old", "channel_id": "general", "author_id": "dave",
                 "text": "Last  year we\nmerged them.", "created_ms": 1}]

    prompt = build_prompt(agent, history, memories, message, True)
    lines = prompt.split("\n")
    assert "dave: Last year we merged them." in lines
    assert "bob: We should split the service." in lines
    assert "developer-backend: Agreed, the queue first." in lines
    assert "Recent messages in #general:" in lines
    assert "Earlier messages that may matter:" in lines
    assert not any(line.startswith("carol:") for line in lines), "the message is not history"
    assert prompt.count("Please vote on it.") == 1
    assert lines[-3] == f"A vote is open ({vote_id}): answer with a ballot."
    assert lines[-2] == "Message from carol: Please vote on it."
    assert lines[-1] == "JSON: "
    # Memories come before the recent messages, oldest recent message first.
    assert lines.index("dave: Last year we merged them.") < lines.index(
        "bob: We should split the service.") < lines.index(
        "developer-backend: Agreed, the queue first.")

    closed = build_prompt(agent, history, memories, message, False)
    assert "A vote is open" not in closed
    assert closed.endswith("\nMessage from carol: Please vote on it.\nJSON: ")


def test_only_the_message_itself_means_no_recent_section():
    agent = agent_from("researcher-tech")
    trigger = chat("m1", "erin", "Which embedding model?")
    history = history_of(trigger)
    message = responder_message(history[0], task_for(trigger, agent["agent_id"]))
    prompt = build_prompt(agent, history, [], message, False)
    assert "Recent messages" not in prompt


def test_long_history_lines_are_cut():
    agent = agent_from("developer-backend")
    exact = chat("a", "bob", "x" * LINE_CHARS)
    longer = chat("b", "bob", "y" * (LINE_CHARS + 1))
    spaced = chat("c", "bob", "  " + "z " * LINE_CHARS)  # collapses to 2*LINE_CHARS-1 chars
    trigger = chat("d", "carol", "w" * 1000)
    history = history_of(exact, longer, spaced, trigger)
    message = responder_message(history[-1], task_for(trigger, agent["agent_id"]))
    lines = build_prompt(agent, history, [], message, False).split("\n")
    assert "bob: " + "x" * LINE_CHARS in lines
    assert "bob: " + "y" * LINE_CHARS + "..." in lines
    assert "bob: " + " ".join(["z"] * LINE_CHARS)[:LINE_CHARS] + "..." in lines
    assert "Message from carol: " + "w" * 1000 in lines  # the message itself is not cut


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template=st.sampled_from(TEMPLATES),
       texts=st.lists(st.text(max_size=2 * LINE_CHARS), max_size=8),
       memory_texts=st.lists(st.text(max_size=2 * LINE_CHARS), max_size=3),
       text=st.text(min_size=1, max_size=500), ballot_open=st.booleans())
def test_prompt_properties(template, texts, memory_texts, text, ballot_open):
    agent = agent_from(template)
    older = [chat(f"h{i}", f"user{i}", t, at=T0 + timedelta(seconds=i))
             for i, t in enumerate(texts)]
    trigger = chat("trigger", "alice", text, metadata={"vote_id": "v1"} if ballot_open else {},
                   at=T0 + timedelta(minutes=1))
    history = history_of(*older, trigger)
    message = responder_message(history[-1], task_for(trigger, agent["agent_id"]))
    memories = [{"author_id": f"mem{i}", "text": t} for i, t in enumerate(memory_texts)]

    prompt = build_prompt(agent, history, memories, message, ballot_open)
    lines = prompt.split("\n")
    assert prompt.endswith(f"\nMessage from alice: {' '.join(text.split())}\nJSON: ")
    assert ("A vote is open (v1)" in prompt) == ballot_open
    for author, t in [(f"user{i}", t) for i, t in enumerate(texts)] + [
            (m["author_id"], m["text"]) for m in memories]:
        collapsed = " ".join(t.split())
        expected = f"{author}: {collapsed[:LINE_CHARS]}" + (
            "..." if len(collapsed) > LINE_CHARS else "")
        assert expected in lines  # one line each: newlines in texts were collapsed
    if texts:
        start = lines.index("Recent messages in #general:")
        assert len(lines[start + 1:lines.index("", start)]) == len(texts)
    else:
        assert "Recent messages" not in prompt


# --------------------------------------------------------------------------- events


def _by_name(produced):
    found: dict[str, list] = {}
    for name, key, record in produced:
        found.setdefault(name, []).append((key, record))
    return found


def test_reply_only_yields_one_chat_message():
    agent = agent_from("developer-backend")
    task, message = setup(thread_id="root-1", depth=2)
    produced = events(task, agent, message, reply_only("Check the index on orders.user_id."))
    assert [(name, key) for name, key, _ in produced] == [("ChatMessage", "general")]
    reply = produced[0][2]
    assert reply["reply_to"] == message["event_id"]
    assert reply["thread_id"] == "root-1"
    assert reply["thread_depth"] == 3
    assert reply["author_kind"] == "AGENT"
    assert reply["author_id"] == agent["agent_id"]
    assert reply["task_id"] == task["event_id"]
    assert reply["channel_id"] == task["channel_id"]
    assert reply["text"] == "Check the index on orders.user_id."
    assert reply["created_at"].tzinfo is not None
    assert reply["event_id"] == derived_id(task["event_id"], "reply")
    assert_round_trips("ChatMessage", reply)


def test_a_root_message_gets_a_reply_in_its_own_thread():
    agent = agent_from("developer-backend")
    task, message = setup()
    [(_, _, reply)] = events(task, agent, message, reply_only())
    assert reply["thread_id"] == message["event_id"] and reply["thread_depth"] == 1


FULL = {"reply": "Computing it, and let us decide.",
        "tool_call": {"tool": "calculator", "input": "0.17 * 2340"},
        "vote": {"title": "Move to Postgres 16", "vote_type": "PROJECT_DECISION"},
        "ballot": {"choice": "abstain", "rationale": "Not my area."}}


def test_ids_are_deterministic_per_task():
    agent = agent_from("developer-backend")
    task_id = str(uuid.uuid4())
    task, message = setup(metadata={"vote_id": "vote-7"}, task_id=task_id)
    once = events(task, agent, message, FULL)
    again = events(dict(task), agent, dict(message), FULL)
    assert [(n, k, r["event_id"]) for n, k, r in once] == [
        (n, k, r["event_id"]) for n, k, r in again]
    ids = [r["event_id"] for _, _, r in once]
    assert len(set(ids)) == len(ids) == 4
    for value in ids:
        assert uuid.UUID(value).version == 5

    other_task, _ = setup(metadata={"vote_id": "vote-7"})
    other = events(other_task, agent, message, FULL)
    assert not set(ids) & {r["event_id"] for _, _, r in other}
    assert derived_id(task_id, "reply") != derived_id(task_id, "tool")


def test_tool_call_adds_a_tool_request():
    agent = agent_from("developer-backend")
    task, message = setup()
    action = {**reply_only("Running it."),
              "tool_call": {"tool": "calculator", "input": "0.17 * 2340"}}
    found = _by_name(events(task, agent, message, action))
    assert set(found) == {"ChatMessage", "ToolRequest"}
    [(key, request)] = found["ToolRequest"]
    assert key == task["channel_id"] == request["channel_id"]
    assert request["tool"] == "calculator"
    assert request["agent_id"] == agent["agent_id"]
    assert request["source_message_id"] == message["event_id"]
    assert request["reason"] == "Running it."
    arguments = json.loads(request["arguments_json"])
    assert isinstance(arguments, dict) and arguments == {"input": "0.17 * 2340"}
    assert request["event_id"] == derived_id(task["event_id"], "tool")
    assert_round_trips("ToolRequest", request)


def test_vote_adds_a_vote_proposal():
    agent = agent_from("moderator-quality")
    task, message = setup("Tabs or spaces, again?")
    action = {**reply_only(), "vote": {"title": "Use spaces", "vote_type": "CONFLICT_RESOLUTION"}}
    found = _by_name(events(task, agent, message, action))
    assert set(found) == {"ChatMessage", "VoteProposal"}
    [(key, proposal)] = found["VoteProposal"]
    assert key == proposal["vote_id"] == derived_id(task["event_id"], "vote")
    assert proposal["title"] == "Use spaces"
    assert proposal["vote_type"] == "CONFLICT_RESOLUTION"
    assert proposal["proposer_id"] == agent["agent_id"]
    assert proposal["channel_id"] == task["channel_id"]
    assert proposal["deadline_at"] > proposal["created_at"]
    assert_round_trips("VoteProposal", proposal)


def test_ballot_adds_a_ballot_for_the_open_vote():
    agent = agent_from("developer-frontend")
    task, message = setup("Vote please", metadata={"vote_id": "vote-42"})
    action = {**reply_only(), "ballot": {"choice": "no", "rationale": "Too risky."}}
    found = _by_name(events(task, agent, message, action))
    assert set(found) == {"ChatMessage", "Ballot"}
    [(key, ballot)] = found["Ballot"]
    assert key == ballot["vote_id"] == "vote-42"
    assert ballot["voter_id"] == agent["agent_id"]
    assert (ballot["choice"], ballot["rationale"]) == ("no", "Too risky.")
    assert ballot["event_id"] == derived_id(task["event_id"], "ballot")
    assert_round_trips("Ballot", ballot)


def test_everything_at_once_encodes():
    agent = agent_from("developer-backend")
    task, message = setup(metadata={"vote_id": "vote-1"})
    produced = events(task, agent, message, FULL)
    assert [name for name, _, _ in produced] == ["ChatMessage", "ToolRequest",
                                                 "VoteProposal", "Ballot"]
    for name, _, record in produced:
        assert_round_trips(name, record)


@st.composite
def agent_and_action(draw):
    """An agent, whether a ballot is open, and an arbitrary action its schema allows."""
    template = draw(st.sampled_from(TEMPLATES))
    tools = draw(st.sampled_from([None, []]))  # None: the template's own tools
    agent = agent_from(template) if tools is None else agent_from(template, tools=tools)
    ballot_open = draw(st.booleans())
    action = {"reply": draw(st.text(min_size=1, max_size=280)), "tool_call": None,
              "vote": None, "ballot": None}
    if agent["tools"] and draw(st.booleans()):
        action["tool_call"] = {"tool": draw(st.sampled_from(agent["tools"])),
                               "input": draw(st.text(max_size=160))}
    if draw(st.booleans()):
        action["vote"] = {"title": draw(st.text(min_size=3, max_size=100)),
                          "vote_type": draw(st.sampled_from(VOTE_TYPES))}
    if ballot_open and draw(st.booleans()):
        action["ballot"] = {"choice": draw(st.sampled_from(CHOICES)),
                            "rationale": draw(st.text(max_size=120))}
    return agent, ballot_open, action


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=agent_and_action(), text=st.text(max_size=400),
       depth=st.integers(min_value=0, max_value=2**31 - 2),
       vote_id=st.text(min_size=1, max_size=40))
def test_every_valid_action_becomes_valid_events(drawn, text, depth, vote_id):
    agent, ballot_open, action = drawn
    validator(agent["tools"], ballot_open).validate(action)  # the strategy stays in bounds
    task, message = setup(text, metadata={"vote_id": vote_id} if ballot_open else {},
                          depth=depth)
    produced = events(task, agent, message, action)
    names = [name for name, _, _ in produced]
    assert names[0] == "ChatMessage"
    assert ("ToolRequest" in names) == (action["tool_call"] is not None)
    assert ("VoteProposal" in names) == (action["vote"] is not None)
    assert ("Ballot" in names) == (action["ballot"] is not None)
    for name, key, record in produced:
        assert isinstance(key, str) and key
        assert_round_trips(name, record)

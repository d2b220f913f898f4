"""The responder's pure logic: the action schema, the few-shot prompt and the events an
action becomes. No servers: every produced record is checked against its Avro contract
with the codec instead."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import jsonschema
import llguidance
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.grammar import Grammars
from schemas import codec
from schemas.ids import derived_id
from streams.domain import channels
from streams.domain.registry import changed, new_profile, templates
from streams.domain.responder.actions import (
    ARGUMENT_CHARS,
    ARGUMENT_ITEMS,
    BALLOT_EXAMPLE,
    EXAMPLES,
    LINE_CHARS,
    PROMPT_CHARS,
    VOTE_TYPES,
    action_schema,
    ballot_options,
    build_messages,
    build_prompt,
    callable_tools,
    events,
    for_generation,
    reply_id,
    unprompted,
)
from streams.domain.responder.partial import ReplyText, chunk
from streams.domain.tools import catalog
from streams.domain.votes.ledger import AUTHOR as VOTES_AUTHOR

TEMPLATES = sorted(templates())
CATALOG = catalog.load()
ALL_TOOLS = sorted(CATALOG)
YES_NO = ["yes", "no", "abstain"]  # the ballot of a vote called with the default options
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
            "author_id": state_entry["author_id"], "author_kind": state_entry["author_kind"],
            "text": state_entry["text"], "metadata": state_entry["metadata"]}


def vote_call(metadata: dict) -> dict:
    """A message as the votes agent writes it (only its notices call votes)."""
    return {"author_kind": "SYSTEM", "author_id": VOTES_AUTHOR, "metadata": metadata}


def setup(text: str = "How slow is the orders query?", *, metadata: dict | None = None,
          thread_id: str | None = None, depth: int = 0, task_id: str | None = None):
    msg_id = str(uuid.uuid4())
    calls = "vote_id" in (metadata or {})  # a vote call comes from the votes agent
    chat_msg = chat(msg_id, VOTES_AUTHOR if calls else "alice", text, thread_id=thread_id,
                    depth=depth, metadata=metadata, kind="SYSTEM" if calls else "HUMAN")
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


def validator(tools: list[str], ballot: list[str] | None) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(action_schema(tools, ballot))


def cast(choice: str = "yes", rationale: str = "It is the simplest option.") -> dict:
    """A ballot-mode action: a reply and a ballot, nothing else."""
    return {**reply_only(), "ballot": {"choice": choice, "rationale": rationale}}


def call(tool: str, **arguments) -> dict:
    return {**reply_only(), "tool_call": {"tool": tool, "arguments": arguments}}


# --------------------------------------------------------------------------- ballot_options


def test_no_vote_id_means_no_ballot():
    assert ballot_options({"metadata": {}}) is None
    for forged in ({"author_kind": "HUMAN", "author_id": VOTES_AUTHOR},
                   {"author_kind": "SYSTEM", "author_id": "agora.tools"}):
        assert ballot_options({**forged, "metadata": {"vote_id": "v1"}}) is None
    assert ballot_options({"metadata": None}) is None
    assert ballot_options({}) is None
    assert ballot_options({"metadata": {"options": "a,b", "client": "web"}}) is None


def test_ballot_options_default_and_custom():
    assert ballot_options(vote_call({"vote_id": "v1"})) == YES_NO
    assert ballot_options(vote_call({"vote_id": "v1", "options": "a,b"})) == [
        "a", "b", "abstain"]
    assert ballot_options(vote_call({"vote_id": "v1", "options": "red,,green,"})) == [
        "red", "green", "abstain"]
    _, message = setup(metadata={"vote_id": "v2", "options": "keep,drop"})
    assert ballot_options(message) == ["keep", "drop", "abstain"]


# --------------------------------------------------------------------------- action_schema


@pytest.mark.parametrize("ballot", [None, YES_NO, ["a", "b", "abstain"]])
@pytest.mark.parametrize("tools", [[], ["calculator"], ["text_formatter", "calculator"],
                                   ALL_TOOLS, ["analytics_query"]])
def test_action_schema_is_a_valid_json_schema(tools, ballot):
    jsonschema.Draft202012Validator.check_schema(action_schema(tools, ballot))


def _schemas(node, keep, path="$"):
    """Every sub-schema for which ``keep(schema)`` holds, with its path."""
    if isinstance(node, dict):
        if keep(node):
            yield path, node
        for key, value in node.items():
            yield from _schemas(value, keep, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _schemas(value, keep, f"{path}[{i}]")


def _string_schemas(node):
    """Every sub-schema that admits a string (type string, or a type list with it)."""
    return _schemas(node, lambda n: n.get("type") == "string" or (
        isinstance(n.get("type"), list) and "string" in n["type"]))


def _containers(node):
    """Every sub-schema of type object or array, with its path."""
    return _schemas(node, lambda n: n.get("type") in ("object", "array"))


@pytest.mark.parametrize("mode", ["open", "yes-no", "custom"])
@pytest.mark.parametrize("template", TEMPLATES)
def test_every_string_and_array_in_the_schema_is_bounded(template, mode):
    ballot = {"open": None, "yes-no": YES_NO, "custom": ["a", "b", "abstain"]}[mode]
    schema = action_schema(agent_from(template)["tools"], ballot)
    found = list(_string_schemas(schema))
    assert found, "the walk found no string at all"
    # A string is bounded by maxLength, or by an enum of fixed values.
    unbounded = [path for path, node in found
                 if not isinstance(node.get("maxLength"), int) and "enum" not in node]
    assert not unbounded, f"strings without maxLength: {unbounded}"
    # No free-form container either: every object is closed, every array has maxItems.
    for path, node in _containers(schema):
        if node["type"] == "object":
            assert node.get("additionalProperties") is False, path
        else:
            assert isinstance(node.get("maxItems"), int), path
            assert isinstance(node.get("items"), dict), path


def test_the_bound_check_sees_tool_arrays():
    schema = action_schema(["chart_generator"], None)
    arrays = [path for path, node in _containers(schema) if node["type"] == "array"]
    assert {p.rsplit(".", 1)[-1] for p in arrays} == {"labels", "values"}
    assert not [p for p, n in _containers(action_schema(["chart_generator"], YES_NO))
                if n["type"] == "array"], "no tool schema is offered in ballot mode"


def test_the_walk_sees_every_string_field():
    paths = {path for path, _ in _string_schemas(action_schema(["calculator"], None))}
    assert {p.rsplit(".", 1)[-1] for p in paths} == {"reply", "expression", "title"}
    paths = {path for path, _ in _string_schemas(action_schema(["calculator"], YES_NO))}
    assert {p.rsplit(".", 1)[-1] for p in paths} == {"reply", "rationale"}


def _offered(schema: dict) -> dict[str, dict]:
    """tool name -> arguments schema of every tool_call option."""
    tool_call = schema["properties"]["tool_call"]
    if tool_call == {"type": "null"}:
        return {}
    null, *calls = tool_call["anyOf"]
    assert null == {"type": "null"}
    for option in calls:
        assert option["type"] == "object" and option["additionalProperties"] is False
        assert sorted(option["required"]) == ["arguments", "tool"]
        assert set(option["properties"]) == {"tool", "arguments"}
    return {o["properties"]["tool"]["const"]: o["properties"]["arguments"] for o in calls}


@pytest.mark.parametrize("template", TEMPLATES)
def test_tool_call_offers_the_agents_catalog_tools_with_their_schemas(template):
    tools = agent_from(template)["tools"]
    offered = _offered(action_schema(tools, None))
    assert list(offered) == sorted(set(tools) & set(CATALOG))
    assert offered, f"{template} has no callable tool"
    for name, parameters in offered.items():
        assert parameters == for_generation(CATALOG[name].parameters)
    assert [t.name for t in callable_tools(tools)] == list(offered)


def test_tools_outside_the_catalog_are_not_offered():
    assert list(_offered(action_schema(["analytics_query", "calculator", "calculator"],
                                       None))) == ["calculator"]
    assert _offered(action_schema(["analytics_query"], None)) == {}
    assert [t.name for t in callable_tools(["shell", "nope", "calculator"])] == [
        "calculator", "shell"]


def test_templates_have_their_new_tools():
    assert agent_from("developer-backend")["tools"] == [
        "code_analyzer", "shell", "calculator", "text_formatter"]
    assert "analytics_query" not in agent_from("analyst-data")["tools"]
    for template in TEMPLATES:
        assert set(agent_from(template)["tools"]) <= set(CATALOG), template


def test_reply_only_action_is_accepted_when_no_ballot_is_open():
    for tools in ([], ["calculator"], ALL_TOOLS):
        validator(tools, None).validate(reply_only())


def test_tool_call_only_for_the_agents_own_tools():
    agent = agent_from("developer-frontend")  # code_analyzer, text_formatter
    v = validator(agent["tools"], None)
    v.validate(call("code_analyzer", code="def f(): pass"))
    v.validate(call("code_analyzer", code="x = 1", language="python"))
    v.validate(call("text_formatter", text="Hello there.", operation="upper"))
    assert not v.is_valid(call("calculator", expression="1+1"))
    assert not v.is_valid({**reply_only(), "tool_call": {"tool": "code_analyzer"}})
    assert not v.is_valid({**reply_only(), "tool_call": {"arguments": {"code": "x"}}})
    assert not v.is_valid({**reply_only(), "tool_call": {
        "tool": "code_analyzer", "arguments": {"code": "x"}, "extra": 1}})
    # The old free-text form is gone.
    assert not v.is_valid({**reply_only(), "tool_call": {"tool": "code_analyzer", "input": "x"}})
    assert not v.is_valid({**reply_only(), "tool_call": {
        "tool": "code_analyzer", "arguments": "def f(): pass"}})


def test_tool_call_rejected_when_the_agent_has_no_tools():
    for tools in ([], ["analytics_query"]):
        v = validator(tools, None)
        assert action_schema(tools, None)["properties"]["tool_call"] == {"type": "null"}
        assert not v.is_valid(call("calculator", expression="1"))
        assert not v.is_valid(call("analytics_query", query="select 1"))
        assert not v.is_valid({**reply_only(), "tool_call": {}})
        v.validate({**reply_only(), "tool_call": None})


LABELS = [f"l{i}" for i in range(50)]
VALUES = list(range(50))

# (tool, arguments, valid): each checked against the action schema and the catalog.
ARGUMENT_CASES = [
    ("calculator", {"expression": "0.17 * 2340"}, True),
    ("calculator", {"expression": "x" * 200}, True),
    ("calculator", {"expression": "x" * 201}, False),
    ("calculator", {"expression": ""}, False),
    ("calculator", {}, False),
    ("calculator", {"expr": "1+1"}, False),
    ("calculator", {"input": "1+1"}, False),
    ("calculator", {"expression": "1+1", "precision": 3}, False),
    ("calculator", {"expression": 12}, False),
    ("text_formatter", {"text": "Some words.", "operation": "stats"}, True),
    ("text_formatter", {"text": "Some words.", "operation": "wrap", "width": 20}, True),
    ("text_formatter", {"text": "Some words.", "operation": "wrap", "width": 19}, False),
    ("text_formatter", {"text": "Some words.", "operation": "shout"}, False),
    ("text_formatter", {"text": "Some words."}, False),
    ("chart_generator", {"kind": "bar", "title": "Sales", "labels": ["a", "b"],
                         "values": [1, 2.5]}, True),
    ("chart_generator", {"kind": "pie", "title": "t", "labels": LABELS, "values": VALUES,
                         "filename": "share.png"}, True),
    ("chart_generator", {"kind": "bar", "title": "t", "labels": LABELS + ["x"],
                         "values": VALUES}, False),
    ("chart_generator", {"kind": "bar", "title": "t", "labels": LABELS,
                         "values": VALUES + [50]}, False),
    ("chart_generator", {"kind": "bar", "title": "t", "labels": [], "values": []}, False),
    ("chart_generator", {"kind": "bar", "title": "t", "labels": ["a"],
                         "values": ["1"]}, False),
    ("chart_generator", {"kind": "bar", "title": "t", "labels": ["x" * 41],
                         "values": [1]}, False),
    ("chart_generator", {"kind": "scatter", "title": "t", "labels": ["a"], "values": [1]},
     False),
    ("chart_generator", {"kind": "bar", "labels": ["a"], "values": [1]}, False),
    ("csv_processor", {"csv": "a,b\n1,2", "operation": "describe"}, True),
    ("csv_processor", {"csv": "a,b\n1,2", "operation": "sort", "column": "a",
                       "descending": True, "limit": 100}, True),
    ("csv_processor", {"csv": "a,b\n1,2", "operation": "head", "limit": 101}, False),
    ("csv_processor", {"csv": "a,b\n1,2", "operation": "drop"}, False),
    ("code_analyzer", {"code": "import os"}, True),
    ("code_analyzer", {"code": "import os", "language": "rust"}, False),
    ("shell", {"command": "ls -la"}, True),
    ("shell", {"command": ""}, False),
    ("shell", {"cmd": "ls"}, False),
]


@pytest.mark.parametrize("tool,arguments,valid", ARGUMENT_CASES)
def test_tool_arguments_follow_each_tools_schema(tool, arguments, valid):
    v = validator(ALL_TOOLS, None)
    generated = v.is_valid(call(tool, **arguments))
    # What the generator may write, the tools worker accepts; it accepts more (a 50-item
    # chart from a person) than one generation holds.
    assert generated == (valid and len(arguments.get("labels", ())) <= ARGUMENT_ITEMS
                         and len(arguments.get("values", ())) <= ARGUMENT_ITEMS)
    if valid:
        catalog.arguments(CATALOG[tool], json.dumps(arguments))
    else:
        with pytest.raises(catalog.InvalidArguments):
            catalog.arguments(CATALOG[tool], json.dumps(arguments))


def test_generation_bounds_only_narrow_a_tools_schema():
    for tool in CATALOG.values():
        narrowed = for_generation(tool.parameters)
        jsonschema.Draft202012Validator.check_schema(narrowed)
        for path, node in _string_schemas(narrowed):
            assert "enum" in node or node["maxLength"] <= ARGUMENT_CHARS, path
    chart = for_generation(CATALOG["chart_generator"].parameters)
    assert chart["properties"]["labels"]["maxItems"] == ARGUMENT_ITEMS
    assert CATALOG["chart_generator"].parameters["properties"]["labels"]["maxItems"] == 50


def test_arguments_of_one_tool_do_not_pass_for_another():
    v = validator(["calculator", "shell"], None)
    v.validate(call("shell", command="ls"))
    assert not v.is_valid(call("shell", expression="1+1"))
    assert not v.is_valid(call("calculator", command="ls"))


def test_no_ballot_without_an_open_vote():
    v = validator(["calculator"], None)
    assert not v.is_valid(cast())
    assert action_schema(["calculator"], None)["properties"]["ballot"] == {"type": "null"}


def test_ballot_mode_requires_a_ballot_and_nothing_else():
    v = validator(ALL_TOOLS, YES_NO)
    properties = action_schema(ALL_TOOLS, YES_NO)["properties"]
    assert properties["tool_call"] == {"type": "null"}
    assert properties["vote"] == {"type": "null"}
    for choice in YES_NO:
        v.validate(cast(choice, ""))
    assert not v.is_valid(reply_only()), "the ballot is required when a vote is open"
    assert not v.is_valid(cast("maybe"))
    assert not v.is_valid({**cast(), "tool_call": {"tool": "calculator",
                                                   "arguments": {"expression": "1"}}})
    assert not v.is_valid({**cast(), "vote": {"title": "Adopt ruff",
                                              "vote_type": "PROJECT_DECISION"}})
    assert not v.is_valid({**cast(), "ballot": {"choice": "yes"}})
    assert not v.is_valid({**cast(), "ballot": {"rationale": "why"}})


def test_ballot_choices_come_from_the_vote_options():
    ballot = ballot_options(vote_call({"vote_id": "v9", "options": "a,b"}))
    v = validator(["calculator"], ballot)
    for choice in ("a", "b", "abstain"):
        v.validate(cast(choice))
    for choice in ("yes", "no", "c", "A", ""):
        assert not v.is_valid(cast(choice)), choice
    assert action_schema([], ballot)["properties"]["ballot"]["properties"]["choice"] == {
        "enum": ["a", "b", "abstain"]}


def test_votes():
    v = validator([], None)
    for vote_type in VOTE_TYPES:
        v.validate({**reply_only(), "vote": {"title": "Adopt ruff", "vote_type": vote_type}})
    for vote_type in ("TOOL_USAGE", "project_decision", "", "OTHER"):
        assert not v.is_valid({**reply_only(),
                               "vote": {"title": "Adopt ruff", "vote_type": vote_type}})
    assert not v.is_valid({**reply_only(), "vote": {"title": "no", "vote_type": VOTE_TYPES[0]}})
    # A tool call and a vote proposal may come together.
    v = validator(["calculator"], None)
    v.validate({**call("calculator", expression="2 * 3"),
                "vote": {"title": "Adopt ruff", "vote_type": "PROJECT_DECISION"}})


OPEN_BASE = {"reply": "ok", "tool_call": {"tool": "calculator", "arguments": {"expression": "1"}},
             "vote": {"title": "Adopt ruff", "vote_type": "PROJECT_DECISION"}, "ballot": None}
BALLOT_BASE = {"reply": "ok", "tool_call": None, "vote": None,
               "ballot": {"choice": "no", "rationale": "r"}}


@pytest.mark.parametrize("ballot,base,field,limit", [
    (None, OPEN_BASE, "reply", 280),
    (None, OPEN_BASE, "tool_call.arguments.expression", 200),
    (None, OPEN_BASE, "vote.title", 100),
    (YES_NO, BALLOT_BASE, "reply", 280),
    (YES_NO, BALLOT_BASE, "ballot.rationale", 120)])
def test_over_long_strings_are_rejected(ballot, base, field, limit):
    v = validator(["calculator"], ballot)

    def with_text(text):
        action = json.loads(json.dumps(base))
        *outer, leaf = field.split(".")
        target = action
        for key in outer:
            target = target[key]
        target[leaf] = text
        return action

    v.validate(with_text("é" * limit))
    assert not v.is_valid(with_text("é" * (limit + 1)))


def test_unknown_and_missing_keys_are_rejected():
    v = validator(["calculator"], None)
    assert not v.is_valid({**reply_only(), "mood": "happy"})
    assert not v.is_valid({"reply": "hi"})  # every key is required (null when unused)
    assert not v.is_valid({**reply_only(), "reply": ""})
    assert not v.is_valid({**reply_only(),
                           "vote": {"title": "Adopt ruff", "vote_type": "PROJECT_DECISION",
                                    "deadline": "tomorrow"}})
    b = validator(["calculator"], YES_NO)
    assert not b.is_valid({**cast(), "mood": "happy"})
    assert not b.is_valid({"reply": "hi", "ballot": {"choice": "yes", "rationale": ""}})
    assert not b.is_valid({**reply_only(),
                           "ballot": {"choice": "yes", "rationale": "", "weight": 2}})


class _Bytes:
    """A tokenizer of single bytes: enough for llguidance to tell what a schema forces."""

    eos_token_id, bos_token_id = 256, None
    tokens = [bytes([b]) for b in range(256)] + [b"\xff<eos>"]
    special_token_ids = [256]

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


GRAMMARS = Grammars(llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Bytes())))


def forced_start(schema: dict) -> bytes:
    return GRAMMARS.matcher(json.dumps(schema)).compute_ff_bytes()


@pytest.mark.parametrize("template", TEMPLATES)
def test_the_schema_compiles_for_constrained_decoding(template):
    agent = agent_from(template)
    offered = [t.name for t in callable_tools(agent["tools"])]
    for options in (None, "yes,no", "a,b"):
        metadata = {} if options is None else {"vote_id": "v1", "options": options}
        ballot = ballot_options(vote_call(metadata))
        matcher = GRAMMARS.matcher(json.dumps(action_schema(agent["tools"], ballot)))
        assert not matcher.is_error(), (template, options, matcher.get_error())
        if ballot is None:
            prefix = b'{"reply": "x", "tool_call": {"tool": "'
            for name in offered:  # each tool can be called while no vote is open
                assert GRAMMARS.matcher(json.dumps(action_schema(agent["tools"], None))
                                        ).try_consume_tokens(list(prefix + name.encode())) \
                    == len(prefix) + len(name), (template, name)



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
    assert "\nYour tools:\n" in prompt
    for tool in agent["tools"]:
        assert f"\n- {tool}: " in prompt
    assert prompt.endswith("\nMessage from alice: Why is the orders query slow?\nJSON: ")
    assert "Earlier messages" not in prompt and "Recent messages" not in prompt
    assert "A vote is open" not in prompt


def test_chat_messages_carry_the_prompt_as_turns_stable_parts_first():
    agent = agent_from("developer-backend", name="Bea")
    _, message = setup("Why is the orders query slow?")
    history = history_of(chat("m0", "bob", "The orders table grew tenfold."))
    turns = build_messages(agent, history, [], message, False)
    prompt = build_prompt(agent, history, [], message, False)
    assert [t["role"] for t in turns[:3]] == ["system", "user", "assistant"]
    assert turns[0]["content"].startswith(agent["system_prompt"])
    assert "Bea" in turns[0]["content"] and "\nYour tools:\n" in turns[0]["content"]
    examples = turns[1:-1]
    assert all(json.loads(t["content"]) for t in examples if t["role"] == "assistant")
    assert turns[-1]["role"] == "user"
    assert turns[-1]["content"].endswith("Message from alice: Why is the orders query slow?")
    assert "bob: The orders table grew tenfold." in turns[-1]["content"]
    # the same content as the completion prompt, example for example
    for turn in turns:
        for line in turn["content"].splitlines():
            assert line in prompt


@pytest.mark.parametrize("template", TEMPLATES)
def test_examples_only_for_tools_the_agent_has(template):
    agent = agent_from(template)
    _, message = setup()
    prompt = build_prompt(agent, [], [], message, False)
    schema = validator(agent["tools"], None)
    for author, text, action in EXAMPLES:
        shown = f"Message from {author}: {text}\nJSON: {json.dumps(action)}" in prompt
        expected = action["tool_call"] is None or action["tool_call"]["tool"] in agent["tools"]
        assert shown == expected, (template, text)
        if shown:  # a few-shot example must itself be a valid action for this agent
            schema.validate(action)
    assert BALLOT_EXAMPLE[1] not in prompt


def test_examples_depend_on_the_tools():
    _, message = setup()
    with_calc = build_prompt(agent_from("analyst-data"), [], [], message, False)
    without = build_prompt(agent_from("creative-writer"), [], [], message, False)
    assert "17 percent of 2340" in with_calc and "17 percent of 2340" not in without
    assert "tabs or spaces" in without and "Good morning everyone!" in without
    no_tools = build_prompt(agent_from("creative-writer", tools=[]), [], [], message, False)
    assert "\nYou have no tools.\n" in no_tools and "Your tools:" not in no_tools
    assert "17 percent of 2340" not in no_tools
    # A tool the catalog does not know counts as no tool at all.
    unknown = build_prompt(agent_from("creative-writer", tools=["analytics_query"]), [], [],
                           message, False)
    assert "You have no tools." in unknown and "analytics_query" not in unknown


def test_the_calculator_example_uses_arguments():
    [(_, _, action)] = [ex for ex in EXAMPLES if ex[2]["tool_call"]]
    assert action["tool_call"] == {"tool": "calculator",
                                   "arguments": {"expression": "0.17 * 2340"}}
    catalog.arguments(CATALOG["calculator"], json.dumps(action["tool_call"]["arguments"]))
    _, message = setup()
    prompt = build_prompt(agent_from("developer-backend"), [], [], message, False)
    assert '"tool_call": {"tool": "calculator", "arguments": {"expression": "0.17 * 2340"}}' \
        in prompt


def _tool_lines(prompt: str) -> list[str]:
    lines = prompt.split("\n")
    start = lines.index("Your tools:") + 1
    return lines[start:lines.index("", start)]


def test_prompt_describes_the_tools():
    _, message = setup()
    agent = agent_from("developer-backend")  # code_analyzer, shell, calculator, text_formatter
    lines = _tool_lines(build_prompt(agent, [], [], message, False))
    assert lines == [
        f"- calculator: {CATALOG['calculator'].description} Arguments: expression.",
        f"- code_analyzer: {CATALOG['code_analyzer'].description} Arguments: code, language.",
        f"- shell: {CATALOG['shell'].description} Arguments: command.",
        f"- text_formatter: {CATALOG['text_formatter'].description} "
        "Arguments: text, operation, width.",
    ]
    chart = agent_from("analyst-data", tools=["chart_generator", "analytics_query"])
    assert _tool_lines(build_prompt(chart, [], [], message, False)) == [
        f"- chart_generator: {CATALOG['chart_generator'].description} "
        "Arguments: kind, title, labels, values, filename."]


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_lists_its_tools(template):
    agent = agent_from(template)
    _, message = setup()
    lines = _tool_lines(build_prompt(agent, [], [], message, False))
    assert [line.split(":", 1)[0] for line in lines] == [
        f"- {name}" for name in sorted(agent["tools"])]
    for line, name in zip(lines, sorted(agent["tools"])):
        tool = CATALOG[name]
        assert "\n" not in tool.description and tool.description in line
        assert line.endswith(f"Arguments: {', '.join(tool.parameters['properties'])}.")


def _shown(prompt: str, example) -> bool:
    author, text, action = example
    return f"Message from {author}: {text}\nJSON: {json.dumps(action)}" in prompt


def test_ballot_example_only_when_a_ballot_is_open():
    agent = agent_from("creative-writer")
    _, message = setup("Please vote.", metadata={"vote_id": "v3"})
    closed = build_prompt(agent, [], [], message, False)
    opened = build_prompt(agent, [], [], message, True)
    assert not _shown(closed, BALLOT_EXAMPLE)
    assert _shown(opened, BALLOT_EXAMPLE)
    # It comes after the other examples, and the ordinary ones stay.
    for example in EXAMPLES:
        if _shown(opened, example):
            assert opened.index(example[1]) < opened.index(BALLOT_EXAMPLE[1])
    assert _shown(opened, EXAMPLES[-1])
    # Building a ballot prompt does not leak the example into later prompts.
    assert BALLOT_EXAMPLE not in EXAMPLES
    assert build_prompt(agent, [], [], message, False) == closed
    # The example is a valid ballot-mode action for the default options.
    validator(agent["tools"], ballot_options(message)).validate(BALLOT_EXAMPLE[2])


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
    assert _shown(prompt, BALLOT_EXAMPLE)
    assert lines[-2] == "Message from carol: Please vote on it."
    assert lines[-1] == "JSON: "
    # Memories come before the recent messages, oldest recent message first.
    assert lines.index("dave: Last year we merged them.") < lines.index(
        "bob: We should split the service.") < lines.index(
        "developer-backend: Agreed, the queue first.")

    closed = build_prompt(agent, history, memories, message, False)
    assert "A vote is open" not in closed and not _shown(closed, BALLOT_EXAMPLE)
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
    assert _shown(prompt, BALLOT_EXAMPLE) == ballot_open
    assert [line[2:].split(":", 1)[0] for line in lines if line.startswith("- ")] == sorted(
        agent["tools"])
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


# Not one action the schema allows (a ballot excludes the rest): events maps whatever
# it is given, so every kind of event can be checked at once.
FULL = {"reply": "Computing it, and let us decide.",
        "tool_call": {"tool": "calculator", "arguments": {"expression": "0.2 * 1500"}},
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
              "tool_call": {"tool": "calculator", "arguments": {"expression": "0.2 * 1500"}}}
    validator(agent["tools"], None).validate(action)
    found = _by_name(events(task, agent, message, action))
    assert set(found) == {"ChatMessage", "ToolRequest"}
    [(key, request)] = found["ToolRequest"]
    assert key == task["channel_id"] == request["channel_id"]
    assert request["tool"] == "calculator"
    assert request["agent_id"] == agent["agent_id"]
    assert request["source_message_id"] == message["event_id"]
    assert request["reason"] == "Running it."
    assert request["arguments_json"] == json.dumps({"expression": "0.2 * 1500"})
    assert catalog.arguments(CATALOG["calculator"], request["arguments_json"]) == {
        "expression": "0.2 * 1500"}
    assert request["event_id"] == derived_id(task["event_id"], "tool")
    assert_round_trips("ToolRequest", request)


def test_structured_arguments_become_arguments_json():
    agent = agent_from("analyst-data")
    task, message = setup("Chart the sales per region")
    arguments = {"kind": "bar", "title": "Sales — Q2 «draft»", "labels": ["Nord", "Süd"],
                 "values": [1.5, 2], "filename": "sales.png"}
    action = {**reply_only("Drawing it."),
              "tool_call": {"tool": "chart_generator", "arguments": arguments}}
    validator(agent["tools"], None).validate(action)
    [(_, request)] = _by_name(events(task, agent, message, action))["ToolRequest"]
    assert request["tool"] == "chart_generator"
    assert request["arguments_json"] == json.dumps(arguments)
    assert json.loads(request["arguments_json"]) == arguments
    assert catalog.arguments(CATALOG["chart_generator"], request["arguments_json"]) == arguments
    assert_round_trips("ToolRequest", request)
    # Arguments are an object even when the tool takes none of its optional ones.
    empty = {**reply_only(), "tool_call": {"tool": "calculator", "arguments": {}}}
    [(_, request)] = _by_name(events(task, agent, message, empty))["ToolRequest"]
    assert request["arguments_json"] == "{}"


@pytest.mark.parametrize("text, kept", [
    ("The API server returns 502 since the last deploy.", set()),
    ("Good morning everyone!", set()),
    ("Tabs or spaces? The indentation keeps changing.", {"vote"}),
    ("What is 17 percent of 2340 again?", {"tool_call"}),
])
def test_a_tool_call_or_vote_parroted_from_the_examples_is_left_out(text, kept):
    parroted = {"reply": "Let us settle it with a vote.",
                "tool_call": EXAMPLES[0][2]["tool_call"], "vote": EXAMPLES[1][2]["vote"],
                "ballot": None}
    action = unprompted(parroted, text)
    assert {part for part in ("tool_call", "vote") if action[part]} == kept
    assert action["reply"] == parroted["reply"] and parroted["vote"]  # input untouched
    agent = agent_from("developer-backend")
    task, message = setup(text)
    names = {name for name, _, _ in events(task, agent, message, parroted)}
    made = {"tool_call": "ToolRequest", "vote": "VoteProposal"}
    assert names == {"ChatMessage", *(made[part] for part in kept)}


@pytest.mark.parametrize("title", ["Use space for indentation",
                                   "Use spaces for indentation (i.e., the default value)",
                                   "Use space for indentation conflict resolution"])
def test_a_paraphrased_example_vote_is_left_out_too(title):
    action = {**reply_only(), "vote": {"title": title, "vote_type": "CONFLICT_RESOLUTION"}}
    assert unprompted(action, "The API server returns 502 since the last deploy.")["vote"] is None
    assert unprompted(action, "Spaces or tabs for indentation?")["vote"] == action["vote"]


def test_an_action_of_its_own_is_kept_whatever_the_message():
    own = {"reply": "Let us decide.", "vote": {"title": "Roll back the deploy",
                                                "vote_type": "PROJECT_DECISION"},
           "tool_call": {"tool": "calculator", "arguments": {"expression": "0.17 * 100"}},
           "ballot": None}
    assert unprompted(own, "Good morning everyone!") == own
    assert unprompted(own, "What is 17% of 100?") == own


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
    assert proposal["deadline_at"] - proposal["created_at"] == timedelta(minutes=5)
    assert proposal["options"] == ["yes", "no"]
    assert_round_trips("VoteProposal", proposal)


@pytest.mark.parametrize("deadline", [timedelta(seconds=30), timedelta(minutes=5),
                                      timedelta(hours=2)])
def test_vote_deadline_is_configurable(deadline):
    agent = agent_from("moderator-quality")
    task, message = setup("Tabs or spaces, again?")
    action = {**reply_only(), "vote": {"title": "Use spaces", "vote_type": "CONFLICT_RESOLUTION"}}
    before = datetime.now(timezone.utc)
    [(_, proposal)] = _by_name(events(task, agent, message, action, deadline))["VoteProposal"]
    after = datetime.now(timezone.utc)
    assert proposal["deadline_at"] - proposal["created_at"] == deadline
    assert before + deadline <= proposal["deadline_at"] <= after + deadline
    assert_round_trips("VoteProposal", proposal)


def test_ballot_adds_a_ballot_for_the_open_vote():
    agent = agent_from("developer-frontend")
    task, message = setup("Vote please", metadata={"vote_id": "vote-42"})
    action = {**reply_only(), "ballot": {"choice": "no", "rationale": "Too risky."}}
    validator(agent["tools"], ballot_options(message)).validate(action)
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


def from_schema(schema: dict) -> st.SearchStrategy:
    """Values of the small JSON-schema subset the tool catalog uses (strings kept short)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if kind == "string":
        low = schema.get("minLength", 0)
        return st.text(min_size=low, max_size=max(low, min(schema.get("maxLength", 40), 40)))
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**6, 10**6)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(from_schema(schema["items"]), min_size=schema.get("minItems", 0),
                        max_size=min(schema["maxItems"], 6))
    assert kind == "object", schema
    props, required = schema["properties"], set(schema.get("required", []))
    return st.fixed_dictionaries(
        {k: from_schema(v) for k, v in props.items() if k in required},
        optional={k: from_schema(v) for k, v in props.items() if k not in required})


OPTION = st.text(st.characters(blacklist_characters=",", blacklist_categories=["Cs"]),
                 min_size=1, max_size=12)


@st.composite
def agent_and_action(draw):
    """An agent, the vote message metadata (if any) and an arbitrary action its schema
    allows."""
    template = draw(st.sampled_from(TEMPLATES))
    tools = draw(st.sampled_from([None, [], ["analytics_query"], ALL_TOOLS]))
    agent = agent_from(template) if tools is None else agent_from(template, tools=tools)
    metadata: dict = {}
    if draw(st.booleans()):
        metadata["vote_id"] = draw(st.text(min_size=1, max_size=40))
        options = draw(st.none() | st.lists(OPTION, min_size=1, max_size=4))
        if options is not None:
            metadata["options"] = ",".join(options)
    ballot = ballot_options(vote_call(metadata))
    action = {"reply": draw(st.text(min_size=1, max_size=280)), "tool_call": None,
              "vote": None, "ballot": None}
    offered = callable_tools(agent["tools"])
    if ballot is not None:
        action["ballot"] = {"choice": draw(st.sampled_from(ballot)),
                            "rationale": draw(st.text(max_size=120))}
    else:
        if offered and draw(st.booleans()):
            tool = draw(st.sampled_from(offered))
            action["tool_call"] = {"tool": tool.name,
                                   "arguments": draw(from_schema(tool.parameters))}
        if draw(st.booleans()):
            action["vote"] = {"title": draw(st.text(min_size=3, max_size=100)),
                              "vote_type": draw(st.sampled_from(VOTE_TYPES))}
    return agent, metadata, ballot, action


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=agent_and_action(), text=st.text(max_size=400),
       depth=st.integers(min_value=0, max_value=2**31 - 2))
def test_every_valid_action_becomes_valid_events(drawn, text, depth):
    agent, metadata, ballot, action = drawn
    validator(agent["tools"], ballot).validate(action)  # the strategy stays in bounds
    task, message = setup(text, metadata=metadata, depth=depth)
    assert ballot_options(message) == ballot
    produced = events(task, agent, message, action)
    names = [name for name, _, _ in produced]
    assert names[0] == "ChatMessage"
    assert ("ToolRequest" in names) == (action["tool_call"] is not None)
    assert ("VoteProposal" in names) == (action["vote"] is not None)
    assert ("Ballot" in names) == (action["ballot"] is not None) == (ballot is not None)
    for name, _, record in produced:
        if name == "ToolRequest":
            tool = CATALOG[action["tool_call"]["tool"]]
            assert catalog.arguments(tool, record["arguments_json"]) == \
                action["tool_call"]["arguments"]
    for name, key, record in produced:
        assert isinstance(key, str) and key
        assert_round_trips(name, record)


# --------------------------------------------------------------------------- partial replies


def streamed(generated: str, cuts: list[int]) -> tuple[list[str], ReplyText]:
    """Feed ``generated`` cut at ``cuts``; the texts ReplyText gave back, and itself."""
    reply, out, last = ReplyText(), [], 0
    for cut in sorted(set(cuts)) + [len(generated)]:
        if new := reply.feed(generated[last:cut]):
            out.append(new)
        last = cut
    return out, reply


@pytest.mark.parametrize("tools, ballot", [(ALL_TOOLS, None), ([], YES_NO)])
def test_the_action_grammar_writes_the_reply_first(tools, ballot):
    """What lets the reply stream before the JSON closes."""
    assert forced_start(action_schema(tools, ballot)) == b'{"reply": "'


# JSON string bodies as a model writes them, escapes included.
@pytest.mark.parametrize("body", [
    "Sure, I will calculate it.", r'She said \"hi\" \\ then left', r"line one\nline two\ttab",
    r"caf\u00e9 na\u00efve", r"emoji \ud83d\ude00 done", r"\\", r'\"', "x", "café à la"])
def test_every_cut_of_an_escaped_reply_streams_it_whole(body):
    generated = '{"reply": "' + body + '", "tool_call": null, "vote": null, "ballot": null}'
    whole = json.loads(generated)["reply"]
    for cut in range(len(generated) + 1):
        out, reply = streamed(generated, [cut])
        assert "".join(out) == whole == reply.text and reply.done, cut
    out, reply = streamed(generated, list(range(len(generated))))  # one character at a time
    assert "".join(out) == whole and all(out)
    assert reply.feed(' {"reply": "more"}') == ""  # nothing after the reply's closing quote


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80), ascii_only=st.booleans(),
       cuts=st.lists(st.integers(0, 400), max_size=30))
def test_any_reply_streams_exactly_its_text(text, ascii_only, cuts):
    action = {"reply": text, "tool_call": None, "vote": None, "ballot": None}
    out, reply = streamed(json.dumps(action, ensure_ascii=ascii_only), cuts)
    assert "".join(out) == text == reply.text and reply.done


def test_a_reply_streams_while_the_json_is_open():
    reply = ReplyText()
    assert reply.feed('{"re') == "" and reply.feed('ply": "Hel') == "Hel"
    assert reply.feed("lo wor") == "lo wor" and not reply.done
    assert reply.feed("\\") == ""  # an escape cut short waits for the next piece
    assert reply.feed("u00e9") == "é" and reply.text == "Hello woré"


def test_json_without_a_leading_reply_streams_nothing():
    out, reply = streamed('{"tool_call": null, "reply": "hi"}', [5, 20])
    assert out == [] and reply.text == "" and not reply.done


def test_chunks_name_the_reply_they_become_and_encode():
    task = {"event_id": str(uuid.uuid4()), "channel_id": "eng"}
    message = {"event_id": str(uuid.uuid4()), "thread_id": "t-1"}
    first = chunk(task, message, "developer-backend", 0, 0, "Hel")
    again = chunk(task, message, "developer-backend", 0, 0, "Hel")
    second = chunk(task, message, "developer-backend", 1, 3, "lo")
    agent = agent_from("developer-backend")
    [(name, _, reply), *_] = events(task | {"thread_depth": 0}, agent,
                                    message | {"channel_id": "eng", "thread_depth": 0,
                                               "text": "hi", "metadata": {}},
                                    {"reply": "Hello", "tool_call": None, "vote": None,
                                     "ballot": None})
    assert first["message_id"] == reply["event_id"] == reply_id(task["event_id"])
    assert first["event_id"] == again["event_id"] != second["event_id"]  # replays dedupe
    assert (first["reply_to"], first["thread_id"]) == (message["event_id"], "t-1")
    for record in (first, second):
        assert codec.decode(codec.encode("ReplyChunk", record))[1]["text"] == record["text"]


def test_a_long_channel_is_cut_to_the_prompts_budget_oldest_lines_first():
    _, message = setup("Who can look at the 502s?")
    history = [{"id": f"h{i}", "author_id": "alice", "text": f"line {i} " + "x" * 280}
               for i in range(40)]
    memories = [{"author_id": "bob", "text": "an old remark " + "y" * 280}]
    prompt = build_prompt(agent_from("devops-oncall"), history, memories, message, False)
    assert len(prompt) <= PROMPT_CHARS + 200  # the template's own few words aside
    assert "line 39 " in prompt and "line 0 " not in prompt  # the newest kept
    assert prompt.rstrip().endswith("JSON:") and "Who can look at the 502s?" in prompt
    short = build_prompt(agent_from("devops-oncall"), history[-2:], memories, message, False)
    assert "line 38 " in short and "an old remark" in short  # nothing cut when it fits

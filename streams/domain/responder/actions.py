"""An agent's answer as plain logic: the JSON schema of its action, the prompt that
asks for it, and the events the action becomes.

The bundled generator is a small base model, so the prompt is a few-shot completion;
the same content goes along as chat turns, which a model with a chat template answers
instead. The schema bounds every string so that constrained decoding always finishes
well inside ``max_tokens``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from schemas.events import AgentProfile, ChatMessage, InferenceTask, Source, ToolRequest
from schemas.ids import derived_id
from streams.domain.knowledge import grounding
from streams.domain.tools.catalog import Tool
from streams.domain.tools.catalog import load as load_catalog
from streams.domain.votes.ledger import AUTHOR as VOTES_AUTHOR
from streams.domain.votes.records import new_ballot, new_proposal

VOTE_TYPES = ("PROJECT_DECISION", "CONFLICT_RESOLUTION", "RESOURCE_ALLOCATION")
# The prompt's budget in characters: the bundled model's 2,048-token context less the
# reply's 400 tokens, at a conservative 3 characters a token (chat lines hold ids, JSON).
PROMPT_CHARS = 4500
LINE_CHARS = 300  # a history line longer than this is cut in the prompt
# An action is one generation of at most MAX_TOKENS: tool arguments written by an agent
# stay short even where the tool itself accepts more (a CSV pasted by a person, say).
ARGUMENT_CHARS, ARGUMENT_ITEMS = 300, 20


def _nullable(schema: dict) -> dict:
    return {"anyOf": [{"type": "null"}, schema]}


def callable_tools(tools: list[str]) -> list[Tool]:
    """The agent's tools that exist in the catalog, in a stable order."""
    catalog = load_catalog()
    return [catalog[name] for name in sorted(set(tools)) if name in catalog]


def ballot_options(message: ChatMessage) -> list[str] | None:
    """The choices of the vote a message calls, or None when it calls none. Only the
    votes agent's own notices call votes."""
    metadata = message.get("metadata") or {}
    if "vote_id" not in metadata or message.get("author_kind") != "SYSTEM" or \
            message.get("author_id") != VOTES_AUTHOR:
        return None
    return [o for o in metadata.get("options", "yes,no").split(",") if o] + ["abstain"]


def for_generation(schema: Any) -> Any:
    """A tool's argument schema with strings and arrays bounded to what fits in one
    generation; what it admits, the tool's own schema admits too."""
    if isinstance(schema, list):
        return [for_generation(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: for_generation(v) for k, v in schema.items()}
    if out.get("type") == "string" and "enum" not in out:
        out["maxLength"] = min(out.get("maxLength", ARGUMENT_CHARS), ARGUMENT_CHARS)
    if out.get("type") == "array":
        out["maxItems"] = min(out.get("maxItems", ARGUMENT_ITEMS), ARGUMENT_ITEMS)
    return out


def action_schema(tools: list[str], ballot: list[str] | None, reply: dict | None = None) -> dict:
    """What the agent may do: reply, and call one of its tools (arguments by the tool's
    own schema) or propose a vote; when called to vote, reply and cast a ballot only.
    ``reply`` replaces the reply's schema: a sentence of the knowledge base that answers
    the message, which is then the whole action (no tool call, no vote: a small model
    adds them by habit, not because the answer needs them)."""
    null = {"type": "null"}
    calls = [{"type": "object", "additionalProperties": False, "required": ["tool", "arguments"],
              "properties": {"tool": {"const": t.name},
                             "arguments": for_generation(t.parameters)}}
             for t in callable_tools(tools)]
    tool_call = {"anyOf": [null, *calls]} if calls and ballot is None and reply is None else null
    vote = null if reply is not None else _nullable({
        "type": "object", "additionalProperties": False, "required": ["title", "vote_type"],
        "properties": {"title": {"type": "string", "minLength": 3, "maxLength": 100},
                       "vote_type": {"enum": list(VOTE_TYPES)}}}) if ballot is None else null
    ballot_schema = {
        "type": "object", "additionalProperties": False, "required": ["choice", "rationale"],
        "properties": {"choice": {"enum": ballot},
                       "rationale": {"type": "string", "maxLength": 120}}} if ballot else null
    return {"type": "object", "additionalProperties": False,
            "required": ["reply", "tool_call", "vote", "ballot"],
            "properties": {"reply": reply or {"type": "string", "minLength": 1,
                                              "maxLength": 280},
                           "tool_call": tool_call, "vote": vote, "ballot": ballot_schema}}


# (author, message, the action that answers it): the prompt's few-shot examples.
Example = tuple[str, str, dict[str, Any]]
EXAMPLES: list[Example] = [
    ("alice", "Can someone compute 17 percent of 2340?",
     {"reply": "Sure, I will calculate it.",
      "tool_call": {"tool": "calculator", "arguments": {"expression": "0.17 * 2340"}},
      "vote": None, "ballot": None}),
    ("bob", "We keep arguing about tabs or spaces in the style guide.",
     {"reply": "Let us settle it with a vote.", "tool_call": None,
      "vote": {"title": "Use spaces for indentation", "vote_type": "CONFLICT_RESOLUTION"},
      "ballot": None}),
    ("carol", "Good morning everyone!",
     {"reply": "Good morning! Ready when you are.", "tool_call": None, "vote": None,
      "ballot": None}),
]


BALLOT_EXAMPLE: Example = (
    "agora.votes", "Vote opened: Adopt the new code review checklist. Options: yes, no or abstain.",
    {"reply": "I vote yes: the checklist catches the bugs we keep missing.", "tool_call": None,
     "vote": None, "ballot": {"choice": "yes", "rationale": "It catches recurring bugs."}})


def _words(text: str) -> set[str]:
    """Numbers, and words of four letters or more without a plural s."""
    return {w if w[0].isdigit() else w.removesuffix("s")
            for w in re.findall(r"[a-z]{4,}|\d+(?:\.\d+)?", text.lower())}


def unprompted(action: dict, text: str) -> dict:
    """``action`` without a tool call or vote taken from a prompt example that ``text``
    (the message answered) says nothing of: a small model parrots its examples, and a
    vote on indentation opened in an incident channel helps nobody.

    Taken means copied whole, or paraphrased: a word of the example's own (a number
    does not count: "0.17 * 100" may well answer "17% of 100?"). Said means the message
    has one of the words that gave it away.
    """
    said = {"tool_call": lambda call: " ".join(map(str, call["arguments"].values())),
            "vote": lambda vote: vote["title"]}
    heard, out = _words(text), dict(action)
    for part, content in said.items():
        if not out.get(part):
            continue
        examples = [example[part] for _, _, example in [*EXAMPLES, BALLOT_EXAMPLE]
                    if example[part]]
        words = _words(content(out[part]))
        borrowed = {w for w in words if not w[0].isdigit()} & set().union(
            *(_words(content(example)) for example in examples))
        evidence = words if out[part] in examples else borrowed
        if evidence and not evidence & heard:
            out[part] = None
    return out


def _line(author: str, text: str) -> str:
    text = " ".join(text.split())
    return f"{author}: {text[:LINE_CHARS]}{'...' if len(text) > LINE_CHARS else ''}"


def _prompt_parts(agent: AgentProfile, history: list[dict], memories: list[dict],
                  message: ChatMessage,
                  ballot_open: bool, passages: Sequence[dict]
                  ) -> tuple[list[str], list[tuple], list[str]]:
    """(instructions, examples, what to answer): the stable parts first, so that the
    generator's prefix cache reuses them from one of the agent's prompts to the next
    (system prompt, persona, tools, examples), then the knowledge-base passages,
    memories, the channel's recent messages and the message itself, which change every
    time."""
    tools = callable_tools(agent["tools"])
    names = {t.name for t in tools}
    examples = [ex for ex in EXAMPLES
                if ex[2]["tool_call"] is None or ex[2]["tool_call"]["tool"] in names]
    if ballot_open:
        examples.append(BALLOT_EXAMPLE)
    described = [f"- {t.name}: {t.description} Arguments: "
                 f"{', '.join(t.parameters.get('properties', {}))}." for t in tools]
    instructions = [
        f"{agent['system_prompt']}",
        f"You are {agent['name']} ({agent['agent_id']}). {agent['persona']}",
        "In the team chat you answer each message with one JSON object: a short reply, "
        "and a tool call, a vote proposal or a ballot only when one is needed.",
        "Your tools:" if tools else "You have no tools.", *described,
    ]
    ask = grounding.prompt_lines(passages)
    recalled = [_line(m["author_id"], m["text"]) for m in memories]
    recent = [_line(h["author_id"], h["text"]) for h in history
              if h["id"] != message["event_id"]]
    # Within the context: the oldest channel lines go first, then the memories.
    used = sum(len(s) + 1 for s in [*instructions, *ask, *recalled, *recent, message["text"]])
    used += sum(len(json.dumps(ex[2])) + len(ex[1]) + 40 for ex in examples)
    while used > PROMPT_CHARS and (recent or recalled):
        used -= len((recent or recalled).pop(0)) + 1
    if recalled:
        ask += ["Earlier messages that may matter:", *recalled, ""]
    if recent:
        ask += [f"Recent messages in #{message['channel_id']}:", *recent, ""]
    if ballot_open:
        ask.append(f"A vote is open ({message['metadata']['vote_id']}): answer with a ballot.")
    ask.append(f"Message from {message['author_id']}: {' '.join(message['text'].split())}")
    return instructions, examples, ask


def build_prompt(agent: AgentProfile, history: list[dict], memories: list[dict],
                 message: ChatMessage,
                 ballot_open: bool, passages: Sequence[dict] = ()) -> str:
    """A few-shot completion prompt that ends where the agent's JSON begins (for a base
    model: the bundled one has no chat template)."""
    instructions, examples, ask = _prompt_parts(agent, history, memories, message,
                                                ballot_open, passages)
    parts = [*instructions, "",
             *[f"Message from {author}: {text}\nJSON: {json.dumps(action)}\n"
               for author, text, action in examples],
             *ask, "JSON:"]
    return "\n".join(parts) + " "


def build_messages(agent: AgentProfile, history: list[dict], memories: list[dict],
                   message: ChatMessage,
                   ballot_open: bool, passages: Sequence[dict] = ()) -> list[dict]:
    """The same prompt as chat turns, for a model whose GGUF carries a chat template:
    the instructions as the system turn, each example as a user turn answered by the
    assistant's JSON, then the channel and the message."""
    instructions, examples, ask = _prompt_parts(agent, history, memories, message,
                                                ballot_open, passages)
    turns = [{"role": "system", "content": "\n".join(instructions)}]
    for author, text, action in examples:
        turns += [{"role": "user", "content": f"Message from {author}: {text}"},
                  {"role": "assistant", "content": json.dumps(action)}]
    return [*turns, {"role": "user", "content": "\n".join(ask)}]


def reply_id(task_id: str) -> str:
    """The id of the reply to an inference task (its chunks name it before it exists)."""
    return derived_id(task_id, "reply")


def events(task: InferenceTask, agent: AgentProfile, message: ChatMessage, action: dict,
           vote_deadline: timedelta = timedelta(minutes=5),
           usage: dict[str, str] | None = None,
           sources: list[Source] | None = None) -> list[tuple[str, str, Any]]:
    """(event name, Kafka key, record) for the agent's reply and whatever it asked for;
    ``usage`` (token counts of the generation) goes in the reply's metadata, ``sources``
    (the knowledge-base passages it was given) in its sources.

    Ids derive from the task id: a task answered twice after a crash yields the same
    events, which consumers then drop as duplicates. A tool call or vote parroted from
    the prompt's examples is left out (``unprompted``).
    """
    action = unprompted(action, message["text"])
    now = datetime.now(timezone.utc)
    task_id, channel = task["event_id"], task["channel_id"]
    reply: ChatMessage = {
        "event_id": reply_id(task_id), "channel_id": channel, "thread_id": message["thread_id"],
        "reply_to": message["event_id"], "author_id": agent["agent_id"], "author_kind": "AGENT",
        "text": action["reply"], "mentions": [], "thread_depth": message["thread_depth"] + 1,
        "created_at": now, "task_id": task_id, "metadata": dict(usage or {}),
        "sources": sources,
    }
    out: list[tuple[str, str, Any]] = [("ChatMessage", channel, reply)]
    if action.get("tool_call"):
        request: ToolRequest = {
            "event_id": derived_id(task_id, "tool"), "channel_id": channel,
            "agent_id": agent["agent_id"], "tool": action["tool_call"]["tool"],
            "arguments_json": json.dumps(action["tool_call"]["arguments"]),
            "reason": action["reply"], "source_message_id": message["event_id"],
            "requested_at": now,
        }
        out.append(("ToolRequest", channel, request))
    if action.get("vote"):
        vote_id = derived_id(task_id, "vote")
        out.append(("VoteProposal", vote_id, new_proposal(
            channel, agent["agent_id"], action["vote"]["title"],
            vote_type=action["vote"]["vote_type"], deadline_s=vote_deadline.total_seconds(),
            description=f"Proposed by {agent['name']} in reply to: {message['text'][:200]}",
            vote_id=vote_id)))
    if action.get("ballot"):
        vote_id = message["metadata"]["vote_id"]
        out.append(("Ballot", vote_id, new_ballot(
            vote_id, channel, agent["agent_id"], action["ballot"]["choice"],
            action["ballot"]["rationale"], event_id=derived_id(task_id, "ballot"))))
    return out

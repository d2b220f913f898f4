"""The tool registry: one YAML definition per tool in ``catalog/``.

A definition names the tool's entry point, the JSON schema of its arguments (which
also constrains the generator when an agent calls it), the permissions it needs,
whether it needs a vote, whether it has external effects (true unless it says
otherwise), and its sandbox limits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from ops.core.errors import Invalid
from schemas.events import VoteStrategy
from streams.domain.votes.tally import STRATEGIES

CATALOG = Path(__file__).resolve().parent / "catalog"
CATEGORIES = ("math", "text", "data", "code", "visualization", "analytics", "system",
              "incident")
RUNS_IN = ("sandbox", "worker")
LIMIT_KEYS = ("cpu_s", "memory_mb", "wall_s", "output_kb", "processes", "file_mb",
              "disk_mb")


@dataclass(frozen=True)
class Limits:
    cpu_s: int
    memory_mb: int
    wall_s: float
    output_kb: int
    processes: int
    file_mb: int
    disk_mb: int  # the run directory is a tmpfs of this size


@dataclass(frozen=True)
class Tool:
    name: str
    category: str
    description: str
    entrypoint: str  # module:function, imported by the sandbox runner
    parameters: dict  # JSON schema of the arguments object
    permissions: tuple[str, ...]
    needs_vote: bool
    network: bool
    limits: Limits
    # Whether a run can change anything outside its scratch directory and its result: an
    # interrupted run of such a tool is never run a second time (tools/runs.py).
    external_effects: bool = True
    # Running it again for the same request changes nothing more (it finds what the
    # first run did): an interrupted run may simply run again.
    idempotent: bool = False
    # "sandbox": our runner in namespaces (tools/sandbox.py); "worker": an action of
    # Agora's own (tools/actions.py) that needs its stores, run in the worker.
    runs_in: str = "sandbox"
    # Templates whose agents run it without a vote when its `severity` argument is one
    # of these (an on-call agent acting on a Sev1).
    vote_exempt_templates: tuple[str, ...] = ()
    vote_exempt_severities: tuple[str, ...] = ()
    vote_strategy: VoteStrategy = "SIMPLE_MAJORITY"  # how a tool-usage vote is counted
    vote_quorum: float = 0.5


class InvalidArguments(Invalid):
    """Arguments that do not match the tool's schema; the message names the field."""


def parse(data: dict, source: str = "<tool>") -> Tool:
    missing = {"name", "category", "description", "entrypoint", "parameters", "limits"} - set(data)
    if missing:
        raise ValueError(f"{source}: missing {', '.join(sorted(missing))}")
    if data["category"] not in CATEGORIES:
        raise ValueError(f"{source}: category {data['category']!r} not in {CATEGORIES}")
    Draft202012Validator.check_schema(data["parameters"])
    limits, vote = data["limits"], data.get("vote") or {}
    if vote.get("strategy", "SIMPLE_MAJORITY") not in STRATEGIES:
        raise ValueError(f"{source}: vote strategy {vote['strategy']!r} not in {STRATEGIES}")
    if not isinstance(limits, dict) or set(limits) != set(LIMIT_KEYS) or not all(
            isinstance(limits[k], (int, float)) and not isinstance(limits[k], bool)
            and limits[k] > 0 for k in LIMIT_KEYS):
        raise ValueError(f"{source}: limits need positive {', '.join(LIMIT_KEYS)}")
    if not 0 <= float(vote.get("quorum", 0.5)) <= 1:
        raise ValueError(f"{source}: vote quorum must be in [0, 1]")
    if not isinstance(data.get("permissions", []), list):
        raise ValueError(f"{source}: permissions must be a list")
    if data.get("runs_in", "sandbox") not in RUNS_IN:
        raise ValueError(f"{source}: runs_in must be one of {RUNS_IN}")
    exempt = data.get("vote_exempt") or {}
    if not isinstance(exempt, dict) or set(exempt) - {"templates", "severities"}:
        raise ValueError(f"{source}: vote_exempt takes templates and severities")
    return Tool(name=data["name"], category=data["category"],
                description=" ".join(data["description"].split()),
                entrypoint=data["entrypoint"], parameters=data["parameters"],
                permissions=tuple(data.get("permissions", [f"tool:{data['name']}"])),
                needs_vote=bool(data.get("needs_vote", False)),
                network=bool(data.get("network", False)), limits=Limits(**limits),
                external_effects=bool(data.get("external_effects", True)),
                idempotent=bool(data.get("idempotent", False)),
                runs_in=data.get("runs_in", "sandbox"),
                vote_exempt_templates=tuple(exempt.get("templates", ())),
                vote_exempt_severities=tuple(exempt.get("severities", ())),
                vote_strategy=vote.get("strategy", "SIMPLE_MAJORITY"),
                vote_quorum=float(vote.get("quorum", 0.5)))


@lru_cache(maxsize=4)
def load(directory: Path = CATALOG) -> dict[str, Tool]:
    tools = {}
    for path in sorted(directory.glob("*.yaml")):
        tool = parse(yaml.safe_load(path.read_text()), str(path))
        if tool.name != path.stem:
            raise ValueError(f"{path}: name {tool.name!r} differs from the file name")
        tools[tool.name] = tool
    return tools


def needs_vote(tool: Tool, template: str | None, arguments: dict) -> bool:
    """Whether this request of ``tool`` waits for the channel's vote: the tool's rule,
    unless the requesting agent's template and the request's severity are exempt."""
    exempt = template in tool.vote_exempt_templates and \
        arguments.get("severity") in tool.vote_exempt_severities
    return tool.needs_vote and not exempt


def arguments(tool: Tool, arguments_json: str) -> dict:
    """The request's arguments, parsed and checked against the tool's schema."""
    try:
        value = json.loads(arguments_json)
    except json.JSONDecodeError as exc:
        raise InvalidArguments(f"arguments are not JSON: {exc}") from None
    error = best_match(Draft202012Validator(tool.parameters).iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "arguments"
        raise InvalidArguments(f"invalid {where}: {error.message}")
    return value

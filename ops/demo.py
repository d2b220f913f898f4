"""``agora demo``: the embedded stack, a team of agents and a short real conversation.

It starts the stack, checks each service once, creates six agents from the templates
in one channel, runs a worker, posts a few messages and shows, for each, the
relevance decision with its reasons and the agents' replies as they come back. Then
an agent runs a tool in the sandbox, and three agents vote on a decision.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ops import kafka, smoke, stack
from ops.config import Settings
from ops.kafka import TopicReader
from ops.stack.process import stop
from ops.topics import ensure_topics
from schemas import codec
from schemas.topics import (CHAT_MESSAGES, RELEVANCE_DECISIONS, TOOL_REQUESTS, TOOL_RESULTS,
                            VOTE_RESULTS, VOTES)

Echo = Callable[[str], None]
CHANNEL = "incidents"
TEAM = ("developer-backend", "developer-frontend", "analyst-data", "moderator-quality",
        "researcher-tech", "creative-writer")
SCRIPT = [
    ("human:maya", "The API server returns 502 since the last deploy and the PostgreSQL "
                   "connection pool looks exhausted. Where do we start?", []),
    ("human:leo", "The checkout page renders blank in Safari after the same deploy, "
                  "CSS or JavaScript?", []),
    ("human:maya", "Please draft a two-line status note for customers about the outage.",
     ["creative-writer"]),
]


def run(settings: Settings, echo: Echo, keep: bool) -> None:
    already_up = all(s.state == "up" for s in stack.status(settings.stack_dir))
    echo("== starting the embedded stack")
    stack.up(settings.stack_dir, progress=echo)
    settings = Settings()  # now resolves to the running stack's addresses
    try:
        _services(settings, echo)
        _conversation(settings, echo)
    finally:
        if keep or already_up:
            echo("\n== the stack stays up; connect with:")
            echo('   eval "$(agora stack env)"   # then: agora agents list, agora worker, '
                 'agora stack down')
        else:
            echo("\n== stopping the stack")
            stack.down(settings.stack_dir, progress=echo)


def _services(settings: Settings, echo: Echo) -> None:
    echo("\n== each service once")
    for t in ensure_topics(settings):
        if t.action == "created":
            echo(f"   topic {t.name} ({t.partitions} partitions)")
    text = "state check"
    echo(f"   postgres read back {smoke.postgres_roundtrip(settings, text)!r}")
    version, count = smoke.clickhouse_roundtrip(settings, rows=1000)
    echo(f"   clickhouse {version}: {count} rows written and counted")


def _conversation(settings: Settings, echo: Echo) -> None:
    from streams.registry.profiles import Registry
    from streams.worker import start_process

    echo(f"\n== a team of agents in #{CHANNEL} (expertise embedded once, kept in Qdrant)")
    registry = Registry(settings)
    for template in TEAM:
        profile, action = registry.create(template, CHANNEL)
        echo(f"   {profile['agent_id']:<19} {action:<9} tools: {', '.join(profile['tools'])}")

    echo("\n== starting a worker (relevance + responder, Faust)")
    started = time.monotonic()
    worker = start_process(settings, "demo")
    echo(f"   ready in {time.monotonic() - started:.1f}s; log: "
         f"{settings.stack_dir / 'logs' / 'worker-demo.log'}")
    watch = TopicReader(settings, RELEVANCE_DECISIONS.name, CHAT_MESSAGES.name,
                        TOOL_RESULTS.name, VOTES.name, VOTE_RESULTS.name)
    try:
        producer = kafka.producer(settings)
        for author, text, mentions in SCRIPT:
            message = smoke.chat_message(CHANNEL, text, author_id=author)
            message["mentions"] = mentions
            producer.produce(CHAT_MESSAGES.name, key=CHANNEL.encode(),
                             value=codec.encode("ChatMessage", message))
            producer.flush(10)
            echo(f"\n>> {author}: {text}" + (f"  (mentions {', '.join(mentions)})"
                                             if mentions else ""))
            show(watch, message, echo)
        _tool_call(settings, watch, echo)
        _vote(settings, watch, echo)
    finally:
        watch.close()
        stop(worker, grace_s=15)


def _one(watch: TopicReader, predicate, what: str, timeout_s: float, echo: Echo) -> dict | None:
    try:
        return watch.wait(predicate, timeout_s=timeout_s)[0]
    except TimeoutError:
        echo(f"   (no {what} within {timeout_s:g} s: see the worker log)")
        return None


def show(watch: TopicReader, message: dict, echo: Echo) -> None:
    """The decision about ``message`` with its reasons, then the replies to it."""
    found = _one(watch, lambda n, r: n == "RelevanceDecision"
                 and r["message_id"] == message["event_id"], "decision", 120, echo)
    if found is None:
        return
    echo(f"   relevance: {', '.join(found['selected']) or 'nobody'} selected"
         + (f" ({found['skip_reason']})" if found["skip_reason"] else ""))
    for score in sorted(found["scores"], key=lambda s: -s["score"])[:4]:
        echo(f"     {'*' if score['selected'] else ' '} {score['agent_id']:<19} "
             f"{score['score']:.2f}  {score['reason']}")

    def is_reply(name: str, record: dict) -> bool:
        return name == "ChatMessage" and record["reply_to"] == message["event_id"]

    started = time.monotonic()
    try:
        watch.wait(is_reply, count=len(found["selected"]), timeout_s=120)
    except TimeoutError as exc:
        echo(f"   (replies: {exc})")
    for reply in [r for n, r in watch.records if is_reply(n, r)]:
        echo(f"<< {reply['author_id']} (thread depth {reply['thread_depth']}, "
             f"{time.monotonic() - started:.1f}s): {reply['text']}")


def _tool_call(settings: Settings, watch: TopicReader, echo: Echo) -> None:
    from streams.tools.records import new_request

    echo("\n== a tool call: analyst-data runs the calculator in the sandbox")
    request = new_request("analyst-data", CHANNEL, "calculator",
                          {"expression": "1312 / 48210 * 100"},
                          "share of requests that failed with 502 in the last hour")
    kafka.publish(settings, TOOL_REQUESTS.name, [("ToolRequest", CHANNEL, request)])
    echo(f">> analyst-data asks: calculator {request['arguments_json']}")
    result = _one(watch, lambda n, r: n == "ToolResult"
                  and r["request_id"] == request["event_id"], "tool result", 60, echo)
    if result is None:
        return
    echo(f"<< tool result {result['status']} in {result['duration_ms']} ms: "
         f"{result['output'] or result['error']}")
    asked = [r for n, r in watch.records if n == "ToolResult"
             and r["request_id"] != request["event_id"]]
    for other in asked:  # tool calls the agents made themselves while answering
        echo(f"   the agents' own tool call: {other['agent_id']} -> {other['tool']}: "
             f"{other['status']} {(other['output'] or other['error'] or '')[:160]}")


def _vote(settings: Settings, watch: TopicReader, echo: Echo) -> None:
    from streams.votes.records import new_proposal

    voters = ["developer-backend", "developer-frontend", "moderator-quality"]
    echo("\n== a vote: three agents decide, each casting a ballot through the generator")
    proposal = new_proposal(CHANNEL, "human:maya", "Roll back the last deploy now?",
                            vote_type="PROJECT_DECISION", eligible_voters=voters,
                            deadline_s=240, description="The 502s started with the deploy.")
    kafka.publish(settings, VOTES.name, [("VoteProposal", proposal["vote_id"], proposal)])
    echo(f">> human:maya opens a vote (simple majority, quorum 50%): {proposal['title']}")
    vote_id = proposal["vote_id"]
    for count in range(1, len(voters) + 1):
        try:
            ballots = watch.wait(lambda n, r: n == "Ballot" and r["vote_id"] == vote_id,
                                 count=count, timeout_s=120)
        except TimeoutError:
            break
        ballot = ballots[-1]
        echo(f"<< ballot {ballot['voter_id']}: {ballot['choice']} ({ballot['rationale']})")
    result = _one(watch, lambda n, r: n == "VoteResult" and r["vote_id"] == vote_id,
                  "vote result", 240, echo)
    if result is None:
        return
    tally = ", ".join(f"{k} {v:g}" for k, v in result["tally"].items())
    echo(f"<< vote {result['outcome']} ({tally}): {result['reason']}")
    watch.poll(2)  # a ballot after an early close is rejected as late
    for name, rejected in watch.records:
        if name == "BallotRejected" and rejected["vote_id"] == vote_id:
            echo(f"   not counted: {rejected['voter_id']} ({rejected['reason']}): "
                 f"{rejected['detail']}")

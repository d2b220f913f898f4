"""End-to-end load, then relevance scale-out from one worker to two, on a local stack of
its own.

    .venv/bin/python bench/load.py [--rate 20] [--seconds 30] [--via gateway|kafka]
                                   [--channels 4] [--reply-every 100] [--backlog 1500]

Load: a worker (relevance, responder, tools, votes) and the Postgres sink run while
messages go at --rate per second for --seconds, through the gateway (PostMessage, one
author per 15 messages/s, under the per-caller rate limit) or straight into Kafka,
spread over --channels channels of six agents. Relevance runs with its threshold at 1,
so that only a mention selects an agent: every --reply-every-th message mentions one,
which must then answer (the LLM writes a few replies per second on this machine; the
other messages measure relevance alone). It reports the throughput, the backlog of
undecided messages and the worker's consumer-lag gauge, post-to-decision and
post-to-first-reply-token latency (p50/p99, clocked by this process: sent, then seen
on the topic), per agent the time from the post to its reply's first token and to the
whole reply (p50/p95), and each process's peak memory.

Scale-out: the same relevance stage with one worker, then with two in one consumer
group, each draining a backlog of --backlog messages once the group is caught up;
rates come from the decisions' broker timestamps, first to last. The channels are
named so that they spread evenly over the partitions (a channel's messages share one),
and each run prints how many cores each process kept busy. On the embedded stack
Triton's embedder, on one thread, bounds the stage; memory is in Postgres (pgvector),
which both workers write at once (bench/memory.py compares it with Qdrant's local mode).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import yaml
from aiokafka.partitioner import murmur2
from confluent_kafka import TopicPartition

from common import caught_up, local_stack, rate
from gateway import auth
from gateway.registry import Registry
from gateway.server import signer
from gateway.tls import channel_credentials
from ops import devstack as stack
from ops.core import kafka
from ops.core.config import Settings
from ops.core.kafka import ensure_topics
from ops.core.net import free_port
from ops.devstack import smoke
from ops.devstack.process import Proc, members, start_agora, start_worker, stop
from ops.store import migrate
from schemas import codec
from schemas.agora.v1 import chat_pb2, chat_pb2_grpc
from schemas.topics import ALL, CHAT_MESSAGES, RELEVANCE_DECISIONS, REPLY_CHUNKS
from streams.domain.relevance.scoring import DEFAULT_CONFIG_PATH
from support.kafka import start_at_ends

TEAM = ("developer-backend", "developer-frontend", "analyst-data", "moderator-quality",
        "researcher-tech", "creative-writer")
TEXTS = ("The orders query got slow again after the index change.",
         "Safari shows the checkout layout broken on small screens.",
         "Can we chart signups per week for the last quarter?",
         "Draft the release notes for version 2.4, please.")
PER_AUTHOR_PER_S = 15  # under the gateway's default 20/s per caller


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


class Watch:
    """Sees, from this process, when each message's decision and its replies' first
    tokens arrive on their topics."""

    def __init__(self, settings: Settings):
        self.decided: dict[str, float] = {}  # message id -> when its decision was seen
        self.first_token: dict[str, float] = {}  # message id -> when a reply chunk was
        # (agent, message id) -> when its reply's first chunk, and the reply, were seen
        self.agent_first: dict[tuple[str, str], float] = {}
        self.agent_reply: dict[tuple[str, str], float] = {}
        self._consumer = kafka.consumer(settings, "agora-bench-watch")
        parts = kafka.partitions(self._consumer, [RELEVANCE_DECISIONS.name, REPLY_CHUNKS.name,
                                                  CHAT_MESSAGES.name])
        self._consumer.assign([TopicPartition(t, p, self._end(t, p)) for t, p in parts])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _end(self, topic: str, partition: int) -> int:
        return self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]

    def _run(self) -> None:
        while not self._stop.is_set():
            record = self._consumer.poll(0.1)
            if record is None or record.error():
                continue
            seen = time.time()
            name, event = codec.decode(record.value())
            if name == "RelevanceDecision":
                self.decided.setdefault(event["message_id"], seen)
            elif name == "ReplyChunk":
                self.first_token.setdefault(event["reply_to"], seen)
                self.agent_first.setdefault((event["agent_id"], event["reply_to"]), seen)
            elif event["author_kind"] == "AGENT" and event["reply_to"]:
                self.agent_reply.setdefault((event["author_id"], event["reply_to"]), seen)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


def stack_procs(settings: Settings) -> dict[str, Proc]:
    """The local stack's servers by name."""
    return {name: Proc(**record["proc"]) for name, record in
            stack.read_state(settings.stack_dir)["services"].items() if record.get("proc")}


def peak_mb(proc: Proc) -> float:
    """Peak resident memory of a process and its group (VmHWM, summed), in MB."""
    total = 0
    for pid in members(proc):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines()
                       if line.startswith("VmHWM:")), 0)
    return total / 1024


def cpu_s(proc: Proc) -> float:
    """CPU time used so far by a process and its group (user + system), in seconds."""
    total = 0
    for pid in members(proc):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
    return total / os.sysconf("SC_CLK_TCK")


def spread(prefix: str, count: int, partitions: int) -> list[str]:
    """``count`` channel names that the Kafka partitioner spreads evenly over the
    partitions (round robin), so that a group's members share the load evenly."""
    names, i = [], 0
    while len(names) < count:
        name = f"{prefix}-{i}"
        if (murmur2(name.encode()) & 0x7FFFFFFF) % partitions == len(names) % partitions:
            names.append(name)
        i += 1
    return names


def lag_gauge(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("agora_consumer_lag{") and CHAT_MESSAGES.name in line)


def messages(rooms: list[str], count: int, reply_every: int) -> list[dict]:
    out = []
    for i in range(count):
        message = smoke.chat_message(rooms[i % len(rooms)], f"{TEXTS[i % len(TEXTS)]} ({i})",
                                     author_id=f"human:load-{i % 7}")
        if reply_every and i % reply_every == reply_every - 1:
            message["mentions"] = [TEAM[i % len(TEAM)]]
        out.append(message)
    return out


async def send_via_gateway(settings: Settings, planned: list[dict], per_s: float,
                           sent: dict[str, float], mentioned: set[str]) -> None:
    key, ttl = signer(settings), settings.gateway_token_max_s
    authors = max(1, math.ceil(per_s / PER_AUTHOR_PER_S))
    rooms = sorted({m["channel_id"] for m in planned})
    bearers = [(("authorization", f"Bearer {auth.issue(key, f'human:load-{a}', rooms, ttl)}"),)
               for a in range(authors)]
    async with grpc.aio.secure_channel(settings.gateway_address,
                                       channel_credentials(settings)) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)

        async def post(i: int, message: dict) -> None:
            started = time.time()
            answer = await stub.PostMessage(chat_pb2.PostMessageRequest(
                channel_id=message["channel_id"], text=message["text"],
                mentions=message["mentions"], idempotency_key=message["event_id"]),
                metadata=bearers[i % authors], timeout=30)
            sent[answer.message_id] = started
            if message["mentions"]:
                mentioned.add(answer.message_id)

        await paced(planned, per_s, post)


async def send_via_kafka(settings: Settings, planned: list[dict], per_s: float,
                         sent: dict[str, float], mentioned: set[str]) -> None:
    producer = kafka.AsyncProducer(settings)
    try:
        async def post(_i: int, message: dict) -> None:
            started = time.time()
            await producer.send(CHAT_MESSAGES.name, message["channel_id"],
                                codec.encode("ChatMessage", message))
            sent[message["event_id"]] = started
            if message["mentions"]:
                mentioned.add(message["event_id"])

        await paced(planned, per_s, post)
    finally:
        producer.close()


async def paced(planned: list[dict], per_s: float, post) -> None:
    """Start one post every 1/per_s seconds (not waiting for the previous one)."""
    start, tasks = time.monotonic(), []
    for i, message in enumerate(planned):
        await asyncio.sleep(max(0.0, start + i / per_s - time.monotonic()))
        tasks.append(asyncio.create_task(post(i, message)))
    await asyncio.gather(*tasks)


def relevance_only(settings: Settings) -> str:
    """A relevance config whose threshold only a mention passes."""
    config = yaml.safe_load((settings.relevance_config or DEFAULT_CONFIG_PATH).read_text())
    config["threshold"] = 1.0
    path = Path(tempfile.mkdtemp()) / "relevance.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def load(settings: Settings, args, rooms: list[str], config: str) -> float:
    port = free_port()
    worker = start_worker(settings, "load", AGORA_RELEVANCE_CONFIG=config,
                           AGORA_METRICS_PORT=str(port))
    sink = start_agora(settings.stack_dir, ["sink", "postgres"], "sink-load",
                       lambda log: "sink.ready" in log, timeout_s=60)
    watch = Watch(settings)
    planned = messages(rooms, int(args.rate * args.seconds), args.reply_every)
    sent: dict[str, float] = {}  # message id -> when it was sent
    mentioned: set[str] = set()
    backlog, lags, stop_sampling = [0], [0.0], threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.5):
            backlog.append(len(sent) - len(sent.keys() & watch.decided.keys()))
            try:
                lags.append(lag_gauge(port))
            except OSError:
                pass  # a missed sample

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        sampler.start()
        print(f"load: {len(planned)} messages at {args.rate:g}/s for {args.seconds:g} s via "
              f"{args.via} into {len(rooms)} channels, "
              f"{sum(bool(m['mentions']) for m in planned)} mentioning an agent",
              flush=True)
        started = time.time()
        send = send_via_gateway if args.via == "gateway" else send_via_kafka
        asyncio.run(send(settings, planned, args.rate, sent, mentioned))
        sending_s = time.time() - started
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (
                set(sent) <= set(watch.decided) and mentioned <= set(watch.first_token)):
            time.sleep(0.5)
        stop_sampling.set()
        sampler.join()
        decided = [watch.decided[m] - sent[m] for m in sent if m in watch.decided]
        tokens = [watch.first_token[m] - sent[m] for m in mentioned if m in watch.first_token]
        last = max(watch.decided.get(m, 0) for m in sent)
        print(f"  sent        : {len(sent)} in {sending_s:.1f} s ({len(sent) / sending_s:.1f}/s)")
        decided_per_s = len(decided) / (last - started)
        print(f"  decided     : {len(decided)} of {len(sent)} ({decided_per_s:.1f}/s "
              f"from the first post to the last decision)")
        print(f"  post → decision          p50 {percentile(decided, .5) * 1000:7.0f} ms   "
              f"p99 {percentile(decided, .99) * 1000:7.0f} ms")
        print(f"  post → first reply token p50 {percentile(tokens, .5):7.2f} s    "
              f"p99 {percentile(tokens, .99):7.2f} s    ({len(tokens)} of {len(mentioned)} "
              f"replies)")
        for agent in sorted({a for a, _ in watch.agent_reply}):
            first = [t - sent[m] for (a, m), t in watch.agent_first.items()
                     if a == agent and m in sent]
            full = [t - sent[m] for (a, m), t in watch.agent_reply.items()
                    if a == agent and m in sent]
            print(f"  {agent:<20}: first token p50 {percentile(first, .5):6.2f} s p95 "
                  f"{percentile(first, .95):6.2f} s; full reply p50 {percentile(full, .5):6.2f} s "
                  f"p95 {percentile(full, .95):6.2f} s ({len(full)} replies)")
        print(f"  backlog     : at most {max(backlog)} messages undecided; worker consumer-lag "
              f"gauge at most {max(lags):.0f}")
        peaks = {"worker": peak_mb(worker), "sink": peak_mb(sink),
                 **{name: peak_mb(proc) for name, proc in stack_procs(settings).items()}}
        print("  peak memory : " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in peaks.items()),
              flush=True)
        return decided_per_s / (len(sent) / sending_s)
    finally:
        stop_sampling.set()
        watch.close()
        stop(sink, grace_s=15)
        stop(worker, grace_s=15)


def drain_rate(settings: Settings, rooms: list[str], backlog: int, config: str,
               workers: int) -> float:
    group = f"agora-scale-{workers}-{uuid.uuid4().hex[:6]}"
    # From the topics' ends: a new group would otherwise replay all before it (the
    # load's inference tasks among them) while being measured.
    start_at_ends(settings, group, [t.name for t in ALL])
    procs = []
    # A session timeout long enough that a busy event loop on 2 shared cores does not
    # miss it: a rebalance in the middle would measure the group's pause, not its pace.
    threads = [threading.Thread(target=lambda n=n: procs.append(start_worker(
        settings, f"scale-{workers}-{n}", AGORA_RELEVANCE_CONFIG=config, AGORA_APP_ID=group,
        AGORA_SESSION_TIMEOUT_S="10"))) for n in range(workers)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        caught_up(settings, rooms)
        batch = messages(rooms, backlog, 0)
        watched = {f"worker-{n}": proc for n, proc in enumerate(procs)} | stack_procs(settings)

        def used() -> dict[str, float]:
            mine = os.times()  # this process: the producer, and the reader of decisions
            return {name: cpu_s(proc) for name, proc in watched.items()} | {
                "bench": mine.user + mine.system}

        before, started = used(), time.monotonic()
        producer = kafka.producer(settings, **{"linger.ms": 5})
        for message in batch:
            producer.produce(CHAT_MESSAGES.name, key=message["channel_id"].encode(),
                             value=codec.encode("ChatMessage", message))
        producer.flush(30)
        ids = {m["event_id"] for m in batch}
        per_s = rate(settings, RELEVANCE_DECISIONS.name, len(ids),
                     match=lambda r: r["message_id"] in ids)
        elapsed = time.monotonic() - started
        busy = {name: (cpu - before[name]) / elapsed for name, cpu in used().items()}
        print(f"  {workers} worker(s): {per_s:8.1f} decisions/s; cores busy: "
              + ", ".join(f"{name} {cores:.2f}" for name, cores in busy.items() if cores >= 0.01)
              + f" (total {sum(busy.values()):.2f} of {os.cpu_count()})", flush=True)
        return per_s
    finally:
        for proc in procs:
            stop(proc, grace_s=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20, help="messages per second")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--via", choices=("gateway", "kafka"), default="gateway")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--reply-every", type=int, default=100,
                        help="every Nth message mentions an agent (0: none)")
    parser.add_argument("--backlog", type=int, default=1500,
                        help="messages per scale-out run")
    args = parser.parse_args()

    with local_stack(fresh=True) as settings:
        ensure_topics(settings, ALL)
        migrate.postgres(settings)
        rooms = spread("load", args.channels, settings.partitions)
        registry = Registry(settings)
        for room in rooms:
            for template in TEAM:
                registry.create(template, room)
        print(f"team of {len(TEAM)} agents in each of {len(rooms)} channels", flush=True)
        config = relevance_only(settings)
        kept_up = load(settings, args, rooms, config)
        print(f"scale-out: relevance alone (threshold 1), backlogs of {args.backlog} messages",
              flush=True)
        one = drain_rate(settings, rooms, args.backlog, config, 1)
        two = drain_rate(settings, rooms, args.backlog, config, 2)
    print(f"RATIO load_decided_vs_offered {kept_up:.3f} target 1.0")
    print(f"RATIO relevance_scale_out_2_workers {two / one:.3f} target 1.6")


if __name__ == "__main__":
    main()

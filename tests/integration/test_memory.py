"""Agent memory on the real stores: pgvector in the stack's Postgres (the default), and
Qdrant's local mode (the backend kept for a Qdrant server), through one interface."""

from __future__ import annotations

import multiprocessing
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from ops.store.memory import PgMemory, open_memory
from ops.store.qdrant import QdrantMemory


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def messages(channel: str, n: int) -> list[dict]:
    start = datetime(2026, 12, 1, tzinfo=timezone.utc)
    return [{"event_id": str(uuid.uuid4()), "channel_id": channel, "author_id": f"human:{i}",
             "text": f"message {i}", "created_at": start + timedelta(seconds=i)}
            for i in range(n)]


@pytest.fixture(params=["postgres", "qdrant-local"])
def memory(request, settings, tmp_path):
    found = open_memory(settings.memory if request.param == "postgres" else str(tmp_path))
    assert isinstance(found, PgMemory if request.param == "postgres" else QdrantMemory)
    yield found
    found.close()


def test_recall_finds_the_nearest_of_the_channel_only(memory):
    rng = np.random.default_rng(3)
    channel, other = f"mem-{uuid.uuid4().hex[:6]}", f"mem-{uuid.uuid4().hex[:6]}"
    ours, theirs = messages(channel, 40), messages(other, 40)
    vectors = unit(rng, 80)
    memory.remember(ours, vectors[:40])
    memory.remember(theirs, vectors[40:])
    memory.remember(ours[:5], vectors[:5])  # a replay changes nothing

    query = vectors[17] + 0.05 * unit(rng, 1)[0]
    hits = memory.recall(channel, query, 3)
    assert [h["message_id"] for h in hits][0] == ours[17]["event_id"]
    assert len(hits) == 3 and {h["channel_id"] for h in hits} == {channel}
    assert hits[0] == {"message_id": ours[17]["event_id"], "channel_id": channel,
                       "author_id": "human:17", "text": "message 17",
                       "created_ms": int(ours[17]["created_at"].timestamp() * 1000)}
    # The nearest of the other channel is never recalled here, however close.
    assert theirs[0]["event_id"] not in {h["message_id"] for h in memory.recall(
        channel, vectors[40], 40)}
    skipped = memory.recall(channel, query, 3, exclude=[ours[17]["event_id"]])
    assert ours[17]["event_id"] not in {h["message_id"] for h in skipped} and len(skipped) == 3


def test_text_vectors_are_kept_per_text(memory):
    rng = np.random.default_rng(4)
    texts = [f"databases {uuid.uuid4().hex[:6]}", "Is the API down?"]
    first, second = unit(rng, 2)
    memory.put_vectors(dict(zip(texts, [first, second])))
    memory.put_vectors({texts[0]: second})  # embedded again (another model): replaced
    found = memory.vectors([*texts, "never embedded"])
    assert set(found) == set(texts)
    assert np.allclose(found[texts[0]], second, atol=1e-6)
    assert np.allclose(found[texts[1]], second, atol=1e-6)
    assert memory.vectors([]) == {}


def _worker(dsn: str, channel: str, seed: int, rounds: int, answers) -> None:
    memory = open_memory(dsn)
    rng = np.random.default_rng(seed)
    found = 0
    for _ in range(rounds):
        batch, vectors = messages(channel, 5), unit(rng, 5)
        memory.remember(batch, vectors)
        hits = memory.recall(channel, vectors[2], 1)
        found += hits[0]["message_id"] == batch[2]["event_id"]
    memory.close()
    answers.put((seed, found))


def test_two_workers_write_and_read_memory_at_once(settings):
    """Two processes, each its own pool, interleave writes and reads of one table (Qdrant's
    local mode lets one process at a time open its directory)."""
    channels = [f"mem-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    context = multiprocessing.get_context("spawn")
    answers = context.Queue()
    procs = [context.Process(target=_worker, args=(settings.memory, c, i, 40, answers))
             for i, c in enumerate(channels)]
    for p in procs:
        p.start()
    results = dict(answers.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert results == {0: 40, 1: 40}  # each read saw its own write at once
    memory = open_memory(settings.memory)
    try:
        for channel in channels:
            assert len(memory.recall(channel, unit(np.random.default_rng(9), 1)[0], 500)) == 200
    finally:
        memory.close()

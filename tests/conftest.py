"""Fixtures: the real local stack, started once per test session and stopped at the end."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from ops import devstack as stack
from ops.core.config import Settings
from ops.devstack.process import Proc, members, start_worker, stop, survivors
from ops.store import migrate
from support.kafka import TopicReader


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings resolved against a real stack of our own, on free loopback ports."""
    stack_dir = Path(tempfile.mkdtemp(prefix="agora-test-stack-"))
    try:
        stack.up(stack_dir, progress=lambda line: print(line, flush=True))
        tracked = stack.processes(stack_dir)
        yield Settings(stack_dir=stack_dir)
    finally:
        stack.down(stack_dir, progress=lambda line: None)
        shutil.rmtree(stack_dir, ignore_errors=True)
    left = survivors(tracked)
    assert not left, f"stack processes survived the test session: {left}"


def run_agora(stack_dir: Path, *args: str, timeout_s: float = 300,
              **variables: str) -> subprocess.CompletedProcess:
    """The ``agora`` CLI against the stack in ``stack_dir`` (the caller's AGORA_* unset,
    ``variables`` set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGORA_")}
    env.update(AGORA_STACK_DIR=str(stack_dir), **variables)
    return subprocess.run([str(Path(sys.executable).parent / "agora"), *args], env=env,
                          capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture
def reader(settings: Settings):
    """Open TopicReaders on topics; closed at teardown."""
    opened: list[TopicReader] = []

    def open_reader(topic: str) -> TopicReader:
        opened.append(TopicReader(settings, topic))
        return opened[-1]

    yield open_reader
    for r in opened:
        r.close()


def metric(port: int, name: str, **labels: str) -> float | None:
    """One sample from the process's /metrics (None when the series is absent)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*?)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return None


@pytest.fixture
def own_postgres(settings: Settings):
    """Settings whose Postgres is a migrated schema of the test's own, dropped after."""
    schema = f"own_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(settings.postgres_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            mine = settings.model_copy(update={"postgres_dsn": make_conninfo(
                settings.postgres_dsn, options=f"-c search_path={schema},public")})
            migrate.postgres(mine)
            yield mine
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def workers(settings: Settings):
    """Start `agora worker` processes (own process groups); all stopped at teardown."""
    started: list[tuple[Proc, dict[int, int], Path]] = []

    def start(name: str, **env: str) -> Proc:
        proc = start_worker(settings, name, **env)
        log = settings.stack_dir / "logs" / f"worker-{name}.log"
        started.append((proc, members(proc), log))
        return proc

    yield start
    # Stopped together: each takes seconds to leave its consumer group.
    with ThreadPoolExecutor() as pool:
        list(pool.map(lambda s: stop(s[0], grace_s=15), started))
    for _, _, log in started:
        print(f"--- last lines of {log.name}:\n" + "\n".join(log.read_text().splitlines()[-60:]))
    assert not survivors({pid: t for _, tracked, _ in started for pid, t in tracked.items()})


LAST = ("test_faults", "test_sinks")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The sink tests go last: they count every event of the session's pipeline runs
    (tools, votes, conversations) and leave thousands of records behind them, which
    no later worker or topic reader should have to wade through. The fault drills go
    just before them: their workers start at the topics' ends in consumer groups of
    their own, and no later worker (of the default group) has to answer their
    messages again; their sinks use the default sink groups, which the sink tests
    then carry on from."""
    items.sort(key=lambda item: LAST.index(item.module.__name__) + 1
               if item.module.__name__ in LAST else 0)

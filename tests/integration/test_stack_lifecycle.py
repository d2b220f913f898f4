"""``agora stack`` as a user drives it: up, status, env, idempotence, repair, down."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from conftest import run_agora
from ops import devstack as stack
from ops.devstack.process import survivors

pytestmark = pytest.mark.stack


@pytest.fixture
def own_stack():
    path = Path(tempfile.mkdtemp(prefix="agora-lifecycle-"))
    yield path
    stack.down(path, progress=lambda line: None)  # also when the test failed half-way
    shutil.rmtree(path, ignore_errors=True)


def test_up_status_env_idempotent_repair_down(own_stack: Path):
    first = run_agora(own_stack, "stack", "up")
    assert first.returncode == 0, first.stderr
    assert "[3/5] triton" in first.stderr and "ready at 127.0.0.1:" in first.stderr

    status = run_agora(own_stack, "stack", "status")
    assert status.returncode == 0, status.stdout
    assert [line.split()[:2] for line in status.stdout.splitlines()] == [
        [name, "up"] for name in ("broker", "postgres", "triton", "clickhouse", "gateway")]

    exports = dict(line.removeprefix("export ").split("=", 1)
                   for line in run_agora(own_stack, "stack", "env").stdout.splitlines())
    assert exports["AGORA_BROKER"].startswith("127.0.0.1:")
    assert exports["AGORA_POSTGRES_DSN"].startswith("postgresql://postgres@127.0.0.1:")
    assert exports["AGORA_CLICKHOUSE_URL"] == f"chdb://{own_stack.resolve()}/clickhouse"
    assert exports["AGORA_GATEWAY_ADDRESS"].startswith("127.0.0.1:")
    # agora token issue and the CLI's client find the keys and the CA; private files,
    # and the state naming them, are the owner's alone.
    signing = Path(exports["AGORA_GATEWAY_SIGNING_KEYS"])
    assert json.loads(signing.read_text())["keys"][0]["alg"] == "RS256"
    assert "BEGIN CERTIFICATE" in Path(exports["AGORA_GATEWAY_TLS_CA"]).read_text()
    assert Path(exports["AGORA_GATEWAY_JWKS"]).exists()
    for private in (signing, own_stack / "stack.json", own_stack / "gateway" / "gateway-key.pem"):
        assert private.stat().st_mode & 0o077 == 0, private
    assert "AGORA_GATEWAY_JWT_KEY" not in exports  # no shared secret in the stack

    # Up again: nothing restarts.
    pids = {n: r["proc"]["pid"] for n, r in stack.read_state(own_stack)["services"].items()
            if r["proc"]}
    again = run_agora(own_stack, "stack", "up")
    assert again.returncode == 0 and again.stderr.count("already up") == 5
    assert pids == {n: r["proc"]["pid"] for n, r in
                    stack.read_state(own_stack)["services"].items() if r["proc"]}

    # A crash: the broker and Triton die hard, leaving a stale state file behind.
    tracked = stack.processes(own_stack)
    os.kill(pids["broker"], signal.SIGKILL)
    os.killpg(pids["triton"], signal.SIGKILL)
    time.sleep(0.5)
    stale = run_agora(own_stack, "stack", "status")
    assert stale.returncode == 1
    assert "broker      stale" in stale.stdout and "triton      stale" in stale.stdout
    repaired = run_agora(own_stack, "stack", "up")
    assert repaired.returncode == 0, repaired.stderr
    assert repaired.stderr.count("stale record") == 2
    assert run_agora(own_stack, "stack", "status").returncode == 0
    new_pids = {n: r["proc"]["pid"] for n, r in stack.read_state(own_stack)["services"].items()
                if r["proc"]}
    assert new_pids["postgres"] == pids["postgres"]
    assert new_pids["broker"] != pids["broker"] and new_pids["triton"] != pids["triton"]
    # Restarted where they were: clients configured before the crash still reach them.
    assert dict(line.removeprefix("export ").split("=", 1)
                for line in run_agora(own_stack, "stack", "env").stdout.splitlines()) == exports

    # Down: every process of every generation is gone, and so is shared memory.
    tracked |= stack.processes(own_stack)
    shm_prefix = stack.read_state(own_stack)["services"]["triton"]["extra"]["shm_prefix"]
    down = run_agora(own_stack, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert survivors(tracked) == []
    assert not list(Path("/dev/shm").glob(shm_prefix + "*"))
    assert run_agora(own_stack, "stack", "status").returncode == 1
    assert run_agora(own_stack, "stack", "env").returncode == 1

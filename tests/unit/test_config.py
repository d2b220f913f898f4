"""Settings: environment over a running stack's addresses over documented defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from ops.core.config import STATE_FILE, WORKER_AGENTS, Settings, documented


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in [k for k in __import__("os").environ if k.startswith("AGORA_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no ./.agora of a developer's stack leaks in


def test_defaults_without_a_stack(tmp_path):
    s = Settings()
    assert s.stack_dir == tmp_path / ".agora"
    assert s.broker == "127.0.0.1:9092"
    assert s.clickhouse == f"chdb://{tmp_path / '.agora' / 'clickhouse'}"
    assert s.memory == s.postgres_dsn  # pgvector in the same Postgres
    assert (s.partitions, s.session_timeout_s, s.log_format) == (4, 3.0, "console")


def test_running_stack_fills_in_addresses(tmp_path, monkeypatch):
    stack_dir = tmp_path / "stack"
    stack_dir.mkdir()
    (stack_dir / STATE_FILE).write_text(json.dumps({"env": {
        "AGORA_BROKER": "127.0.0.1:40001", "AGORA_TRITON_GRPC": "127.0.0.1:40002"}}))
    monkeypatch.setenv("AGORA_STACK_DIR", str(stack_dir))
    monkeypatch.setenv("AGORA_TRITON_GRPC", "triton:8001")  # the environment wins
    s = Settings()
    assert (s.broker, s.triton_grpc) == ("127.0.0.1:40001", "triton:8001")
    assert Settings(stack_dir=tmp_path / "elsewhere").broker == "127.0.0.1:9092"


def test_environment_is_typed_and_validated(monkeypatch):
    monkeypatch.setenv("AGORA_PARTITIONS", "12")
    monkeypatch.setenv("AGORA_CLICKHOUSE_URL", "http://default:pw@clickhouse:8123/agora")
    s = Settings()
    assert s.partitions == 12 and s.clickhouse == "http://default:pw@clickhouse:8123/agora"
    monkeypatch.setenv("AGORA_PARTITIONS", "0")
    with pytest.raises(ValidationError, match="partitions"):
        Settings()


def test_a_worker_runs_the_agents_it_is_told(monkeypatch):
    assert Settings().worker_agents.split(",") == list(WORKER_AGENTS)
    monkeypatch.setenv("AGORA_WORKER_AGENTS", "relevance,votes")
    assert Settings().worker_agents == "relevance,votes"
    for wrong in ("relevance,responders", "", "relevance,"):
        monkeypatch.setenv("AGORA_WORKER_AGENTS", wrong)
        with pytest.raises(ValidationError, match="worker_agents"):
            Settings()


def test_every_setting_is_documented():
    rows = documented()
    assert {r[0] for r in rows} == {f"AGORA_{n.upper()}" for n in Settings.model_fields}
    assert all(description for _, _, description in rows)


def test_readme_documents_every_setting():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for var, default, _ in documented():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{var}` |")), None)
        assert row, f"README's configuration table lacks {var}"
        assert (f"`{default}`" in row) if default else "(empty)" in row, row

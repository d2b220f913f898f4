"""The sandbox against hostile commands, run for real (namespaces, rlimits, Landlock).

Each case must be contained and reported with a clear status, leave nothing behind
on the host and leave this process (standing in for the worker) unharmed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import socket
import uuid
from pathlib import Path

import psutil
import pytest

from streams.tools import catalog, sandbox

pytestmark = pytest.mark.skipif(sandbox.unavailable() is not None,
                                reason=f"no sandbox here: {sandbox.unavailable()}")

TOOLS = catalog.load()
# The shell's own limits, made shorter so that the suite stays quick.
SHELL = dataclasses.replace(TOOLS["shell"], limits=dataclasses.replace(
    TOOLS["shell"].limits, cpu_s=2, wall_s=5, memory_mb=256, output_kb=16, processes=16))


def run(command: str, root: Path, tool: catalog.Tool = SHELL) -> sandbox.Run:
    workdir = root / f"run-{uuid.uuid4().hex[:8]}"
    result = asyncio.run(sandbox.run(tool, {"command": command}, workdir))
    assert not _inside(workdir), "a sandboxed process outlived its run"
    return result


def _inside(workdir: Path) -> list[int]:
    """Live processes working in ``workdir`` (what a sandbox run starts)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if Path(proc.cwd()).is_relative_to(workdir):
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def test_a_plain_command_runs_in_its_own_directory(tmp_path):
    result = run("pwd; echo hello > note.txt; cat note.txt; echo $HOME; env | wc -l", tmp_path)
    assert result.status == "OK", result.error
    lines = result.output.splitlines()
    assert lines[0].startswith(str(tmp_path / "run-")) and lines[1] == "hello"
    assert lines[2] == lines[0]  # HOME is the private directory
    assert int(lines[3]) < 15  # a scrubbed environment, not the worker's
    assert result.artifacts == [str(Path(lines[0]) / "note.txt")]


@pytest.mark.parametrize("command", ["while :; do :; done",
                                     "python3 -c 'while True: pass'"])
def test_an_infinite_loop_is_stopped_at_its_cpu_limit(tmp_path, command):
    result = run(command, tmp_path)
    assert result.status == "TIMEOUT"
    assert "CPU limit" in result.error


def test_a_fork_bomb_is_contained(tmp_path):
    before = len(psutil.pids())
    result = run("f() { f | f & }; f; sleep 30", tmp_path)
    assert result.status in ("TIMEOUT", "FAILED"), result
    assert len(psutil.pids()) < before + 10  # nothing of it is left on the host
    assert run("echo still fine", tmp_path).output.startswith("still fine")


def test_the_process_limit_holds(tmp_path):
    result = run("for i in $(seq 40); do sleep 3 & done; wait", tmp_path)
    assert result.status == "FAILED"
    assert "fork" in result.error.lower() or "temporarily unavailable" in result.error


def test_a_memory_hog_fails_at_its_memory_limit(tmp_path):
    result = run("python3 -c 'x = bytearray(2 * 1024**3)'", tmp_path)
    assert result.status == "FAILED"
    assert "MemoryError" in result.error


def test_a_huge_output_is_truncated(tmp_path):
    result = run("head -c 20000000 /dev/zero | tr '\\0' a; echo", tmp_path)
    assert result.status == "OK", result.error
    assert len(result.output.encode()) <= SHELL.limits.output_kb * 1024 + 200
    assert "aaaa" in result.output


def test_an_endless_output_ends_at_a_limit(tmp_path):
    result = run("yes", tmp_path)
    assert result.status in ("TIMEOUT", "FAILED")
    assert len((result.error or "").encode()) <= SHELL.limits.output_kb * 1024 + 200


def test_writing_outside_its_directory_is_refused(tmp_path):
    target = Path("/tmp") / f"agora-escape-{uuid.uuid4().hex}"
    result = run(f"echo pwned > {target}; echo pwned > ../escaped.txt; touch ~/../x",
                 tmp_path)
    assert result.status == "FAILED"
    assert "Permission denied" in result.error
    assert not target.exists() and not (tmp_path / "escaped.txt").exists()


def test_a_secret_file_of_the_host_cannot_be_read(tmp_path):
    token = secrets.token_hex(16)
    secret = tmp_path / "secret.txt"
    secret.write_text(token)
    secret.chmod(0o600)
    result = run(f"cat {secret}; cat /etc/shadow | head -1; cat /proc/1/environ", tmp_path)
    assert token not in (result.output + (result.error or ""))
    assert "root:" not in (result.output + (result.error or ""))
    assert "Permission denied" in (result.error or "") or "No such file" in (result.error or "")


def test_no_network_connection_can_be_opened(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        result = run(
            "python3 -c \"import socket; socket.create_connection(('127.0.0.1', "
            f"{port}), timeout=2)\"", tmp_path)
        assert result.status == "FAILED"
        assert "Error" in result.error
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever connected
        udp = run("python3 -c \"import socket; s = socket.socket(socket.AF_INET, "
                  "socket.SOCK_DGRAM); s.sendto(b'x', ('1.1.1.1', 53))\"", tmp_path)
        assert udp.status == "FAILED" and "unreachable" in udp.error
    finally:
        listener.close()


def test_signals_cannot_reach_the_host(tmp_path):
    result = run(f"kill -9 {os.getpid()}; kill -9 -1; echo after", tmp_path)
    assert result.status in ("OK", "FAILED", "TIMEOUT")
    assert psutil.pid_exists(os.getpid())  # this process (the worker) survived
    assert run("echo alive", tmp_path).output.startswith("alive")


def test_a_tool_that_needs_the_network_is_refused(tmp_path):
    networked = dataclasses.replace(TOOLS["calculator"], network=True)
    result = asyncio.run(sandbox.run(networked, {"expression": "1+1"}, tmp_path / "net"))
    assert result.status == "FAILED" and "network" in result.error


def test_the_catalog_tools_run_in_the_sandbox(tmp_path):
    calc = asyncio.run(sandbox.run(TOOLS["calculator"], {"expression": "0.17 * 2340"},
                                   tmp_path / "calc"))
    assert calc.status == "OK" and "397.8" in calc.output
    chart = asyncio.run(sandbox.run(TOOLS["chart_generator"], {
        "kind": "bar", "title": "Errors", "labels": ["a", "b"], "values": [3, 5]},
        tmp_path / "chart"))
    assert chart.status == "OK", chart.error
    [png] = chart.artifacts
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = asyncio.run(sandbox.run(TOOLS["calculator"], {"expression": "__import__('os')"},
                                  tmp_path / "bad"))
    assert bad.status == "FAILED" and bad.error

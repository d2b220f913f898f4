"""The sandbox against hostile commands, run for real (namespaces, a minimal root,
an unprivileged uid, seccomp, rlimits, Landlock).

Each case must be contained and reported with a clear status, leave nothing behind
on the host and leave this process (standing in for the worker) unharmed. A host
that cannot sandbox fails these tests, unless AGORA_TEST_NO_SANDBOX=1 says it
knowingly lacks the isolation (then they are skipped, and the reason is shown).
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

from streams.domain.tools import catalog
from streams.tools import sandbox


@pytest.fixture(autouse=True)
def _sandbox_present():
    reason = sandbox.unavailable()
    if reason is None:
        return
    if os.environ.get("AGORA_TEST_NO_SANDBOX") == "1":
        pytest.skip(f"told this host has no sandbox: {reason}")
    pytest.fail(f"this host cannot sandbox tools ({reason}); set AGORA_TEST_NO_SANDBOX=1 "
                "to run the suite knowingly without sandbox coverage")

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
    assert "Read-only file system" in result.error or "Permission denied" in result.error
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
        assert udp.status == "FAILED" and "Operation not permitted" in udp.error
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


def test_a_unix_socket_of_the_host_cannot_be_reached(tmp_path):
    path = tmp_path / "listener.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    listener.settimeout(0.5)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(b"\0agora-sandbox-test")
    abstract.listen()
    abstract.settimeout(0.5)
    try:
        for address in (repr(str(path)), "b'\\0agora-sandbox-test'"):
            result = run("python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); "
                         f"s.connect({address}); s.send(b'pwned')\"", tmp_path)
            assert result.status == "FAILED"
            assert "Operation not permitted" in result.error
        for sock in (listener, abstract):
            with pytest.raises(TimeoutError):
                sock.accept()  # nothing ever connected
    finally:
        listener.close()
        abstract.close()


def test_tools_run_as_an_unprivileged_user(tmp_path):
    result = run("id -u; id -g; touch mine; stat -c %u mine", tmp_path)
    assert result.status == "OK", result.error
    uid, gid, owner = result.output.splitlines()[:3]
    assert uid == gid == owner == "65534"


def test_the_host_filesystem_is_out_of_sight(tmp_path):
    secret = Path("/tmp") / f"agora-visible-{uuid.uuid4().hex}"
    secret.write_text("host file")
    try:
        result = run(f"cat {secret}; ls /run /var/run /home /root/.ssh /etc/shadow "
                     f"{Path.cwd()}", tmp_path)
        text = result.output + (result.error or "")
        assert result.status == "FAILED"
        assert "host file" not in text
        assert text.count("No such file") + text.count("Permission denied") >= 6, text
    finally:
        secret.unlink()


def test_namespace_mount_and_ptrace_calls_are_refused(tmp_path):
    for command in ("unshare -r true", "unshare -m true",
                    "python3 -c \"import ctypes; l = ctypes.CDLL(None, use_errno=True); "
                    "assert l.ptrace(16, 1, 0, 0) == -1 and ctypes.get_errno() == 1\"",
                    "python3 -c \"import ctypes; l = ctypes.CDLL(None, use_errno=True); "
                    "assert l.mount(b'none', b'.', b'tmpfs', 0, None) == -1 and "
                    "ctypes.get_errno() == 1\""):
        result = run(command, tmp_path)
        assert result.status == "FAILED" if command.startswith("unshare") else "OK", \
            (command, result)
        if command.startswith("unshare"):
            assert "Operation not permitted" in result.error


def test_a_run_is_held_to_its_disk_quota(tmp_path):
    result = run("head -c 9000000 /dev/zero > a; head -c 9000000 /dev/zero > b; "
                 "head -c 9000000 /dev/zero > c; head -c 9000000 /dev/zero > d", tmp_path)
    assert result.status == "FAILED"
    assert "No space left on device" in result.error


def test_only_reported_files_are_kept_and_an_empty_run_leaves_nothing(tmp_path):
    workdir = tmp_path / str(uuid.uuid4())
    result = asyncio.run(sandbox.run(SHELL, {"command": "echo kept > out.txt"}, workdir))
    assert result.artifacts == [str(workdir / "out.txt")]
    assert (workdir / "out.txt").read_text() == "kept\n"
    assert (workdir / "out.txt").stat().st_uid == os.geteuid()  # the worker owns its copy
    empty = tmp_path / str(uuid.uuid4())
    assert asyncio.run(sandbox.run(SHELL, {"command": "true"}, empty)).status == "OK"
    assert not empty.exists()


def test_a_file_name_that_is_not_utf8_comes_back_valid(tmp_path):
    result = run("touch \"$(printf 'bad\\377name')\" good", tmp_path)
    assert result.status == "OK", result.error
    names = sorted(Path(p).name for p in result.artifacts)
    assert names == ["bad\ufffdname", "good"]
    assert all(name.encode("utf-8") for name in names)
    assert any("not valid UTF-8" in note for note in result.notes)


@pytest.mark.parametrize("run_id", ["../../victim", "/etc", "..", "a/b", "",
                                    "6F9619FF-8B86-D011-B42D-00C04FC964FF", "x" * 5000])
def test_a_run_directory_stays_under_the_runs_root(tmp_path, run_id):
    with pytest.raises(ValueError):
        sandbox.run_dir(tmp_path, run_id)
    fine = str(uuid.uuid4())
    assert sandbox.run_dir(tmp_path, fine) == tmp_path / fine


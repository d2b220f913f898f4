"""Processes the local stack owns: each server in its own process group, known by id.

A server is recorded as (pid, pgid, start time). The start time (from /proc) tells a
live server from an unrelated process that reused its pid, so a stale state file
never makes us signal someone else's process. Nothing here kills by name.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ops.core.config import Settings


@dataclass(frozen=True)
class Proc:
    pid: int
    pgid: int
    start_time: int  # clock ticks since boot, field 22 of /proc/PID/stat

    def to_json(self) -> dict:
        return asdict(self)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it are fixed.
    return raw[raw.rfind(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def as_user(user: str | None) -> dict:
    """subprocess arguments that drop to ``user`` entirely (uid, gid, no root groups)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def spawn(argv: list[str], *, log: Path, env: dict[str, str] | None = None,
          user: str | None = None) -> Proc:
    """Start a server detached in a new session (its own process group)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, start_new_session=True, **as_user(user),
        )
    return Proc(pid=child.pid, pgid=child.pid, start_time=start_time(child.pid) or 0)


def launch(argv: list[str], *, log: Path, ready, what: str, timeout_s: float,
           env: dict[str, str] | None = None, user: str | None = None) -> Proc:
    """Spawn a server and wait for ``ready()``; on failure leave nothing running."""
    proc = spawn(argv, log=log, env=env, user=user)
    try:
        wait_until(ready, timeout_s=timeout_s, what=what, proc=proc, log=log,
                   interval_s=0.25 if timeout_s > 60 else 0.1)
    except BaseException:
        stop(proc, grace_s=2)
        raise
    return proc


def alive(pid: int, started: int) -> bool:
    fields = _stat(pid)
    # A zombie has exited; a different start time means the pid was reused.
    return bool(fields) and fields[0] != "Z" and int(fields[19]) == started


def survivors(tracked: dict[int, int]) -> list[int]:
    """The pids of ``tracked`` (pid -> start time) that still run."""
    return [pid for pid, started in tracked.items() if alive(pid, started)]


def leader_alive(proc: Proc) -> bool:
    return alive(proc.pid, proc.start_time)


def _processes() -> dict[int, list[str]]:
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and fields[0] != "Z":
            table[int(entry.name)] = fields
    return table


def members(proc: Proc) -> dict[int, int]:
    """Live processes that belong to ``proc``: its group and its descendants.

    Descendants count too because some servers (PostgreSQL) move their children
    into sessions of their own. Maps pid to start time.
    """
    table = _processes()
    mine = {pid for pid, f in table.items() if int(f[2]) == proc.pgid}
    if leader_alive(proc):
        mine.add(proc.pid)
        grew = True
        while grew:
            kids = {pid for pid, f in table.items() if int(f[1]) in mine} - mine
            mine |= kids
            grew = bool(kids)
    return {pid: int(table[pid][19]) for pid in mine if pid in table}


def owns_group(proc: Proc) -> bool:
    """Whether the group ``proc.pgid`` is still ours to signal.

    While any member lives, Linux does not hand the group's id out again, so the
    group is ours if its leader is our process or the leader is gone.
    """
    current = start_time(proc.pid)  # a zombie leader still has its start time
    return current is None or current == proc.start_time


def stop(proc: Proc, *, sig: int = signal.SIGTERM, grace_s: float = 10.0) -> None:
    """Ask the leader to stop, then kill whatever is left of its group and children."""
    if not owns_group(proc):
        return
    tracked = members(proc)
    if leader_alive(proc):
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
    if not _wait_gone(proc, tracked, grace_s):
        for pid in survivors(tracked):
            _kill(pid)
        try:
            os.killpg(proc.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait_gone(proc, tracked, 5)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_gone(proc: Proc, tracked: dict[int, int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        _reap(proc.pid)
        if not survivors(tracked) and not any(int(f[2]) == proc.pgid for f in _processes().values()):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _reap(pid: int) -> None:
    # When this process spawned the server, collect its exit status so it does
    # not linger as a zombie; otherwise the server's parent (init) does it.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_until(check, *, timeout_s: float, what: str, proc: Proc | None = None,
               log: Path | None = None, interval_s: float = 0.1) -> None:
    """Poll ``check()`` until true; fail early with the log tail if ``proc`` died."""
    deadline = time.monotonic() + timeout_s
    while True:
        # Looked at before the check: what a process wrote just before exiting counts.
        exited = proc is not None and not leader_alive(proc)
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - a server that is still starting refuses in many ways
            pass
        if exited:
            raise RuntimeError(f"{what}: the process exited during start-up{_tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout_s:.0f}s{_tail(log)}")
        time.sleep(interval_s)


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log}:\n" + "\n".join(text)


def agora_command(stack_dir: Path, args: list[str], **env: str) -> tuple[list[str], dict]:
    """(command line, environment) of ``agora ARGS`` against the stack in ``stack_dir``.
    The caller's AGORA_* variables are not inherited, only ``env``: the stack's state
    says the rest."""
    variables = {k: v for k, v in os.environ.items() if not k.startswith("AGORA_")}
    variables.update(AGORA_STACK_DIR=str(stack_dir), **env)
    return [str(Path(sys.executable).parent / "agora"), *args], variables


def start_agora(stack_dir: Path, args: list[str], name: str, ready, *, timeout_s: float = 90,
                **env: str) -> Proc:
    """``agora ARGS`` (``agora_command``) in its own process group, logging to
    ``logs/NAME.log``; returned once ``ready(log text)`` holds, stopped if it never does."""
    command, variables = agora_command(stack_dir, args, **env)
    log = stack_dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    proc = spawn(command, log=log, env=variables)
    try:
        wait_until(lambda: ready(log.read_text()), timeout_s=timeout_s, what=name, proc=proc,
                   log=log)
    except BaseException:
        stop(proc, grace_s=5)
        raise
    return proc


def start_worker(settings: Settings, name: str, timeout_s: float = 90, **env: str) -> Proc:
    """`agora worker` in its own process group, returned once its tables are loaded."""
    return start_agora(settings.stack_dir, ["worker"], f"worker-{name}",
                       lambda log: log.count("globaltable.ready") >= 3, timeout_s=timeout_s,
                       AGORA_WORKER_ID=name, **env)

"""Run a tool in a sandbox: its own process group and pid and network namespaces, a
private working directory, a scrubbed environment, resource limits, a wall-clock
timeout that kills the whole group, and bounded output.

The process tree is ``unshare`` (group leader) -> ``streams.tools.runner`` (pid 1 of
the new pid namespace) -> whatever the tool starts. Killing the group kills pid 1,
and the kernel then kills every process left in the namespace, including any that
left the group with ``setsid``. The runner locks itself down (``runner.lock_down``)
before it calls the tool.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from streams.tools.catalog import Tool

STDERR_KEPT = 4096


@dataclass(frozen=True)
class Run:
    status: str  # OK | FAILED | TIMEOUT, as in the ToolResult event
    output: str = ""
    error: str | None = None
    artifacts: list[str] = field(default_factory=list)
    duration_ms: int = 0


# A user namespace first, so that this works unprivileged too and no capability of
# the host's root reaches the tool.
NAMESPACES = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork",
              "--kill-child"]


PIDS_BASES = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))  # cgroup v1, then v2


@lru_cache(maxsize=1)
def pids_cgroups() -> Path | None:
    """A directory for per-run pids cgroups, or None. Needed when the worker runs as
    root: the kernel exempts uid 0 from RLIMIT_NPROC, even inside a user namespace
    mapped to it, so only a pids cgroup bounds a fork bomb then."""
    for base in PIDS_BASES:
        parent = base / "agora-sandbox"
        try:
            parent.mkdir(exist_ok=True)
            if (parent / "pids.max").exists():
                return parent
        except OSError:
            continue
    return None


@lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why this host cannot sandbox tools, or None. Checked once per process."""
    from streams.tools.runner import landlock_abi

    try:
        probe = subprocess.run([*NAMESPACES, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create namespaces: {exc}"
    if probe.returncode:
        return f"cannot create namespaces: {probe.stderr.decode(errors='replace').strip()}"
    if landlock_abi() < 1:
        return "Landlock is not available in this kernel, so writes cannot be confined"
    if os.geteuid() == 0 and pids_cgroups() is None:
        return ("running as root, which RLIMIT_NPROC does not bind, without a writable "
                "pids cgroup to bound the number of processes")
    return None


def _cgroup(run_id: str, processes: int) -> Path | None:
    """A pids cgroup of its own for one run (as root), allowing the runner and the
    unshare parent on top of the tool's processes."""
    parent = pids_cgroups() if os.geteuid() == 0 else None
    if parent is None:
        return None
    group = parent / run_id
    group.mkdir(exist_ok=True)
    (group / "pids.max").write_text(str(processes + 2))
    return group


async def _remove(group: Path) -> None:
    for _ in range(50):  # the killed processes leave the cgroup within moments
        try:
            group.rmdir()
            return
        except OSError:
            await asyncio.sleep(0.05)


async def _read(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, int]:
    """At most ``limit`` bytes of a stream, draining the rest so the child never blocks."""
    kept, total = bytearray(), 0
    while chunk := await stream.read(65536):
        total += len(chunk)
        if len(kept) < limit:
            kept += chunk[:limit - len(kept)]
    return bytes(kept), total


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _artifacts(workdir: Path, names: list[str]) -> list[str]:
    """Absolute paths of the files the tool reported, if they are regular files inside
    its directory (a symlink out of it is dropped)."""
    found = []
    for name in names:
        path = (workdir / name)
        if path.is_file() and not path.is_symlink() and \
                path.resolve().is_relative_to(workdir.resolve()):
            found.append(str(path.resolve()))
    return found


async def run(tool: Tool, arguments: dict, workdir: Path) -> Run:
    """Run ``tool`` on validated ``arguments`` in ``workdir`` (created, owned by the run)."""
    reason = unavailable()
    if reason:
        return Run("FAILED", error=f"sandbox unavailable: {reason}")
    if tool.network:
        return Run("FAILED", error=f"{tool.name} needs the network, which the sandbox never "
                                   "grants")
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o700)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
           "LANG": "C.UTF-8", "MPLCONFIGDIR": str(workdir), "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    limits = tool.limits
    started = time.monotonic()
    group = _cgroup(f"{workdir.name}-{uuid.uuid4().hex[:8]}", limits.processes)
    procs = str(group / "cgroup.procs") if group else None

    def enter_cgroup() -> None:  # in the child, before exec: os calls only
        fd = os.open(procs, os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)

    try:
        return await _run(tool, arguments, workdir, env, started,
                          enter_cgroup if procs else None)
    finally:
        if group:
            await _remove(group)


async def _run(tool: Tool, arguments: dict, workdir: Path, env: dict, started: float,
               preexec) -> Run:
    limits = tool.limits
    proc = await asyncio.create_subprocess_exec(
        *NAMESPACES, sys.executable, "-I", "-m", "streams.tools.runner",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=str(workdir), start_new_session=True,
        preexec_fn=preexec)
    spec = {"entrypoint": tool.entrypoint, "arguments": arguments, "workdir": str(workdir),
            "limits": vars(limits)}
    proc.stdin.write(json.dumps(spec).encode())
    proc.stdin.close()
    output_cap = limits.output_kb * 1024 * 4 + 65536  # JSON escaping, error text
    reading = asyncio.gather(_read(proc.stdout, output_cap), _read(proc.stderr, STDERR_KEPT))
    try:
        (out, out_total), (err, _) = await asyncio.wait_for(
            asyncio.shield(reading), timeout=limits.wall_s)
        await proc.wait()
    except asyncio.TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        await reading
        return Run("TIMEOUT", error=f"wall-clock limit of {limits.wall_s:g} s exceeded; "
                                    "the sandbox was killed",
                   duration_ms=int((time.monotonic() - started) * 1000))
    finally:
        _kill_group(proc.pid)  # nothing the tool started outlives the run
    duration_ms = int((time.monotonic() - started) * 1000)
    code = proc.returncode
    if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU) or (
            code in (-signal.SIGKILL, 128 + signal.SIGKILL) and
            duration_ms / 1000 >= limits.cpu_s):
        return Run("TIMEOUT", error=f"CPU limit of {limits.cpu_s} s exceeded",
                   duration_ms=duration_ms)
    try:
        result = json.loads(out)
    except ValueError:
        detail = err.decode(errors="replace").strip().splitlines()[-3:]
        why = (f"{out_total} bytes of output, over the limit" if out_total > output_cap
               else f"exit status {code}")
        return Run("FAILED", error=f"the sandbox ended without a result ({why}): "
                                   f"{' | '.join(detail) or 'no message'}",
                   duration_ms=duration_ms)
    return Run(result["status"], output=result.get("output", ""), error=result.get("error"),
               artifacts=_artifacts(workdir, result.get("artifacts", [])),
               duration_ms=duration_ms)

"""Run a tool in a sandbox: a minimal read-only root of its own, an unprivileged uid,
a seccomp filter and Landlock, no network, a scrubbed environment, resource limits, a
disk quota, a wall-clock timeout that kills the whole group, and bounded output.

The process tree is ``unshare`` (group leader) -> ``streams.tools.runner`` (pid 1 of
new mount, pid, network, IPC and UTS namespaces; it builds the root and collects the
result) -> the tool process (locked down, see ``runner``) -> whatever the tool starts.
Killing the group kills pid 1, and the kernel then kills every process left in the
namespace, including any that left the group with ``setsid``. The tool writes into a
tmpfs of its disk quota; the files it reports are copied into its run directory on
the host, the rest vanishes with the namespace.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from schemas.events import ToolStatus
from streams.domain.tools.catalog import Limits, Tool
from streams.tools.runner import landlock_abi, seccomp_unsupported

STDERR_KEPT = 4096
PROBE = Limits(cpu_s=5, memory_mb=64, wall_s=20, output_kb=4, processes=4, file_mb=1,
               disk_mb=1)


@dataclass(frozen=True)
class Run:
    status: ToolStatus  # OK, FAILED or TIMEOUT
    output: str = ""
    error: str | None = None
    artifacts: list[str] = field(default_factory=list)
    duration_ms: int = 0
    notes: list[str] = field(default_factory=list)


# As the host's root the namespaces are made directly and the tool process becomes a
# real unprivileged uid; otherwise a user namespace maps the worker's uid to root of
# the namespaces, and the tool process maps itself to 65534 in a nested one.
NAMESPACES = ["unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork",
              "--kill-child"]
RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _identity() -> str:
    return "setuid" if os.geteuid() == 0 else "userns"


def _command() -> list[str]:
    user = [] if _identity() == "setuid" else ["--user", "--map-root-user"]
    return [*NAMESPACES, *user, sys.executable, "-I", "-m", "streams.tools.runner"]


def run_dir(runs: Path, run_id: str) -> Path:
    """The directory of one run under ``runs``; ``run_id`` (from a record, so hostile)
    must be a lowercase UUID, and the path must stay under ``runs``."""
    if not RUN_ID.match(run_id):
        raise ValueError(f"run id {run_id[:80]!r} is not a UUID")
    path = runs / run_id
    if not path.resolve().is_relative_to(runs.resolve()) or path.is_symlink():
        raise ValueError(f"run directory {path} leaves {runs}")
    return path


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
    """Why this host cannot sandbox tools, or None. Checked once per process, by
    running a probe in a real sandbox: it must come back as uid 65534 with no socket."""
    if landlock_abi() < 1:
        return "Landlock is not available in this kernel, so writes cannot be confined"
    if reason := seccomp_unsupported():
        return reason
    if os.geteuid() == 0 and pids_cgroups() is None:
        return ("running as root, which RLIMIT_NPROC does not bind, without a writable "
                "pids cgroup to bound the number of processes")
    workdir = Path(f"/tmp/agora-sandbox-probe-{uuid.uuid4()}")  # noqa: S108 (own name)
    workdir.mkdir(mode=0o700)
    try:
        probe = subprocess.run(_command(), input=json.dumps(_spec(
            "streams.tools.runner:probe", {}, workdir, PROBE)).encode(),
            capture_output=True, timeout=60, cwd=workdir, env=_environment(workdir))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create the sandbox's namespaces: {exc}"
    finally:
        workdir.rmdir()
    try:
        result = json.loads(probe.stdout)
    except ValueError:
        detail = probe.stderr.decode(errors="replace").strip().splitlines()[-2:]
        return f"cannot create the sandbox's namespaces: {' | '.join(detail) or 'no message'}"
    if result.get("status") != "OK":
        return result.get("error") or "the sandbox probe failed"
    if result.get("output") != "uid 65534 gid 65534, sockets refused":
        return f"the sandbox probe ran unconfined: {result.get('output')}"
    return None


def _cgroup(run_id: str, processes: int) -> Path | None:
    """A pids cgroup of its own for one run (as root), allowing unshare, the runner and
    the tool process on top of the tool's own processes."""
    parent = pids_cgroups() if os.geteuid() == 0 else None
    if parent is None:
        return None
    group = parent / run_id
    group.mkdir(exist_ok=True)
    (group / "pids.max").write_text(str(processes + 3))
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


def _environment(workdir: Path) -> dict:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir),
            "TMPDIR": str(workdir), "LANG": "C.UTF-8", "MPLCONFIGDIR": str(workdir),
            "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1"}


def _spec(entrypoint: str, arguments: dict, workdir: Path, limits: Limits) -> dict:
    return {"entrypoint": entrypoint, "arguments": arguments, "workdir": str(workdir),
            "limits": vars(limits), "identity": _identity()}


def _artifacts(workdir: Path, names: list[str]) -> list[str]:
    """Host paths of the files the runner copied out (plain names it checked)."""
    return [str(workdir / name) for name in names
            if "/" not in name and (workdir / name).is_file()
            and not (workdir / name).is_symlink()]


def _remove_if_empty(workdir: Path) -> None:
    """A run that left no artifacts leaves no directory either."""
    try:
        workdir.rmdir()
    except OSError:
        pass


async def run(tool: Tool, arguments: dict, workdir: Path) -> Run:
    """Run ``tool`` on validated ``arguments``; its reported files land in ``workdir``."""
    reason = unavailable()
    if reason:
        return Run("FAILED", error=f"sandbox unavailable: {reason}")
    if tool.network:
        return Run("FAILED", error=f"{tool.name} needs the network, which the sandbox never "
                                   "grants")
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if workdir.is_symlink() or not workdir.is_dir():
        return Run("FAILED", error=f"the run directory {workdir} is not a plain directory")
    workdir.chmod(0o700)
    started = time.monotonic()
    group = _cgroup(f"{workdir.name}-{uuid.uuid4().hex[:8]}", tool.limits.processes)
    procs = str(group / "cgroup.procs") if group else None

    def enter_cgroup() -> None:  # in the child, before exec: os calls only
        fd = os.open(procs, os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)

    try:
        return await _run(tool, _spec(tool.entrypoint, arguments, workdir, tool.limits),
                          started, enter_cgroup if procs else None)
    finally:
        _remove_if_empty(workdir)
        if group:
            await _remove(group)


async def _run(tool: Tool, spec: dict, started: float, preexec) -> Run:
    limits, workdir = tool.limits, Path(spec["workdir"])
    proc = await asyncio.create_subprocess_exec(
        *_command(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=_environment(workdir), cwd=str(workdir),
        start_new_session=True, preexec_fn=preexec)
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
    try:
        result = json.loads(out)
    except ValueError:
        detail = err.decode(errors="replace").strip().splitlines()[-3:]
        why = (f"{out_total} bytes of output, over the limit" if out_total > output_cap
               else f"exit status {proc.returncode}")
        return Run("FAILED", error=f"the sandbox ended without a result ({why}): "
                                   f"{' | '.join(detail) or 'no message'}",
                   duration_ms=duration_ms)
    return Run(result["status"], output=result.get("output", ""), error=result.get("error"),
               artifacts=_artifacts(workdir, result.get("artifacts", [])),
               duration_ms=duration_ms, notes=result.get("notes", []))

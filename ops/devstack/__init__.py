"""The embedded local stack: ``up``, ``status``, ``env`` and ``down``.

State lives in ``$AGORA_STACK_DIR/stack.json``: one record per service (its process
ids and start time, its address and the ``AGORA_*`` values that reach it). ``up`` is
idempotent: a healthy service is left alone, a service whose process died (a crashed
run, a reboot, a kill) is cleaned up and started again. A lock file serialises
concurrent ``up``/``down`` calls on the same directory.
"""

from __future__ import annotations

import fcntl
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from ops.core.config import STATE_FILE
from ops.core.files import write_atomic
from ops.devstack.process import members
from ops.devstack.services import SERVICES, Record, Service

log = structlog.get_logger("agora.stack")
Progress = Callable[[str], None]


@dataclass
class ServiceStatus:
    name: str
    describe: str
    state: str  # up | down | stale
    address: str
    pid: int | None


def _state_path(stack_dir: Path) -> Path:
    return stack_dir / STATE_FILE


def read_state(stack_dir: Path) -> dict:
    try:
        return json.loads(_state_path(stack_dir).read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        # A half-written file from a crash: its processes are found via nothing
        # else, so treat it as empty (and report it).
        log.warning("stack.state_unreadable", path=str(_state_path(stack_dir)))
        return {}


def _write_state(stack_dir: Path, state: dict) -> None:
    write_atomic(_state_path(stack_dir), json.dumps(state, indent=2))


@contextmanager
def _locked(stack_dir: Path) -> Iterator[None]:
    stack_dir.mkdir(parents=True, exist_ok=True)
    with open(stack_dir / "stack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _records(state: dict) -> dict[str, Record]:
    return {name: Record.from_json(r) for name, r in state.get("services", {}).items()}


def _save(stack_dir: Path, stack_id: str, records: dict[str, Record]) -> None:
    env: dict[str, str] = {"AGORA_STACK_DIR": str(stack_dir)}
    for rec in records.values():
        env.update(rec.env)
    _write_state(stack_dir, {"stack_id": stack_id, "services": {
        n: r.to_json() for n, r in records.items()}, "env": env})


def up(stack_dir: Path, progress: Progress = print) -> dict[str, str]:
    """Start every service that is not running; returns the ``AGORA_*`` environment."""
    stack_dir = stack_dir.resolve()
    for service in SERVICES:
        service.preflight()
    with _locked(stack_dir):
        state = read_state(stack_dir)
        stack_id = state.get("stack_id") or uuid.uuid4().hex[:12]
        records = _records(state)
        for i, service in enumerate(SERVICES, 1):
            step = f"[{i}/{len(SERVICES)}] {service.name:<10}"
            rec = records.get(service.name)
            if rec and service.healthy(rec):
                progress(f"{step} already up at {rec.address}")
                continue
            if rec:
                progress(f"{step} stale record (process gone): cleaning up")
                service.stop(rec)
                del records[service.name]
                _save(stack_dir, stack_id, records)
            progress(f"{step} starting: {service.describe} ...")
            started = time.monotonic()
            records[service.name] = _start(service, stack_dir, stack_id, rec)
            _save(stack_dir, stack_id, records)  # after each start: a crash loses no pid
            progress(f"{step} ready at {records[service.name].address} "
                     f"({time.monotonic() - started:.1f}s)")
        _save(stack_dir, stack_id, records)
        return read_state(stack_dir)["env"]


def _start(service: Service, stack_dir: Path, stack_id: str, previous: Record | None) -> Record:
    # A free port can be taken between probing and binding: one retry covers it.
    for attempt in (1, 2):
        try:
            rec = service.start(stack_dir, stack_id, previous if attempt == 1 else None)
            log.debug("stack.service_started", service=service.name, address=rec.address,
                     pid=rec.proc.pid if rec.proc else None)
            return rec
        except RuntimeError:
            if attempt == 2:
                raise
            log.warning("stack.service_retry", service=service.name)
    raise AssertionError("unreachable")


def status(stack_dir: Path) -> list[ServiceStatus]:
    records = _records(read_state(stack_dir.resolve()))
    rows = []
    for service in SERVICES:
        rec = records.get(service.name)
        if rec is None:
            rows.append(ServiceStatus(service.name, service.describe, "down", "-", None))
        else:
            state = "up" if service.healthy(rec) else "stale"
            rows.append(ServiceStatus(service.name, service.describe, state, rec.address,
                                      rec.proc.pid if rec.proc else None))
    return rows


def env(stack_dir: Path) -> dict[str, str]:
    return read_state(stack_dir.resolve()).get("env", {})


def down(stack_dir: Path, progress: Progress = print) -> None:
    """Stop every process the stack started (by process group id) and clean up."""
    stack_dir = stack_dir.resolve()
    with _locked(stack_dir):
        state = read_state(stack_dir)
        records = _records(state)
        by_name = {s.name: s for s in SERVICES}
        for name in reversed([s.name for s in SERVICES]):  # dependants first
            rec = records.get(name)
            if rec is None:
                continue
            progress(f"stopping {name}" + (f" (pgid {rec.proc.pgid})" if rec.proc else ""))
            by_name[name].stop(rec)
            log.debug("stack.service_stopped", service=name)
        _state_path(stack_dir).unlink(missing_ok=True)


def processes(stack_dir: Path) -> dict[int, int]:
    """Every live process the stack started, children included (pid -> start time)."""
    found: dict[int, int] = {}
    for rec in _records(read_state(stack_dir.resolve())).values():
        if rec.proc:
            found.update(members(rec.proc))
    return found

"""Runs a shell command in the work directory (vote-gated; the sandbox enforces limits)."""

from __future__ import annotations

import pathlib
import signal
import stat
import subprocess

from streams.tools.builtin import LimitExceeded, ToolError

MAX_OUTPUT = 12_000   # characters of output returned on success
MAX_ARTIFACTS = 20    # new or changed files reported
ERROR_TAIL = 2_000    # characters of output quoted in a failure


def _snapshot(workdir: pathlib.Path) -> dict[str, int]:
    """Modification times of the regular files at the top of workdir."""
    seen = {}
    for path in workdir.iterdir():
        try:
            st = path.lstat()
        except FileNotFoundError:  # removed meanwhile by a background process
            continue
        if stat.S_ISREG(st.st_mode):
            seen[path.name] = st.st_mtime_ns
    return seen


def run(arguments: dict, workdir: pathlib.Path) -> dict:
    before = _snapshot(workdir)
    # no timeout here: the sandbox kills the whole process group at its wall limit;
    # stderr merged into stdout keeps the two in the order they were written
    proc = subprocess.run(["/bin/sh", "-c", arguments["command"]], cwd=workdir,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = proc.stdout.decode("utf-8", errors="replace")
    code = proc.returncode
    if code != 0:
        status = f"exit status {code}"
        if code < 0:  # killed by a signal, e.g. the sandbox's CPU or memory limit
            try:
                status += f" (killed by {signal.Signals(-code).name})"
            except ValueError:
                status += f" (killed by signal {-code})"
        tail = text[-ERROR_TAIL:]
        if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            raise LimitExceeded(f"CPU limit exceeded: {status}\n{tail}".rstrip())
        raise ToolError(f"{status}\n{tail}".rstrip())
    if len(text) > MAX_OUTPUT:
        text = f"[... {len(text) - MAX_OUTPUT} earlier characters cut]\n" + text[-MAX_OUTPUT:]
    after = _snapshot(workdir)
    changed = sorted(name for name, mtime in after.items() if before.get(name) != mtime)[:MAX_ARTIFACTS]
    body = text if text.endswith("\n") or not text else text + "\n"
    return {"output": f"{body}exit status 0", "artifacts": changed}

"""Inside the sandbox: lock this process down, then run one tool.

Started by ``streams.tools.sandbox`` as pid 1 of fresh network and pid namespaces,
with a scrubbed environment. It reads the run's spec (JSON) from stdin, imports the
tool, then before calling it: resource limits, an unprivileged uid of its own (when
started as real root), no new privileges, and a Landlock domain that lets it read
the system and Python files, write only its working directory, make no TCP
connection and signal nothing outside the sandbox. The result is one JSON object on
the original stdout; anything the tool prints goes to stderr.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import resource
import sys
import sysconfig
import traceback
from pathlib import Path

# Landlock ABI (include/uapi/linux/landlock.h); the syscall numbers are the same on
# every architecture.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_RULESET_VERSION, _RULE_PATH_BENEATH, _PR_SET_NO_NEW_PRIVS = 1, 1, 38
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_BITS_BY_ABI = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}  # handled fs rights per ABI version
_FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | (1 << 14) | (1 << 15)
_NET_TCP = (1 << 0) | (1 << 1)  # bind and connect (ABI 4)
_SCOPE = (1 << 0) | (1 << 1)  # abstract unix sockets and signals (ABI 6)
# Only what the loader, Python and the shell read in /etc: never the whole directory.
ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/passwd", "/etc/group",
             "/etc/nsswitch.conf", "/etc/alternatives")
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)


def _syscall(number: int, *args) -> int:
    result = _libc.syscall(number, *args)
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"syscall {number}: {os.strerror(errno)}")
    return result


def landlock_abi() -> int:
    try:
        return _syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), _RULESET_VERSION)
    except OSError:
        return 0


def _readable_roots() -> list[str]:
    paths = {"/usr", "/bin", "/sbin", "/lib", "/lib64", *ETC_FILES, sys.prefix, sys.base_prefix,
             sys.exec_prefix, str(Path(sys.executable).resolve().parent)}
    paths |= {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.add(str(Path(__file__).resolve().parent))  # the tools package (editable installs)
    return sorted(p for p in paths if os.path.exists(p))


def restrict(workdir: Path) -> None:
    """Landlock: read and execute system and Python files, write only ``workdir``."""
    abi = landlock_abi()
    if abi < 1:
        raise RuntimeError("Landlock is not available in this kernel")
    fs_all = (1 << _FS_BITS_BY_ABI.get(abi, 16)) - 1
    attr = _RulesetAttr(handled_access_fs=fs_all, handled_access_net=_NET_TCP if abi >= 4 else 0,
                        scoped=_SCOPE if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = _syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)

    def allow(path: str, access: int) -> None:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            if not os.path.isdir(path):
                access &= _FILE_ONLY
            rule = _PathBeneath(allowed_access=access & fs_all, parent_fd=fd)
            _syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0)
        finally:
            os.close(fd)

    for root in _readable_roots():
        allow(root, EXECUTE | READ_FILE | READ_DIR)
    for device in DEVICES:
        if os.path.exists(device):
            allow(device, READ_FILE | WRITE_FILE)
    allow(str(workdir), fs_all)
    _syscall(_RESTRICT_SELF, ruleset, 0)
    os.close(ruleset)


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def lock_down(limits: dict, workdir: Path) -> None:
    def cap(which: int, value: int) -> None:
        resource.setrlimit(which, (value, value))

    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 1))
    # The interpreter and the tool's imports are already mapped: the budget is on top.
    cap(resource.RLIMIT_AS, _vm_size() + limits["memory_mb"] * 2**20)
    cap(resource.RLIMIT_FSIZE, limits["file_mb"] * 2**20)
    cap(resource.RLIMIT_NOFILE, 128)
    cap(resource.RLIMIT_CORE, 0)
    # Counted per user namespace, so this bounds the sandbox's own processes only.
    cap(resource.RLIMIT_NPROC, limits["processes"])
    _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    restrict(workdir)


def truncate(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    kept = data[:limit].decode(errors="ignore")
    return f"{kept}\n[output truncated: {len(data)} bytes, {limit} shown]"


def main() -> int:
    spec = json.loads(sys.stdin.read())
    result_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints go to stderr, never into the result
    workdir = Path(spec["workdir"])
    try:
        module, _, function = spec["entrypoint"].partition(":")
        tool = getattr(importlib.import_module(module), function)
        from streams.tools.builtin import LimitExceeded, ToolError

        lock_down(spec["limits"], workdir)
        os.chdir(workdir)
        value = tool(spec["arguments"], workdir)
        result = {"status": "OK", "output": str(value.get("output", "")),
                  "artifacts": list(value.get("artifacts", []))}
    except LimitExceeded as exc:
        result = {"status": "TIMEOUT", "error": str(exc)}
    except ToolError as exc:
        result = {"status": "FAILED", "error": str(exc)}
    except MemoryError:
        result = {"status": "FAILED",
                  "error": f"memory limit of {spec['limits']['memory_mb']} MB exceeded"}
    except Exception as exc:  # a crashing tool is a failed run, reported in full
        traceback.print_exc()
        result = {"status": "FAILED", "error": f"tool crashed: {type(exc).__name__}: {exc}"}
    limit = spec["limits"]["output_kb"] * 1024
    for key in ("output", "error"):
        if key in result:
            result[key] = truncate(result[key], limit)
    result_out.write(json.dumps(result))
    result_out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

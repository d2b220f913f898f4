"""Inside the sandbox: build a minimal root, then run one tool as an unprivileged user.

Started by ``streams.tools.sandbox`` as pid 1 of fresh mount, network, pid, IPC and
UTS namespaces, with a scrubbed environment, as root of those namespaces (the host's
root, or the worker's own uid mapped to root of a user namespace). It reads the run's
spec (JSON) from stdin and:

1. builds the tool's root: a read-only tmpfs holding read-only binds of the system
   and Python files only, four devices, a fresh ``/proc``, and the run directory as a
   tmpfs of the tool's disk quota, the one writable place;
2. forks the tool process, which enters that root, becomes uid/gid 65534 (a real
   uid when the worker is root; a nested user namespace otherwise), drops every
   capability, sets resource limits and no-new-privileges, applies Landlock (writes
   only in its directory, no TCP, no signals or abstract sockets outside) and a
   seccomp filter (no sockets, ptrace, mounts, namespaces, keyrings, BPF, io_uring),
   then calls the tool;
3. waits for it, copies the files it reported (regular files at the top of its
   directory, with names made valid UTF-8) into the host's run directory, and
   writes one JSON result on the original stdout.

Anything the tool prints goes to stderr. When pid 1 exits, the kernel kills whatever
is left in the namespace.
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import json
import os
import platform
import resource
import signal
import socket
import stat
import struct
import sys
import sysconfig
import traceback
from pathlib import Path

from streams.tools.builtin import LimitExceeded, ToolError

TOOL_UID = TOOL_GID = 65534  # nobody / nogroup
MAX_ARTIFACTS = 20
RESULT_FD = [-1]  # pid 1's copy of the original stdout, closed in the tool process
ROOT_SIZE = "4m"  # the tmpfs that only holds mount points and symlinks

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
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")

# mount(2) flags
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC = 32, 4096, 16384
_CLONE_NEWUSER = 0x10000000
_CLONE_NEW_ANY = 0x7E020080  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME

# seccomp: the calls tool code never needs and an escape would, per architecture
# (audit arch, x32 bit or 0, clone, clone3, refused calls).
_REFUSED = ("socket connect bind ptrace mount umount2 pivot_root chroot unshare setns "
            "keyctl add_key request_key bpf perf_event_open userfaultfd io_uring_setup "
            "io_uring_enter io_uring_register open_by_handle_at name_to_handle_at "
            "process_vm_readv process_vm_writev kexec_load kexec_file_load init_module "
            "finit_module delete_module fsopen fsconfig fsmount move_mount open_tree fspick "
            "mount_setattr pidfd_getfd syslog quotactl swapon swapoff reboot").split()
_SYSCALLS = {
    "x86_64": (0xC000003E, 0x40000000, 56, 435, dict(
        socket=41, connect=42, bind=49, ptrace=101, mount=165, umount2=166, pivot_root=155,
        chroot=161, unshare=272, setns=308, keyctl=250, add_key=248, request_key=249,
        bpf=321, perf_event_open=298, userfaultfd=323, io_uring_setup=425, io_uring_enter=426,
        io_uring_register=427, open_by_handle_at=304, name_to_handle_at=303,
        process_vm_readv=310, process_vm_writev=311, kexec_load=246, kexec_file_load=320,
        init_module=175, finit_module=313, delete_module=176, fsopen=430, fsconfig=431,
        fsmount=432, move_mount=429, open_tree=428, fspick=433, mount_setattr=442,
        pidfd_getfd=438, syslog=103, quotactl=179, swapon=167, swapoff=168, reboot=169)),
    "aarch64": (0xC00000B7, 0, 220, 435, dict(
        socket=198, connect=203, bind=200, ptrace=117, mount=40, umount2=39, pivot_root=41,
        chroot=51, unshare=97, setns=268, keyctl=219, add_key=217, request_key=218, bpf=280,
        perf_event_open=241, userfaultfd=282, io_uring_setup=425, io_uring_enter=426,
        io_uring_register=427, open_by_handle_at=265, name_to_handle_at=264,
        process_vm_readv=270, process_vm_writev=271, kexec_load=104, kexec_file_load=294,
        init_module=105, finit_module=273, delete_module=106, fsopen=430, fsconfig=431,
        fsmount=432, move_mount=429, open_tree=428, fspick=433, mount_setattr=442,
        pidfd_getfd=438, syslog=116, quotactl=60, swapon=224, swapoff=225, reboot=142)),
}
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, _PR_CAPBSET_DROP, _PR_SET_DUMPABLE = 22, 2, 24, 4
_RET_ALLOW, _RET_KILL, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def _syscall(number: int, *args) -> int:
    return _check(_libc.syscall(number, *args), f"syscall {number}")


def landlock_abi() -> int:
    try:
        return _syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), _RULESET_VERSION)
    except OSError:
        return 0


def seccomp_unsupported() -> str | None:
    """Why this machine's architecture has no seccomp filter here, or None."""
    machine = platform.machine()
    return None if machine in _SYSCALLS else f"no seccomp filter for the {machine} architecture"


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                       ctypes.c_ulong(flags), data and data.encode()), f"mount {target}")


def readable_paths() -> list[str]:
    """The host paths the tool may read: system and Python files, the tools package."""
    paths = {*SYSTEM_DIRS, *ETC_FILES, sys.prefix, sys.base_prefix, sys.exec_prefix,
             str(Path(sys.executable).resolve().parent)}
    paths |= {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.add(str(Path(__file__).resolve().parent))  # the tools package (editable installs)
    return sorted(p for p in paths if os.path.lexists(p))


def _outermost(paths: list[str]) -> list[str]:
    """Drop paths that lie inside another one of the list (a recursive bind has them)."""
    kept: list[str] = []
    for path in sorted(paths, key=len):
        if not any(Path(path).is_relative_to(k) for k in kept if not os.path.islink(k)):
            kept.append(path)
    return kept


def build_root(root: Path, workdir: Path, disk_mb: int, owner: int) -> None:
    """Mount the tool's root on ``root``: read-only binds of ``readable_paths``, the
    devices, /proc, and ``workdir`` as a tmpfs of ``disk_mb`` owned by ``owner``."""
    _mount("tmpfs", str(root), "tmpfs", MS_NOSUID | MS_NODEV, f"size={ROOT_SIZE},mode=0755")
    for path in _outermost(readable_paths()):
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.islink(path) and path in SYSTEM_DIRS:  # /bin -> usr/bin (merged /usr)
            target.symlink_to(os.readlink(path))
            continue
        real = os.path.realpath(path)
        if os.path.isdir(real):
            target.mkdir(exist_ok=True)
        else:
            target.touch()
        _mount(real, str(target), None, MS_BIND | MS_REC)
        _mount(None, str(target), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    (root / "dev").mkdir()
    for device in DEVICES:
        if os.path.exists(device):
            (root / device.lstrip("/")).touch()
            _mount(device, str(root / device.lstrip("/")), None, MS_BIND)
            _mount(None, str(root / device.lstrip("/")), None,
                   MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC)
    (root / "proc").mkdir()
    _mount("proc", str(root / "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    scratch = root / str(workdir).lstrip("/")
    scratch.mkdir(parents=True, exist_ok=True)
    _mount("tmpfs", str(scratch), "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={disk_mb}m,nr_inodes=4096,mode=0700,uid={owner},gid={owner}")
    _mount(None, str(root), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
           f"size={ROOT_SIZE}")


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

    for root in readable_paths():
        if os.path.exists(root):
            allow(root, EXECUTE | READ_FILE | READ_DIR)
    for device in DEVICES:
        if os.path.exists(device):
            allow(device, READ_FILE | WRITE_FILE)
    allow(str(workdir), fs_all)
    _syscall(_RESTRICT_SELF, ruleset, 0)
    os.close(ruleset)


def seccomp_program() -> bytes:
    """A classic BPF program: the wrong architecture kills, the refused calls and
    namespace-creating clones fail with EPERM, clone3 with ENOSYS (libc then uses
    clone, whose flags a filter can see), everything else is allowed."""
    arch, x32, clone, clone3, numbers = _SYSCALLS[platform.machine()]
    eperm, enosys = _RET_ERRNO | errno.EPERM, _RET_ERRNO | errno.ENOSYS
    code = [(_LD_ABS, 0, 0, 4), (_JEQ, 1, 0, arch), (_RET, 0, 0, _RET_KILL), (_LD_ABS, 0, 0, 0)]
    if x32:
        code += [(_JGE, 0, 1, x32), (_RET, 0, 0, eperm)]
    for name in _REFUSED:
        code += [(_JEQ, 0, 1, numbers[name]), (_RET, 0, 0, eperm)]
    code += [(_JEQ, 0, 1, clone3), (_RET, 0, 0, enosys),
             (_JEQ, 0, 3, clone), (_LD_ABS, 0, 0, 16),  # clone's flags, the low word
             (_JSET, 0, 1, _CLONE_NEW_ANY), (_RET, 0, 0, eperm), (_RET, 0, 0, _RET_ALLOW)]
    return b"".join(struct.pack("=HBBI", *op) for op in code)


def _seccomp() -> None:
    program = seccomp_program()
    fprog = _SockFprog(len(program) // 8, program)
    _check(_libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
           "seccomp")


def _drop_capabilities() -> None:
    header = struct.pack("=Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    _check(_libc.capset(header, bytes(24)), "capset")


def _become_tool_user(nested_userns: bool) -> None:
    """uid/gid 65534 with no capability: a real setuid as the host's root, or a user
    namespace of its own mapping 65534 to the worker's uid otherwise."""
    for cap in range(64):  # nothing can be regained through file capabilities
        _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    if nested_userns:
        _check(_libc.unshare(_CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{TOOL_UID} 0 1")
        Path("/proc/self/gid_map").write_text(f"{TOOL_GID} 0 1")
    else:
        os.setgroups([])
        os.setresgid(TOOL_GID, TOOL_GID, TOOL_GID)
        os.setresuid(TOOL_UID, TOOL_UID, TOOL_UID)


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
    # Counted per user (namespace); as the host's root a pids cgroup bounds the run too.
    cap(resource.RLIMIT_NPROC, limits["processes"])
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    restrict(workdir)
    _seccomp()


def truncate(text: str, limit: int) -> str:
    data = text.encode(errors="replace")
    if len(data) <= limit:
        return text
    kept = data[:limit].decode(errors="ignore")
    return f"{kept}\n[output truncated: {len(data)} bytes, {limit} shown]"


def _tool_process(spec: dict, tool, root: Path, result_fd: int) -> None:
    """In the forked child: enter the root, drop everything, run the tool and write
    its result (JSON) to ``result_fd``."""
    workdir, limits = Path(spec["workdir"]), spec["limits"]
    try:
        nested = spec["identity"] == "userns"
        if nested:  # a chrooted process may not create a user namespace: first this
            _become_tool_user(nested_userns=True)
        os.chroot(root)
        os.chdir(workdir)
        if not nested:
            _become_tool_user(nested_userns=False)
        _drop_capabilities()
        lock_down(limits, workdir)
        value = tool(spec["arguments"], workdir)
        result = {"status": "OK", "output": str(value.get("output", "")),
                  "artifacts": [str(a) for a in value.get("artifacts", [])]}
    except LimitExceeded as exc:
        result = {"status": "TIMEOUT", "error": str(exc)}
    except ToolError as exc:
        result = {"status": "FAILED", "error": str(exc)}
    except MemoryError:
        result = {"status": "FAILED", "error": f"memory limit of {limits['memory_mb']} MB exceeded"}
    except Exception as exc:  # a crashing tool is a failed run, reported in full
        traceback.print_exc()
        result = {"status": "FAILED", "error": f"tool crashed: {type(exc).__name__}: {exc}"}
    with os.fdopen(result_fd, "wb") as out:
        out.write(json.dumps(result).encode("utf-8", "surrogateescape"))


def _read_bounded(fd: int, limit: int) -> tuple[bytes, int]:
    kept, total = bytearray(), 0
    while chunk := os.read(fd, 65536):
        total += len(chunk)
        if len(kept) < limit:
            kept += chunk[:limit - len(kept)]
    os.close(fd)
    return bytes(kept), total


def safe_name(name: str) -> str:
    """A file name made valid UTF-8 (undecodable bytes become U+FFFD)."""
    return os.fsencode(name).decode("utf-8", "replace")


def collect(scratch: Path, out_fd: int, names: list) -> tuple[list[str], list[str]]:
    """Copy the reported files from the tool's directory to the host's run directory:
    plain names of regular files only, never through a link. Returns the names kept
    and notes on the ones changed or dropped."""
    kept, notes = [], []
    for name in names[:MAX_ARTIFACTS]:
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            notes.append(f"artifact {safe_name(str(name))!r} dropped: not a plain file name")
            continue
        try:
            src = os.open(scratch / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            notes.append(f"artifact {safe_name(name)!r} dropped: {exc.strerror}")
            continue
        with os.fdopen(src, "rb") as source:
            if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
                notes.append(f"artifact {safe_name(name)!r} dropped: not a regular file")
                continue
            host_name = safe_name(name)
            if host_name != name:
                notes.append(f"artifact name {host_name!r} was not valid UTF-8; "
                             "its undecodable bytes were replaced")
            dst = os.open(host_name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                          0o600, dir_fd=out_fd)
            with os.fdopen(dst, "wb") as target:
                while chunk := source.read(1 << 20):
                    target.write(chunk)
        kept.append(host_name)
    return kept, notes


def supervise(spec: dict, tool) -> dict:
    """Build the root, run the tool process, gather its result and files."""
    workdir, limits = Path(spec["workdir"]), spec["limits"]
    out_fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    root = workdir  # mounted over: the host directory stays reachable through out_fd
    owner = TOOL_UID if spec["identity"] == "setuid" else 0
    build_root(root, workdir, limits["disk_mb"], owner)
    _libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # nobody reads this process's memory
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        # The host's run directory and the result stream stay with pid 1: tool code
        # could otherwise reach outside its root through them.
        os.close(read_end)
        os.close(out_fd)
        os.close(RESULT_FD[0])
        try:
            _tool_process(spec, tool, root, write_end)
        finally:
            os._exit(0)
    os.close(write_end)
    cap = limits["output_kb"] * 1024 * 4 + 65536  # JSON escaping, error text
    data, total = _read_bounded(read_end, cap)
    _, status, usage = os.wait4(pid, 0)
    cpu_s = usage.ru_utime + usage.ru_stime
    if not data:
        if os.WIFSIGNALED(status) and (os.WTERMSIG(status) == signal.SIGXCPU or
                                       cpu_s >= limits["cpu_s"]):
            return {"status": "TIMEOUT", "error": f"CPU limit of {limits['cpu_s']} s exceeded"}
        how = (f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
               if os.WIFSIGNALED(status) else f"exit status {os.WEXITSTATUS(status)}")
        return {"status": "FAILED", "error": f"the tool ended without a result ({how})"}
    if total > cap:
        return {"status": "FAILED", "error": f"{total} bytes of output, over the limit"}
    result = json.loads(data.decode("utf-8", "surrogateescape"))
    scratch = root / str(workdir).lstrip("/")
    result["artifacts"], notes = collect(scratch, out_fd, result.get("artifacts", []))
    if notes:
        result["notes"] = notes
    return result


def main() -> int:
    spec = json.loads(sys.stdin.read())
    result_out = os.fdopen(os.dup(1), "w")
    RESULT_FD[0] = result_out.fileno()
    os.dup2(2, 1)  # stray prints go to stderr, never into the result
    try:
        module, _, function = spec["entrypoint"].partition(":")
        tool = getattr(importlib.import_module(module), function)
        importlib.import_module("streams.tools.builtin")
        result = supervise(spec, tool)
    except Exception as exc:  # the sandbox itself could not be built
        traceback.print_exc()
        result = {"status": "FAILED", "error": f"the sandbox could not be set up: "
                                               f"{type(exc).__name__}: {exc}"}
    limit = spec["limits"]["output_kb"] * 1024
    for key in ("output", "error"):
        if key in result:
            result[key] = truncate(safe_text(result[key]), limit)
    result_out.write(json.dumps(result))
    result_out.flush()
    return 0


def probe(arguments: dict, workdir: Path) -> dict:
    """The sandbox's self-check (``sandbox.unavailable``): who the tool runs as, and
    whether it can open a socket."""
    try:
        socket.socket(socket.AF_UNIX).close()
        sockets = "sockets allowed"
    except PermissionError:
        sockets = "sockets refused"
    return {"output": f"uid {os.getuid()} gid {os.getgid()}, {sockets}"}


def safe_text(text: str) -> str:
    """``schemas.codec.safe_text``: the sandbox imports nothing beyond this package."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


if __name__ == "__main__":
    sys.exit(main())

"""Run one untrusted Python program (a model's generated code plus its tests) and report pass/fail.

Each program runs in its own subprocess, in a fresh temporary directory, with:
  - a wall-clock timeout; the program's own process group is killed when it runs over, and then
    every process of its sandbox uid (which catches children that left the group with setsid);
  - rlimits: CPU seconds, address space, file size, open files, no core dumps;
  - no network: a fresh network namespace with no interfaces up (127.0.0.1 is unreachable);
  - no write access outside its directory: a private mount namespace with read-only, empty tmpfs
    over the world-writable directories (/tmp, /var/tmp, /dev/shm, /run/lock), and an unprivileged
    uid that owns nothing but the program's directory;
  - a cap on total storage: the program's directory (its cwd, HOME and TMPDIR, its only writable
    place) is a fresh tmpfs of `disk_mb` MB and `disk_mb * INODES_PER_MB` files, private to its
    mount namespace, so nothing it writes ever reaches the host disk and all of it is freed when
    its last process dies (its pages are RAM or swap, not counted in `memory_mb`);
  - a process cap that really holds: RLIMIT_NPROC is ignored for root, so the program runs as a
    dedicated unprivileged uid (unique per bench process) for which the kernel enforces it.

The isolation needs root (the bench runs as root in our containers). Without root, `run_program`
refuses unless `allow_weak=True`, which runs with rlimits only and a blocked `socket` module
(see WEAK_PRELUDE); `capabilities()` says which mode is available. Weak mode has NO total disk
cap (`disk_mb` is not enforced there): RLIMIT_FSIZE caps each file at OUTPUT_CAP, but the program
may write any number of such files, in a host temporary directory or anywhere its user can write.

This file is also the launcher: the parent (which has torch threads, where preexec_fn is unsafe)
starts `python -I sandbox.py --launch CONFIG`, a fresh single-threaded process that sets up the
namespaces and limits, drops to the sandbox uid and execs the program. Stdlib only, on purpose.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
PR_SET_CHILD_SUBREAPER = 36
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (added after the syscall table unification)
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 1
_SUBREAPER = False
MS_REMOUNT = 32
MS_REC = 16384
MS_PRIVATE = 1 << 18
WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
SETUP_FAILED = "silentzone sandbox setup failed"
SETUP_EXIT = 197
WORK_DIR = "/tmp/work"  # the program's directory inside its mount namespace
# tmpfs inodes are kernel memory that the size cap does not count; 64 per MB (4096 at the
# default 64 MB) is ample for a test program and keeps a flood of empty files bounded too.
INODES_PER_MB = 64


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up (never a verdict on the program)."""


UID_BASE = 200_000  # far above ordinary accounts; never shared with a real user or daemon
OUTPUT_CAP = 1 << 20  # bytes of stdout/stderr a program may write (RLIMIT_FSIZE on its output files)

# Weak mode only (no root): make socket creation fail before the program runs.
WEAK_PRELUDE = (
    "import socket as _s\n"
    "def _blocked(*a, **k):\n    raise OSError('network disabled in sandbox')\n"
    "_s.socket = _blocked; _s.create_connection = _blocked; _s.socketpair = _blocked\n"
    "del _s, _blocked\n"
)


@dataclass(frozen=True)
class Limits:
    """Per-program limits. A zero or negative one would make every correct program 'fail' (a
    silent wrong number), so construction refuses it.

    timeout_s: wall-clock seconds (CPU seconds are capped just above it).
    memory_mb: address space of each process.
    disk_mb: total storage of all the program's files together (at most disk_mb * INODES_PER_MB
        files and directories); strict mode only, weak mode caps each file, not the total.
    max_processes: processes of the sandbox uid at once.
    max_open_files: file descriptors per process.
    """

    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 16
    max_open_files: int = 64
    disk_mb: int = 64

    def __post_init__(self) -> None:
        t = self.timeout_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
            raise SandboxError(
                f"sandbox limit timeout_s must be a finite number of seconds > 0, got {t!r}; set bench.timeout_s to e.g. 10"
            )
        for name, fix in (
            ("memory_mb", "set bench.memory_mb to e.g. 1024"),
            ("disk_mb", "use e.g. 64"),
            ("max_processes", "use e.g. 16"),
            ("max_open_files", "use e.g. 64"),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise SandboxError(f"sandbox limit {name} must be a whole number > 0, got {v!r}; {fix}")


@dataclass(frozen=True)
class Result:
    status: str  # passed | failed | timeout
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float


def capabilities() -> str:
    """'strict' (namespaces + unprivileged uid) when running as root, else 'weak'."""
    return "strict" if os.geteuid() == 0 and shutil.which("true") else "weak"


def sandbox_uid() -> int:
    """A dedicated uid per bench process, so killing 'all processes of the uid' hits only ours."""
    return UID_BASE + os.getpid() % 50_000


_PYTHON: dict[int, str] = {}


def sandbox_python(uid: int) -> str:
    """An interpreter the sandbox uid can execute (ours may live under a private /root)."""
    if uid in _PYTHON:
        return _PYTHON[uid]
    candidates = [os.path.realpath(sys.executable), shutil.which("python3"), "/usr/bin/python3", "/usr/local/bin/python3"]
    for exe in dict.fromkeys(c for c in candidates if c):
        probe = (
            subprocess.run([exe, "-I", __file__, "--probe", str(uid)], capture_output=True, timeout=30, cwd="/")
            if os.geteuid() == 0
            else subprocess.run([exe, "-I", "-c", "pass"], capture_output=True, timeout=30)
        )
        if probe.returncode == 0:
            _PYTHON[uid] = exe
            return exe
    raise SandboxError(f"no Python interpreter is executable by sandbox uid {uid}; tried {candidates}")


def run_program(source: str, limits: Limits = Limits(), allow_weak: bool = False, contain_processes: bool = True) -> Result:
    """Run `source` as program.py in a fresh directory; status passed iff it exits 0 in time.

    Strict mode: the directory is a `limits.disk_mb` tmpfs, so all its writes together are capped
    (a write past the cap fails with ENOSPC). Weak mode: it is a host temporary directory with
    each file capped at OUTPUT_CAP and at most `max_open_files` open at once, but NO cap on the
    total or on writes elsewhere the user may write; `disk_mb` does not apply.

    `contain_processes=False` skips the uid drop; it exists only so a test can show that the fork
    limit is what stops a fork-happy program (never use it for model output)."""
    mode = capabilities()
    if mode == "weak" and not allow_weak:
        raise SandboxError(
            "the code sandbox needs root for its namespaces and uid drop; run as root or set bench.allow_weak_sandbox: true"
        )
    uid = sandbox_uid() if mode == "strict" and contain_processes else os.getuid()
    if mode == "strict":
        _become_subreaper()
    python = sandbox_python(uid) if mode == "strict" else os.path.realpath(sys.executable)
    host = Path(tempfile.mkdtemp(prefix="silentzone-sandbox-"))
    work = host / "work"
    work.mkdir()
    try:
        # Strict mode: the launcher (still root) copies program.py into the program's tmpfs; this
        # host copy stays root-owned, so the program has nothing on the host disk it could grow.
        (work / "program.py").write_text(
            (WEAK_PRELUDE if mode == "weak" else "") + source, encoding="utf-8", errors="surrogateescape"
        )
        config = {"mode": mode, "uid": uid, "python": python, "limits": limits.__dict__}
        return _launch(host, work, config, limits)
    finally:
        shutil.rmtree(host, ignore_errors=True)


def _launch(host: Path, work: Path, config: dict, limits: Limits) -> Result:
    launcher = [os.path.realpath(sys.executable), "-I", os.path.abspath(__file__), "--launch", json.dumps(config)]
    start = time.monotonic()
    with open(host / "stdout", "wb") as out, open(host / "stderr", "wb") as err:
        proc = subprocess.Popen(launcher, cwd=work, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        try:
            proc.wait(timeout=limits.timeout_s)
            status = "passed" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            status = "timeout"
        finally:
            _kill_all(proc.pid, config)
            proc.wait()
            _reap_orphans(config["uid"])
    seconds = time.monotonic() - start

    def read(name: str) -> str:
        return (host / name).read_bytes()[-OUTPUT_CAP:].decode("utf-8", errors="replace")

    result = Result(status, proc.returncode, read("stdout"), read("stderr"), seconds)
    if result.returncode == SETUP_EXIT and result.stderr.startswith(SETUP_FAILED):
        raise SandboxError(result.stderr.strip().splitlines()[0])
    return result


def _become_subreaper() -> None:
    """Orphans of a killed program reparent to us instead of an init that may never reap them;
    unreaped zombies would keep counting against the sandbox uid's process cap."""
    global _SUBREAPER
    if not _SUBREAPER and sys.platform == "linux":
        _libc_call("prctl", PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        _SUBREAPER = True


def _reap_orphans(uid: int) -> None:
    me = os.getpid()
    for path in Path("/proc").iterdir():
        if path.name.isdigit() and _owner(path) == uid and _zombie(path) and _parent(path) == me:
            try:
                os.waitpid(int(path.name), os.WNOHANG)
            except ChildProcessError:
                pass


def _parent(path: Path) -> int | None:
    try:
        return int((path / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _kill_all(pgid: int, config: dict) -> None:
    """Kill the program's process group, then every process of its sandbox uid."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if config["mode"] == "strict" and config["uid"] != os.getuid():
        subprocess.run(
            [os.path.realpath(sys.executable), "-I", os.path.abspath(__file__), "--killall", str(config["uid"])],
            cwd="/",
            check=False,
        )


# ---- launcher side (runs in the fresh child process, stdlib only) ----------------------------------


def _libc_call(name: str, *args) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _isolate(uid: int, disk_mb: int) -> None:
    """New network + mount namespaces; the whole file system read-only except the program's own
    directory, a fresh size-capped tmpfs at WORK_DIR holding a copy of program.py (read from the
    current directory). World-writable directories are also hidden under empty tmpfs, which
    alone suffices (with the uid drop) where mount_setattr is missing."""
    program = Path("program.py").read_bytes()
    _libc_call("unshare", CLONE_NEWNET | CLONE_NEWNS)
    _libc_call("mount", None, b"/", None, MS_REC | MS_PRIVATE, None)
    for path in WRITABLE_DIRS:
        if os.path.isdir(path):
            _libc_call("mount", b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=16k,mode=0755")
    os.mkdir(WORK_DIR)
    options = f"size={disk_mb}m,nr_inodes={disk_mb * INODES_PER_MB},mode=0700,uid={uid},gid={uid}"
    _libc_call("mount", b"tmpfs", WORK_DIR.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode())
    for path in WRITABLE_DIRS:
        if os.path.isdir(path):
            _libc_call("mount", None, path.encode(), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
    try:
        _mount_setattr(b"/", set_rdonly=True, recursive=True)
        _mount_setattr(WORK_DIR.encode(), set_rdonly=False, recursive=False)
    except OSError:
        pass  # kernel < 5.12: ownership (uid drop) + hidden /tmp still hold
    os.chdir(WORK_DIR)
    Path("program.py").write_bytes(program)
    os.chown("program.py", uid, uid)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _mount_setattr(path: bytes, set_rdonly: bool, recursive: bool) -> None:
    attr = _MountAttr(MOUNT_ATTR_RDONLY if set_rdonly else 0, 0 if set_rdonly else MOUNT_ATTR_RDONLY, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path, flags, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount_setattr: {os.strerror(err)}")


def _set_limits(limits: dict, nproc: int | None) -> None:
    cpu = max(1, int(limits["timeout_s"]) + 1)
    memory = limits["memory_mb"] << 20
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_CAP, OUTPUT_CAP))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["max_open_files"], limits["max_open_files"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if nproc is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _launch_main(config: dict) -> None:
    try:
        _setup(config)
    except Exception as exc:  # report, never run the program unconfined
        sys.stderr.write(f"{SETUP_FAILED}: {type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
        os._exit(SETUP_EXIT)
    os.execv(config["python"], [config["python"], "-I", "program.py"])


def _setup(config: dict) -> None:
    uid = config["uid"]
    if config["mode"] == "strict":
        _isolate(uid, config["limits"]["disk_mb"])
    dropping = uid != os.getuid()
    # Without a uid drop (weak mode as a normal user) the cap counts the user's other processes too.
    nproc = (
        config["limits"]["max_processes"]
        if dropping
        else (None if os.getuid() == 0 else _user_processes() + config["limits"]["max_processes"])
    )
    _set_limits(config["limits"], nproc)
    if dropping:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.environ.clear()
    os.environ.update(
        {"PATH": "/usr/bin:/bin", "HOME": os.getcwd(), "TMPDIR": os.getcwd(), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    )


def _user_processes() -> int:
    return len(_uid_processes(os.getuid()))


def _owner(path: Path) -> int | None:
    try:
        return path.stat().st_uid
    except OSError:
        return None


def _killall_main(uid: int) -> None:
    """As the sandbox uid, kill(-1) signals exactly the processes of that uid; repeat until none
    is left (a fork bomb may still be forking while the first round lands)."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    for _ in range(200):
        if not _uid_processes(uid):
            return
        os.kill(-1, signal.SIGKILL)
        time.sleep(0.005)


def _uid_processes(uid: int) -> list[int]:
    me = os.getpid()
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and int(p.name) != me and _owner(p) == uid and not _zombie(p)
    ]


def _zombie(path: Path) -> bool:
    try:
        return (path / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _probe_main(uid: int) -> None:
    """Exit 0 iff this interpreter still runs after dropping to `uid` (checked by re-exec)."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    os.chdir("/")
    os.execv(sys.executable, [sys.executable, "-I", "-c", "pass"])


if __name__ == "__main__":
    flag, arg = sys.argv[1], sys.argv[2]
    if flag == "--launch":
        _launch_main(json.loads(arg))
    elif flag == "--killall":
        _killall_main(int(arg))
    elif flag == "--probe":
        _probe_main(int(arg))

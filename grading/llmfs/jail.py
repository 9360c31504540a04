"""The walls around one grading process: `python -m llmfs.jail [LIMITS] -- COMMAND ...`.

`llmfs grade` starts every milestone's pytest through this launcher. It runs in the child, before any
learner code exists in the process, then replaces itself with COMMAND (`os.execv`), which inherits:

- resource limits: address space (`--memory-mb`: a 30 GB allocation raises MemoryError), CPU seconds
  (`--cpu-s`: SIGXCPU past it), open files, no core dumps;
- no network, where the platform allows: a new user namespace that owns a new network namespace whose only
  interface is a private loopback (DDP's gloo still works on 127.0.0.1; nothing else is reachable, not even
  servers on the grading machine's own loopback). Where unprivileged user namespaces are disabled, the
  fallback is an audit hook installed by the pytest plugin that refuses connections to non-loopback
  addresses (`LLMFS_NETWORK=audit`); it stops ordinary library calls, not a determined attacker;
- hidden folders (`--hide PATH`, in the same namespaces plus a mount namespace): an empty read-only tmpfs is
  mounted over each (/dev/null over a file), so the code under test can neither read nor write the other
  submissions, the outputs of `llmfs grade-all`, the instructor's originals or the reference files of the
  milestone being graded; `--keep PATH` mounts one folder inside a hidden one
  back (the submission's own working copy); `--read-only PATH` makes a folder read-only (the Python
  installation and site-packages, the datasets, the grader's copy of the tests), so a submission cannot plant
  code or data for the ones graded after it. Without namespaces nothing is hidden (LLMFS_HIDDEN=0).
- death with the grader: if the grading process dies (even SIGKILL), the kernel kills this process too.

The launcher tells the plugin what it got through LLMFS_NETWORK ("isolated" or "audit") and LLMFS_HIDDEN.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import os
import resource
import signal
import socket
import struct
import sys

NETWORK_ENV, HIDDEN_ENV = "LLMFS_NETWORK", "LLMFS_HIDDEN"
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384
PR_SET_PDEATHSIG = 1


def set_limits(memory_mb: int, cpu_s: int, open_files: int = 4096) -> None:
    """Address space, CPU time and file limits for this process and everything it starts."""
    memory = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))  # SIGXCPU at the soft limit, SIGKILL 5 s later
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = open_files if hard == resource.RLIM_INFINITY else min(open_files, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, limit), limit))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def enter_namespaces(mounts: bool) -> bool:
    """A new user namespace owning new network (and, with `mounts`, mount) namespaces; False if not allowed."""
    if not sys.platform.startswith("linux"):
        return False
    uid, gid = os.getuid(), os.getgid()
    if _libc().unshare(CLONE_NEWUSER | CLONE_NEWNET | (CLONE_NEWNS if mounts else 0)) != 0:
        return False
    try:  # keep our own uid and gid inside the namespace, so files and user names look the same
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError:
        return False
    return True


def loopback_up() -> bool:
    """Bring up the private loopback of a new network namespace (DDP's gloo needs 127.0.0.1)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            request = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    except OSError:
        return False
    return True


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    libc = _libc()
    if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                  data.encode() or None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def hide(paths: list[str], keep: list[str]) -> None:
    """Mount an empty read-only tmpfs over each folder (and /dev/null over each file); mount each `keep` folder
    back at its place inside."""
    held = {k: os.open(k, os.O_PATH | os.O_DIRECTORY) for k in keep}  # reachable after its parent is covered
    for path in paths:
        if os.path.isfile(path):
            _mount("/dev/null", path, None, MS_BIND)
            continue
        if not os.path.isdir(path):
            continue
        inside = [k for k in keep if os.path.commonpath([path, k]) == path and k != path]
        _mount("tmpfs", path, "tmpfs", 0, "size=64k,mode=755")
        for k in inside:
            os.makedirs(k, exist_ok=True)
            _mount(f"/proc/self/fd/{held[k]}", k, None, MS_BIND | MS_REC)
        _mount("tmpfs", path, None, MS_REMOUNT | MS_RDONLY)
    for fd in held.values():
        os.close(fd)


def read_only(paths: list[str]) -> None:
    """Bind each folder onto itself, then remount that bind read-only (what `mount --bind -o ro` does)."""
    for path in paths:
        if os.path.isdir(path):
            _mount(path, path, None, MS_BIND | MS_REC)
            _mount("none", path, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def die_with_parent() -> None:
    """Linux: the kernel kills this process when the grader dies (elsewhere, the grader's cleanup does)."""
    if not sys.platform.startswith("linux"):
        return
    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the line above
        os._exit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llmfs.jail", description=__doc__.splitlines()[0])
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--cpu-s", type=int, required=True)
    parser.add_argument("--hide", action="append", default=[], metavar="PATH", help="cover with an empty tmpfs")
    parser.add_argument("--keep", action="append", default=[], metavar="PATH", help="a folder inside a hidden one")
    parser.add_argument("--read-only", action="append", default=[], metavar="PATH", help="a folder to protect")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run after --")
    die_with_parent()
    hide_paths = [os.path.realpath(p) for p in args.hide]
    protect = [os.path.realpath(p) for p in args.read_only]
    namespaces = enter_namespaces(mounts=bool(hide_paths or protect))
    hidden = False
    if namespaces and (hide_paths or protect):
        try:
            hide(hide_paths, [os.path.realpath(k) for k in args.keep])
            read_only(protect)
            hidden = True
        except OSError as e:
            print(f"llmfs.jail: could not hide or protect folders: {e}", file=sys.stderr)
    os.environ[NETWORK_ENV] = "isolated" if namespaces and loopback_up() else "audit"
    os.environ[HIDDEN_ENV] = "1" if hidden else "0"
    set_limits(args.memory_mb, args.cpu_s)
    sys.stdout.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()

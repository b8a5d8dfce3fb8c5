"""What a vector env may leave behind: child processes, shared-memory files, file descriptors (Linux /proc)."""

from __future__ import annotations

import os
import re
import time

__all__ = ["child_pids", "new_shm", "open_fds", "shm_files", "shm_of", "wait_gone", "workers_only"]


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def child_pids() -> set[int]:
    """Children of this process, zombies included (an unreaped child is a leak too)."""
    me = str(os.getpid())
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == me:
                out.add(int(entry))
    return out


def workers_only(pids: set[int]) -> set[int]:
    """``pids`` without multiprocessing's own long-lived helpers (the forkserver and the resource tracker)."""
    out = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"forkserver" not in cmdline and b"resource_tracker" not in cmdline:
            out.add(pid)
    return out


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def wait_gone(pids: set[int] | list[int], seconds: float = 5.0) -> set[int]:
    """Wait up to ``seconds`` for ``pids`` to stop running; return those still running."""
    deadline = time.monotonic() + seconds
    alive = {pid for pid in pids if running(pid)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {pid for pid in alive if running(pid)}
    return alive


def shm_files() -> set[str]:
    """Entries of /dev/shm (named shared memory)."""
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def shm_of(pids: set[int], names: set[str]) -> set[str]:
    """The ``/dev/shm`` entries among ``names`` that carry one of ``pids`` in their name (multiprocessing's
    ``pym-PID-*``, torch's ``torch_PID_*``): other programs on the machine (another test worker) may add and
    remove files of their own."""
    wanted = {str(pid) for pid in pids}
    return {name for name in names if wanted & set(re.findall(r"\d+", name))}


def new_shm(before: set[str]) -> set[str]:
    """``/dev/shm`` entries of this process or its children that were not in ``before`` (:func:`shm_files`)."""
    return shm_of({os.getpid(), *child_pids()}, shm_files() - before)


def open_fds() -> int:
    """Number of file descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))

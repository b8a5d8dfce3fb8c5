"""Checks shared by the fault cases: nothing left behind, a bounded time to report."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vector.procs import child_pids, shm_files, shm_of, workers_only

ROOT = Path(__file__).resolve().parents[2]

#: Seconds within which a fault must be reported (loose: a loaded 2-core machine).
REPORT_S = 10.0


def leftover_workers(before: set[int], seconds: float = 5.0) -> set[int]:
    """Child processes of this one that are not in ``before`` (zombies included) after up to ``seconds``."""
    deadline = time.monotonic() + seconds
    left = workers_only(child_pids() - before)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = workers_only(child_pids() - before)
    return left


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    """After the test: no new child process of this one, no new ``/dev/shm`` file of this process or its
    children."""
    children, shm = child_pids(), shm_files()
    yield
    left = leftover_workers(children)
    assert not left, f"worker processes {sorted(left)} outlived the fault"
    new = shm_of({os.getpid(), *child_pids()}, shm_files() - shm)
    assert not new, f"/dev/shm files {sorted(new)} outlived the fault"

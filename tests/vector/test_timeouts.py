"""Hung envs: the multiprocessing backend raises WorkerTimeoutError within its timeout and leaves nothing behind.

(The Ray backend's timeout is tested in test_ray.py, beside its Ray session.)
"""

from __future__ import annotations

import functools
import gc
import logging
import pickle
import sys
import time

import numpy as np
import pytest

import shoal.vector
from shoal.errors import APIUsageError, WorkerError, WorkerTimeoutError
from shoal.vector.base import DEFAULT_TIMEOUT_S
from tests.vector import envs_for_tests as envs
from tests.vector.procs import child_pids, new_shm, shm_files, wait_gone, workers_only

pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(sys.platform != "linux", reason="uses /proc")]

TIMEOUT = 2.0
MARGIN = 5.0  # a loose bound: these tests detect hangs, they do not time anything


@pytest.fixture
def leaves_nothing_behind():
    """Assert the test leaves no worker process (zombie or running) and no /dev/shm entry behind."""
    children, shm = child_pids(), shm_files()
    yield
    gc.collect()
    new = workers_only(child_pids() - children)
    assert not wait_gone(new, 5.0), f"leftover worker processes: {new}"
    assert not workers_only(child_pids() - children), "unreaped worker processes"
    assert not new_shm(shm), f"leftover shared memory: {new_shm(shm)}"


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_default_timeout_and_its_validation(backend: str) -> None:
    with shoal.vector.make(envs.cartpole, 2, backend=backend) as vecenv:
        assert vecenv.timeout == DEFAULT_TIMEOUT_S == 60.0
    with shoal.vector.make(envs.cartpole, 2, backend=backend, timeout=None) as vecenv:
        assert vecenv.timeout is None  # explicitly disabled
    for bad in (0, -1.0, float("inf"), float("nan"), "5", True):
        with pytest.raises(APIUsageError, match=r"timeout must be a positive, finite number of seconds or None"):
            shoal.vector.make(envs.cartpole, 2, backend=backend, timeout=bad)


def _step_until_error(vecenv: shoal.vector.VecEnv, steps: int = 10) -> tuple[BaseException, float]:
    start = time.monotonic()
    with pytest.raises(WorkerError) as caught:
        for _ in range(steps):
            start = time.monotonic()
            vecenv.step(np.zeros(vecenv.num_agents, np.int64))
    return caught.value, time.monotonic() - start


def test_hung_step_raises_a_timeout_error_naming_the_worker_call_and_limit(leaves_nothing_behind: None) -> None:
    healthy = functools.partial(envs.HangEnv, after=10**9)
    hangs = functools.partial(envs.HangEnv, after=3)
    vecenv = shoal.vector.make([healthy, healthy, hangs, hangs], 4, backend="multiprocessing", num_workers=2,
                               timeout=TIMEOUT)
    vecenv.reset()
    pids = [proc.pid for proc in vecenv._procs]
    error, elapsed = _step_until_error(vecenv)
    assert type(error) is WorkerTimeoutError
    assert TIMEOUT <= elapsed < TIMEOUT + MARGIN
    message = str(error)
    assert f"multiprocessing worker 1 (pid {pids[1]}, envs 2..3)" in message and "worker 0" not in message
    assert "step()" in message and "timeout=2s" in message
    assert "shoal.vector.make(..., timeout=SECONDS)" in message and "timeout=None" in message
    assert (error.workers, error.envs, error.call, error.timeout) == ([1], [2, 3], "step", TIMEOUT)
    copy = pickle.loads(pickle.dumps(error))  # e.g. through a process pool
    assert (str(copy), copy.workers, copy.call) == (message, [1], "step")
    assert vecenv.closed
    assert not wait_gone(pids, 5.0)


def test_hung_reset_names_reset(leaves_nothing_behind: None) -> None:
    vecenv = shoal.vector.make(functools.partial(envs.HangEnv, where="reset"), 2, backend="multiprocessing",
                               num_workers=2, timeout=TIMEOUT)
    start = time.monotonic()
    with pytest.raises(WorkerTimeoutError, match=r"worker 0 .*worker 1 .*no answer to reset\(\) within timeout=2s"
                       ) as caught:
        vecenv.reset()
    assert time.monotonic() - start < TIMEOUT + MARGIN
    assert caught.value.call == "reset" and caught.value.workers == [0, 1]
    assert vecenv.closed


def test_hung_env_constructor_in_a_worker_times_out_at_startup(leaves_nothing_behind: None) -> None:
    start = time.monotonic()
    with pytest.raises(WorkerTimeoutError, match=r"no answer to building its envs \(env_fn\(\)\) within timeout=2s"
                       ) as caught:
        shoal.vector.make(envs.hang_in_worker, 2, backend="multiprocessing", num_workers=1, timeout=TIMEOUT)
    assert time.monotonic() - start < TIMEOUT + MARGIN
    assert caught.value.call == "startup"


def test_hung_close_is_logged_and_the_worker_terminated(leaves_nothing_behind: None,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    vecenv = shoal.vector.make(functools.partial(envs.HangEnv, where="close"), 2, backend="multiprocessing",
                               num_workers=2, timeout=TIMEOUT)
    vecenv.reset()
    vecenv.step(np.zeros(2, np.int64))
    pids = [proc.pid for proc in vecenv._procs]
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="shoal.vector.multiprocessing"):
        vecenv.close()
    assert time.monotonic() - start < 5.0 + MARGIN  # close()'s own grace period, then terminate
    assert "workers 0, 1 did not finish close() within 5s" in caplog.text
    assert not wait_gone(pids, 5.0)


def test_no_timeout_waits_for_a_slow_step() -> None:
    slow = functools.partial(envs.SlowEnv, delay=1.2)
    with shoal.vector.make(slow, 2, backend="multiprocessing", num_workers=2, timeout=None) as vecenv:
        vecenv.reset()
        vecenv.step(np.zeros(2, np.int64))  # slower than a 1 s limit would allow: no error without one

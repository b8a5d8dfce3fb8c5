"""Bad input gets an APIUsageError naming the argument and the valid choices; failing envs a WorkerError, fast."""

from __future__ import annotations

import functools
import io
import subprocess
import sys

import numpy as np
import pytest

import shoal.vector
from shoal.errors import APIUsageError, WorkerError
from tests.vector import envs_for_tests as envs
from tests.vector.procs import child_pids, workers_only

pytestmark = pytest.mark.timeout(60)

BACKENDS = ["serial", "multiprocessing"]


# ---- make() arguments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"num_envs": 6, "num_workers": 4}, r"num_workers=4 does not divide num_envs=6.*\[1, 2, 3, 6\]"),
    ({"num_envs": 8, "num_workers": 4, "batch_size": 3}, r"batch_size=3 does not tile.*\[2, 4, 6, 8\]"),
    ({"num_envs": 8, "num_workers": 4, "batch_size": 16}, r"batch_size=16.*\[2, 4, 6, 8\]"),
    ({"num_envs": 0}, r"num_envs must be a positive int"),
    ({"num_envs": 2, "backend": "threads"}, r"backend='threads'.*\['serial', 'multiprocessing', 'ray'\]"),
    ({"num_envs": 2, "frobnicate": 1}, r"unknown keyword argument frobnicate for backend='serial'.*emulate_kwargs"),
    ({"num_envs": 2, "backend": "multiprocessing", "address": "x"}, r"address.*'context', 'emulate_kwargs'"),
    ({"num_envs": 2, "backend": "multiprocessing", "context": "thread"}, r"context='thread'.*'spawn'"),
    ({"num_envs": 2, "backend": "multiprocessing", "spin_us": -1}, r"spin_us"),
    ({"num_envs": 2, "backend": "multiprocessing", "worker_spin_us": "fast"}, r"worker_spin_us must be a non-neg"),
    ({"num_envs": 2, "seed": -1}, r"seed must be a non-negative int"),
    ({"num_envs": 2, "emulate_kwargs": 3}, r"emulate_kwargs must be a dict"),
])
def test_invalid_make_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(APIUsageError, match=match):
        shoal.vector.make(envs.cartpole, **kwargs)


def test_env_fn_must_be_callable() -> None:
    with pytest.raises(APIUsageError, match="env_fn must be a callable"):
        shoal.vector.make("CartPole-v1", 2)
    with pytest.raises(APIUsageError, match="list of 1 callables but num_envs=2"):
        shoal.vector.make([envs.cartpole], 2)


def test_unpicklable_env_fn_under_spawn_is_explained() -> None:
    with pytest.raises(APIUsageError, match=r"env_fn cannot be pickled.*context='spawn'.*module-level"):
        shoal.vector.make(lambda: envs.cartpole(), 2, backend="multiprocessing", context="spawn")


# ---- call order and actions ----------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def vecenv(request: pytest.FixtureRequest) -> shoal.vector.VecEnv:
    with shoal.vector.make(envs.cartpole, 4, backend=request.param, num_workers=2) as vecenv:
        yield vecenv


def test_call_order_errors(vecenv: shoal.vector.VecEnv) -> None:
    with pytest.raises(APIUsageError, match=r"step\(\) called before reset"):
        vecenv.step(np.zeros(4, np.int64))
    with pytest.raises(APIUsageError, match=r"send\(\) called without recv.*async_reset"):
        vecenv.send(np.zeros(4, np.int64))
    with pytest.raises(APIUsageError, match=r"recv\(\) called with nothing sent"):
        vecenv.recv()
    vecenv.async_reset()
    with pytest.raises(APIUsageError, match=r"send\(\) called without recv\(\): call recv\(\)"):
        vecenv.send(np.zeros(4, np.int64))
    vecenv.recv()
    with pytest.raises(APIUsageError, match=r"recv\(\) called with nothing sent.*send\(actions\)"):
        vecenv.recv()
    vecenv.send(np.zeros(4, np.int64))
    with pytest.raises(APIUsageError, match=r"step\(\) called while a batch is pending.*recv\(\) first"):
        vecenv.step(np.zeros(4, np.int64))
    vecenv.recv()  # the failed calls did not break the state machine
    vecenv.send(np.zeros(4, np.int64))
    obs = vecenv.reset(seed=0)[0].copy()  # waits out the step in flight, then resets
    vecenv.async_reset(seed=0)
    np.testing.assert_array_equal(vecenv.recv().obs, obs)


@pytest.mark.parametrize("actions, match", [
    (np.zeros(3, np.int64), r"actions have shape \(3,\); expected \(4,\).*Discrete\(2\)"),
    (np.zeros((4, 2), np.int64), r"actions have shape \(4, 2\); expected \(4,\)"),
    (np.zeros(4, np.float32), r"dtype float32.*integer"),
    (np.array([0, 1, 2, 0]), r"action 2 for slot 2 is outside Discrete\(2\)"),
])
def test_bad_actions(vecenv: shoal.vector.VecEnv, actions: np.ndarray, match: str) -> None:
    vecenv.reset()
    with pytest.raises(APIUsageError, match=match):
        vecenv.step(actions)
    vecenv.step(np.zeros(4, np.int64))  # still usable


def test_partial_batches_need_the_async_api() -> None:
    with shoal.vector.make(envs.cartpole, 4, num_workers=2, batch_size=2) as vecenv:
        with pytest.raises(APIUsageError, match=r"batch_size == num_envs.*async_reset"):
            vecenv.reset()
        vecenv.async_reset()
        batch = vecenv.recv()
        with pytest.raises(APIUsageError, match=r"expected \(2,\)"):
            vecenv.send(np.zeros(4, np.int64))
        vecenv.send(np.zeros(len(batch.env_ids), np.int64))


# ---- failing envs and workers --------------------------------------------------------------------------------
# An env that raises, a worker that exits, is killed or crashes, on every backend: tests/faults/test_env_faults.py.


@pytest.mark.timeout(20)
def test_a_native_crash_prints_the_workers_python_traceback_even_when_stderr_is_replaced(
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    """A notebook or a capturing test runner gives ``sys.stderr`` no file descriptor; the workers still start,
    and a native crash still prints where the worker was to the process's real stderr."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    # One worker crashes: two crashing at once would interleave their reports on the one stderr.
    env_fn = functools.partial(envs.CrashEnv, after=2, how="segv")
    healthy = functools.partial(envs.CrashEnv, after=10**9)
    vecenv = shoal.vector.make([healthy, env_fn], 2, backend="multiprocessing", num_workers=2, context="fork")
    vecenv.reset()
    with pytest.raises(WorkerError, match="killed by signal 11"):
        for _ in range(5):
            vecenv.step(np.zeros(2, np.int64))
    err = capfd.readouterr().err
    assert "Segmentation fault" in err and "envs_for_tests.py" in err and "in _fail" in err


@pytest.mark.timeout(20)
def test_worker_that_cannot_build_its_envs() -> None:
    children = child_pids()
    with pytest.raises(WorkerError, match=r"(?s)worker [01] .*raised.*boom while making the env in a worker"):
        shoal.vector.make(envs.crash_in_worker, 2, backend="multiprocessing", num_workers=2)
    assert not workers_only(child_pids() - children)


def test_env_fn_that_raises_in_the_parent_raises_as_is() -> None:
    with pytest.raises(RuntimeError, match="boom while making the env"):
        shoal.vector.make(envs.crash_on_make, 2, backend="multiprocessing")


def test_mismatched_envs_are_named() -> None:
    pattern = r"env 1 does not match env 0: .*'obs': \(\(1, 40\), 'uint8'\).*'obs': \(\(1, 4\)"
    with pytest.raises(APIUsageError, match=pattern):
        shoal.vector.make([envs.cartpole, envs.nested], 2)


# ---- packaging -----------------------------------------------------------------------------------------------


def test_vector_does_not_import_torch_or_ray() -> None:
    code = "import shoal.vector, sys; assert 'torch' not in sys.modules; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

"""Envs that fail: every backend reports which worker and envs, in which call, within seconds, and cleans up.

Two CartPole envs on two workers, the second one faulty (:class:`tests.faults.envs.FaultyCartPole`), so a message
must name worker 1 / envs 1..1 and not the healthy one. Ray cases share one local Ray instance (started once for
them: it takes seconds).
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import shoal.vector
from shoal.errors import APIUsageError, NonFiniteError, ShoalError, WorkerError
from tests.faults import envs
from tests.faults.conftest import REPORT_S, ROOT
from tests.vector import envs_for_tests as vector_envs

# its Ray cases share a worker with the Ray modules (--dist loadgroup)
pytestmark = [pytest.mark.timeout(60), pytest.mark.xdist_group("ray")]

BACKENDS = ["serial", "multiprocessing", "ray"]
#: Backends whose envs run in other processes: the only ones that survive an env's os._exit or native crash.
PROCESS_BACKENDS = ["multiprocessing", "ray"]

#: How each backend names the faulty worker (the second of two, holding env 1).
WORKER = {
    "serial": r"serial group 1 \(envs 1\.\.1\)",
    "multiprocessing": r"multiprocessing worker 1 \(pid \d+, envs 1\.\.1\)",
    "ray": r"Ray actor 1 \(envs 1\.\.1\)",
}


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each backend in turn (module scope: pytest groups the cases by backend, so Ray starts once)."""
    if request.param != "ray":
        yield request.param
        return
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        yield "ray"
    finally:
        ray.shutdown()


def make(backend: str, fault: str, timeout: float | None = None, **kwargs: Any) -> shoal.vector.VecEnv:
    """A healthy CartPole (env 0, worker 0) beside a faulty one (env 1, worker 1); ``timeout`` for the backends
    that take one."""
    extra = {} if timeout is None else {"timeout": timeout}
    return shoal.vector.make([envs.cartpole, envs.faulty(fault, **kwargs)], 2, backend=backend, num_workers=2,
                             **extra)


def drive(vecenv: shoal.vector.VecEnv, steps: int = 5) -> None:
    vecenv.reset(seed=0)
    for _ in range(steps):
        vecenv.step(np.zeros(2, np.int64))


def actors_dead(actors: list[Any], seconds: float = 10.0) -> bool:
    """True once every Ray actor in ``actors`` is gone (``ray.kill`` is asynchronous)."""
    import ray

    deadline = time.monotonic() + seconds
    alive = list(actors)
    while alive and time.monotonic() < deadline:
        still = []
        for actor in alive:
            try:
                ray.get(actor.ready.remote(), timeout=seconds)
                still.append(actor)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                pass
        alive = still
        if alive:
            time.sleep(0.1)
    return not alive


def expect_worker_error(backend: str, vecenv: shoal.vector.VecEnv, call: str, *patterns: str,
                        worker: str | None = None) -> str:
    """Drive ``vecenv`` into its fault; check the WorkerError, its timing, its message (naming ``worker``,
    default the backend's faulty worker, and ``call``), and the clean-up."""
    actors = list(getattr(vecenv, "_actors", []))
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        drive(vecenv)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert elapsed < REPORT_S, f"the fault took {elapsed:.1f} s to be reported"
    assert isinstance(info.value, ShoalError)
    assert re.search(worker or WORKER[backend], message), message
    assert re.search(call, message), f"the call {call!r} is not named in:\n{message}"
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in:\n{message}"
    assert "envs 0..0" not in message  # the healthy worker is not blamed
    assert vecenv.closed
    with pytest.raises(APIUsageError, match="after close"):  # and stays closed
        vecenv.reset()
    if actors:
        assert actors_dead(actors)
    return message


# ---- an env that raises ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["reset", "step"])
def test_an_env_that_raises(backend: str, call: str, no_leftovers: None) -> None:
    expect_worker_error(backend, make(backend, call), rf"(raised|failed) during {call}\b",
                        f"injected fault in {call}", "Traceback", "faults/envs.py")


def test_an_env_that_raises_in_close_is_logged_not_raised(
    backend: str, no_leftovers: None, caplog: pytest.LogCaptureFixture
) -> None:
    vecenv = make(backend, "close")
    drive(vecenv)
    actors = list(getattr(vecenv, "_actors", []))
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="shoal.vector"):
        vecenv.close()  # closing is cleanup: it must not raise, and must not hide the failure either
    assert time.monotonic() - start < REPORT_S and vecenv.closed
    (record,) = [r for r in caplog.records if "injected fault in close" in r.getMessage()]
    text = record.getMessage()
    assert record.levelno == logging.WARNING and re.search(WORKER[backend], text), text
    assert re.search(r"clos(e|ing)", text.split("\n")[0]), text
    if actors:
        assert actors_dead(actors)


# ---- observations that do not fit the space -------------------------------------------------------------------


@pytest.mark.parametrize("fault, detail", [
    ("obs_shape", r"shape \(7,\).*could not broadcast"),
    ("obs_dtype", r"type str.*could not convert string"),
], ids=["shape", "dtype"])
def test_an_observation_that_does_not_fit(backend: str, fault: str, detail: str, no_leftovers: None) -> None:
    expect_worker_error(backend, make(backend, fault), r"(raised|failed) during step\b", "SpaceError",
                        r"env 0 of this group \(CartPoleEnv\) returned an observation that does not fit", detail)


def test_an_observation_of_another_dtype_than_its_space(backend: str, no_leftovers: None) -> None:
    """float64 observations from a float32 space are refused at the first reset (then they would be cast)."""
    vecenv = shoal.vector.make([envs.cartpole, envs.float64_cartpole], 2, backend=backend, num_workers=2)
    expect_worker_error(backend, vecenv, r"(raised|failed) during reset\b", "EnvError",
                        r"CartPoleEnv: the env returned an observation outside its observation_space", "float32")


# ---- a worker that dies --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault, how", [
    ("exit", {"multiprocessing": "exited with code 7", "ray": "actor died unexpectedly"}),
    ("kill", {"multiprocessing": "killed by signal 9", "ray": "actor died unexpectedly"}),
    ("segfault", {"multiprocessing": "killed by signal 11", "ray": "actor died unexpectedly"}),
], ids=["os_exit", "sigkill", "segfault"])
@pytest.mark.parametrize("backend", PROCESS_BACKENDS, indirect=True)
def test_a_worker_that_dies(backend: str, fault: str, how: dict[str, str], no_leftovers: None) -> None:
    expect_worker_error(backend, make(backend, fault), r"during step\b", how[backend])


# ---- hangs and non-finite values -----------------------------------------------------------------------------
# Every vector env has a step timeout (60 s by default; serial envs run in the caller's thread and cannot be
# interrupted) and checks rewards and observations for NaN and infinities.


@pytest.mark.parametrize("backend", PROCESS_BACKENDS, indirect=True)  # serial has no timeout (yet)
def test_an_env_that_hangs_is_reported_after_the_timeout(backend: str, no_leftovers: None) -> None:
    vecenv = make(backend, "hang", hang_s=30.0, timeout=30.0)
    vecenv.timeout = 2.0  # for the steps only: the timeout covers start-up too, and Ray actors start slowly
    expect_worker_error(backend, vecenv, r"no answer to step\(\) within timeout=2s", "raise the limit")


@pytest.mark.parametrize("field", ["reward", "obs"])
def test_a_nan_reward_or_observation_is_named(backend: str, field: str, no_leftovers: None) -> None:
    poisoned = functools.partial(vector_envs.poisoned_cartpole, field, at=3)
    vecenv = shoal.vector.make([envs.cartpole, poisoned], 2, backend=backend, num_workers=2)
    vecenv.reset(seed=0)
    start = time.monotonic()
    with pytest.raises(NonFiniteError) as caught:
        for _ in range(6):
            vecenv.step(np.zeros(2, np.int64))
    assert time.monotonic() - start < REPORT_S
    message = str(caught.value)
    assert "env 1" in message and ("reward" if field == "reward" else "obs") in message, message
    vecenv.close()

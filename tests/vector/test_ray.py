"""The Ray backend on a local Ray instance: same trajectories as serial, async batches, failures."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import pytest

import shoal.vector
from shoal.errors import APIUsageError, NonFiniteError, WorkerTimeoutError
from tests.vector import envs_for_tests as envs
from tests.vector.helpers import CASES, assert_same_rollout, async_rollout, sync_rollout

ray = pytest.importorskip("ray")

# one worker runs every Ray module (--dist loadgroup): two clusters at once on two cores crowd their timing bounds
pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("ray")]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def ray_session() -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()


def _dies(actor: object, seconds: float) -> bool:
    """True once calls on ``actor`` fail with RayActorError (ray.kill is asynchronous)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ready.remote(), timeout=seconds)
        except ray.exceptions.RayActorError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("name", list(CASES))
def test_same_trajectories_as_serial(name: str) -> None:
    env_fn, num_envs, steps = CASES[name]
    with shoal.vector.make(env_fn, num_envs, backend="serial", seed=7) as vecenv:
        expected = sync_rollout(vecenv, steps)
    with shoal.vector.make(env_fn, num_envs, backend="ray", num_workers=2, seed=7) as vecenv:
        assert vecenv.backend == "ray"
        assert_same_rollout(expected, sync_rollout(vecenv, steps))


def test_async_batches_cover_all_envs_and_match_serial() -> None:
    results = []
    for backend in ("serial", "ray"):
        with shoal.vector.make(envs.nested, 4, backend=backend, num_workers=2, batch_size=2, seed=3) as vecenv:
            per_env, seen = async_rollout(vecenv, 10)
        assert set(np.concatenate(seen).tolist()) == set(range(4))
        results.append(per_env)
    serial, remote = results
    for env in range(4):
        n = min(len(serial[env]), len(remote[env]))
        assert n >= 2 and serial[env][:n] == remote[env][:n]




def test_unknown_keyword_names_ray_choices() -> None:
    with pytest.raises(APIUsageError, match=r"context.*'actor_options', 'address'"):
        shoal.vector.make(envs.cartpole, 2, backend="ray", context="fork")


def test_default_timeout_is_sixty_seconds() -> None:
    with shoal.vector.make(envs.cartpole, 2, backend="ray", num_workers=1) as vecenv:
        assert vecenv.timeout == 60.0


@pytest.mark.timeout(60)
def test_hung_step_raises_within_about_a_second_of_the_timeout() -> None:
    # A hung actor never gets to run close(): it is killed at once, so the error is not held up by closing.
    healthy = functools.partial(envs.HangEnv, after=10**9)
    hangs = functools.partial(envs.HangEnv, after=3)
    timeout = 3.0
    vecenv = shoal.vector.make([healthy, hangs], 2, backend="ray", num_workers=2)
    vecenv.timeout = timeout  # after startup: starting Ray workers on a busy machine may take longer than that
    vecenv.reset()
    actors = list(vecenv._actors)
    with pytest.raises(WorkerTimeoutError) as caught:
        for _ in range(10):
            start = time.monotonic()
            vecenv.step(np.zeros(2, np.int64))
    elapsed = time.monotonic() - start
    assert timeout <= elapsed < timeout + 2.0, elapsed  # it used to take 15 s with timeout=5
    error = caught.value
    assert "Ray actor 1 (envs 1..1)" in str(error) and "Ray actor 0" not in str(error)
    assert "step()" in str(error) and "timeout=3s" in str(error) and "timeout=SECONDS" in str(error)
    assert (error.workers, error.envs, error.call) == ([1], [1], "step")
    assert vecenv.closed
    assert all(_dies(actor, 10.0) for actor in actors)


@pytest.mark.timeout(60)
def test_hung_reset_on_every_actor_raises_naming_them_all() -> None:
    vecenv = shoal.vector.make(functools.partial(envs.HangEnv, where="reset"), 2, backend="ray", num_workers=2)
    vecenv.timeout = 2.0  # after startup (see above)
    actors = list(vecenv._actors)
    start = time.monotonic()
    with pytest.raises(WorkerTimeoutError, match=r"Ray actor 0 .*Ray actor 1 .*reset\(\) within timeout=2s"):
        vecenv.reset()
    assert time.monotonic() - start < 2.0 + 2.0
    assert all(_dies(actor, 10.0) for actor in actors)


def test_nan_reward_names_env_actor_slot_and_step() -> None:
    fns = [envs.cartpole, functools.partial(envs.poisoned_cartpole, "reward", at=3)]
    vecenv = shoal.vector.make(fns, 2, backend="ray", num_workers=2)
    vecenv.reset(seed=0)
    with pytest.raises(NonFiniteError, match=r"env 1 \(ray worker 1\), slot 0, returned a non-finite reward = NaN "
                       r"at step 3 since the vector env's reset\(\)"):
        for _ in range(5):
            vecenv.step(np.zeros(2, np.int64))
    assert vecenv.closed

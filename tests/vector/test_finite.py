"""NaN and infinity reaching a vector env: NonFiniteError naming the env, worker, slot, field and step."""

from __future__ import annotations

import functools
import gc
import sys

import numpy as np
import pytest

import shoal.vector
from shoal.errors import APIUsageError, NonFiniteError
from tests.vector import envs_for_tests as envs
from tests.vector.procs import child_pids, new_shm, shm_files, wait_gone, workers_only

pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(sys.platform != "linux", reason="uses /proc")]

BACKENDS = ["serial", "multiprocessing"]
INF = float("inf")


def _run(vecenv: shoal.vector.VecEnv, steps: int = 12) -> NonFiniteError:
    with pytest.raises(NonFiniteError) as caught:
        vecenv.reset(seed=0)
        layout = vecenv.action_layout
        for _ in range(steps):
            vecenv.step(np.zeros((vecenv.num_agents, *layout.flat_shape), layout.flat_dtype))
    assert vecenv.closed
    return caught.value


@pytest.fixture
def leaves_nothing_behind():
    children, shm = child_pids(), shm_files()
    yield
    gc.collect()
    new = workers_only(child_pids() - children)
    assert not wait_gone(new, 5.0) and not workers_only(child_pids() - children), f"leftover workers: {new}"
    assert not new_shm(shm), f"leftover shared memory: {new_shm(shm)}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_reward_names_env_worker_slot_and_step(backend: str, leaves_nothing_behind: None) -> None:
    fns = [envs.cartpole] * 3 + [functools.partial(envs.poisoned_cartpole, "reward", at=3)]
    error = _run(shoal.vector.make(fns, 4, backend=backend, num_workers=2))
    message = str(error)
    assert f"env 3 ({backend} worker 1), slot 0, returned a non-finite reward = NaN at step 3 since the vector " \
           "env's reset()" in message
    assert "The vector env is closed" in message and "check_finite=False to shoal.vector.make" in message
    assert error.field == "reward"


@pytest.mark.parametrize("backend", BACKENDS)
def test_infinite_observation_names_its_leaf(backend: str, leaves_nothing_behind: None) -> None:
    fns = [envs.nested, functools.partial(envs.poisoned_nested, at=2, value=-INF)]
    error = _run(shoal.vector.make(fns, 2, backend=backend, num_workers=2))
    assert f"env 1 ({backend} worker 1), slot 0, returned a non-finite observation obs['agent']['position'][1] = " \
           "-inf at step 2" in str(error)


@pytest.mark.parametrize("backend", BACKENDS)
def test_final_observation_is_checked(backend: str, leaves_nothing_behind: None) -> None:
    # Truncated at step 4 with the poisoned observation: it reaches only infos[row]["final_observation"].
    fns = [envs.cartpole, functools.partial(envs.poisoned_cartpole, "obs", at=4, max_episode_steps=4)]
    error = _run(shoal.vector.make(fns, 2, backend=backend, num_workers=1))
    assert f"env 1 ({backend} worker 0), slot 0, returned a non-finite observation obs[2] (the final " \
           "observation) = NaN at step 4" in str(error)


@pytest.mark.parametrize("backend", BACKENDS)
def test_multi_agent_slot_is_named(backend: str, leaves_nothing_behind: None) -> None:
    error = _run(shoal.vector.make(envs.poisoned_kaz, 2, backend=backend, num_workers=2))
    assert f"env 0 ({backend} worker 0), slot 1, returned a non-finite reward = NaN at step 2" in str(error)


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_finite_false_lets_them_through(backend: str) -> None:
    fns = [envs.cartpole, functools.partial(envs.poisoned_cartpole, "reward", at=2)]
    with shoal.vector.make(fns, 2, backend=backend, num_workers=2, check_finite=False) as vecenv:
        vecenv.reset(seed=0)
        vecenv.step(np.zeros(2, np.int64))
        rewards = vecenv.step(np.zeros(2, np.int64))[1]
        assert np.isnan(rewards[1]) and rewards[0] == 1.0


def test_partial_batches_are_checked() -> None:
    fns = [envs.cartpole, functools.partial(envs.poisoned_cartpole, "reward", at=2)]
    vecenv = shoal.vector.make(fns, 2, backend="serial", num_workers=2, batch_size=1)
    vecenv.async_reset(seed=0)
    with pytest.raises(NonFiniteError, match=r"env 1 \(serial worker 1\), slot 0, returned a non-finite reward"):
        for _ in range(20):
            batch = vecenv.recv()
            vecenv.send(np.zeros(len(batch.env_ids), np.int64))
    assert vecenv.closed


def test_check_finite_must_be_a_bool() -> None:
    with pytest.raises(APIUsageError, match="check_finite must be True or False"):
        shoal.vector.make(envs.cartpole, 2, check_finite="yes")

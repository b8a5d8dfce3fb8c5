"""The Ray backend on a local Ray instance: same trajectories as serial, async batches, arguments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shoal.vector
from shoal.errors import APIUsageError
from tests.vector import envs_for_tests as envs
from tests.vector.helpers import CASES, assert_same_rollout, async_rollout, sync_rollout

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def ray_session() -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()


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


# An env that raises, an actor that exits or crashes, a hang: tests/faults/test_env_faults.py.


def test_unknown_keyword_names_ray_choices() -> None:
    with pytest.raises(APIUsageError, match=r"context.*'actor_options', 'address'"):
        shoal.vector.make(envs.cartpole, 2, backend="ray", context="fork")

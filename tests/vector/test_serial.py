"""The serial backend, and the API every backend shares (shapes, seeds, Batch, infos, partial batches)."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest

import shoal
import shoal.vector
from shoal.emulation import unflatten
from shoal.errors import APIUsageError
from shoal.vector import Batch
from tests.vector import envs_for_tests as envs

pytestmark = pytest.mark.timeout(60)


def test_sync_api_shapes_and_dtypes() -> None:
    with shoal.vector.make(envs.cartpole, 6, backend="serial") as vecenv:
        assert (vecenv.num_envs, vecenv.agents_per_env, vecenv.num_agents) == (6, 1, 6)
        assert vecenv.single_observation_space.shape == (4,)
        assert vecenv.single_action_space == gym.spaces.Discrete(2)
        assert vecenv.obs_layout.flat_size == 4 and vecenv.action_layout.kind == "discrete"
        obs, infos = vecenv.reset()
        assert obs.shape == (6, 4) and obs.dtype == np.float32
        assert infos == [{}] * 6
        obs, rewards, terminals, truncations, infos = vecenv.step(np.zeros(6, np.int64))
        assert obs.shape == (6, 4) and rewards.dtype == np.float32 and rewards.shape == (6,)
        assert terminals.dtype == truncations.dtype == np.bool_ and len(infos) == 6
        assert vecenv.masks.all() and vecenv.masks.shape == (6,)
        assert (vecenv.agent_types == 0).all() and vecenv.action_masks.shape == (6, 2)


def test_every_env_gets_seed_plus_index() -> None:
    with shoal.vector.make(envs.cartpole, 4, seed=11) as vecenv:
        obs, _ = vecenv.reset()
        for i in range(4):
            expected, _ = gym.make("CartPole-v1").reset(seed=11 + i)
            np.testing.assert_array_equal(obs[i], expected)
        assert len({row.tobytes() for row in obs}) == 4
        first = obs.copy()
        obs, _ = vecenv.reset()  # no seed: each env's RNG continues
        assert not np.array_equal(obs, first)
        obs, _ = vecenv.reset(seed=11)
        np.testing.assert_array_equal(obs, first)


def test_nested_dict_observations_unflatten_per_env() -> None:
    from shoal.envs.nested import NestedDictEnv

    with shoal.vector.make(envs.nested, 3, seed=5) as vecenv:
        obs, _ = vecenv.reset()
        assert obs.dtype == np.uint8  # mixed dtypes: a byte row
        views = unflatten(vecenv.obs_layout, obs)
        for i in range(3):
            native, _ = envs.nested().reset(seed=5 + i)
            np.testing.assert_array_equal(views["agent"]["position"][i], native["agent"]["position"])
            np.testing.assert_array_equal(views["grid"][i], native["grid"])
        assert isinstance(envs.nested(), NestedDictEnv)
        assert vecenv.single_action_space == gym.spaces.MultiDiscrete([3, 2])


def test_batch_is_a_seven_field_namedtuple_with_extras() -> None:
    assert Batch._fields == ("obs", "rewards", "terminals", "truncations", "infos", "env_ids", "masks")
    with shoal.vector.make(envs.cartpole, 4) as vecenv:
        vecenv.async_reset()
        batch = vecenv.recv()
        obs, rewards, terminals, truncations, infos, env_ids, masks = batch
        assert isinstance(batch, tuple) and len(batch) == 7
        assert obs is batch.obs and masks is batch.masks and infos is batch.infos
        assert terminals is batch.terminals and truncations is batch.truncations
        np.testing.assert_array_equal(env_ids, np.arange(4))
        assert batch.action_masks.shape == (4, 2) and batch.agent_types.shape == (4,)
        replaced = batch._replace(rewards=rewards + 1)
        assert replaced.action_masks is batch.action_masks and len(replaced) == 7


def test_episode_infos_arrive_with_their_step_and_keep_numpy() -> None:
    with shoal.vector.make(envs.cartpole, 4, seed=0) as vecenv:
        vecenv.reset()
        ended = 0
        returns = np.zeros(4)
        for _ in range(200):
            _, rewards, terminals, truncations, infos = vecenv.step(np.ones(4, np.int64))
            returns += rewards
            for row, info in enumerate(infos):
                done = terminals[row] or truncations[row]
                assert ("episode" in info) == done
                if done:
                    final = info["final_observation"]
                    assert isinstance(final, np.ndarray) and final.dtype == np.float32 and final.shape == (4,)
                    assert info["episode"]["return"] == returns[row]
                    returns[row] = 0
                    ended += 1
        assert ended >= 4


def test_partial_batches_round_robin_over_groups() -> None:
    with shoal.vector.make(envs.cartpole, 6, num_workers=3, batch_size=2) as vecenv:
        vecenv.async_reset()
        order = []
        for _ in range(6):
            batch = vecenv.recv()
            order.append(batch.env_ids.tolist())
            vecenv.send(np.zeros(2, np.int64))
        assert order == [[0, 1], [2, 3], [4, 5]] * 2


def test_emulate_kwargs_reach_the_emulator() -> None:
    with shoal.vector.make(envs.kaz, 2, emulate_kwargs={"max_agents": 6}) as vecenv:
        assert vecenv.agents_per_env == 6 and vecenv.num_agents == 12
        obs, infos = vecenv.reset()
        assert obs.shape[0] == 12 and len(infos) == 12
        masks = vecenv.masks.reshape(2, 6)
        assert masks[:, :4].all() and not masks[:, 4:].any()
        assert (vecenv.agent_types.reshape(2, 6)[:, 4:] == -1).all()


def test_env_fn_may_return_an_emulator_and_lists_give_one_fn_per_env() -> None:
    fns = [lambda: shoal.emulate(gym.make("CartPole-v1")), functools.partial(gym.make, "CartPole-v1")]
    with shoal.vector.make(fns, 2, seed=3) as vecenv:
        obs, _ = vecenv.reset()
        expected, _ = gym.make("CartPole-v1").reset(seed=4)
        np.testing.assert_array_equal(obs[1], expected)


def test_close_is_idempotent_and_final() -> None:
    vecenv = shoal.vector.make(envs.cartpole, 2)
    vecenv.reset()
    vecenv.close()
    vecenv.close()
    assert vecenv.closed
    with pytest.raises(APIUsageError, match="after close"):
        vecenv.step(np.zeros(2, np.int64))
    with pytest.raises(APIUsageError, match="after close"):
        vecenv.reset()

"""GymnasiumVectorEnv: Gymnasium-vector training code runs unchanged on shoal's backends."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import shoal.vector
from shoal.errors import APIUsageError
from shoal.vector import GymnasiumVectorEnv
from tests.vector import envs_for_tests as envs

pytestmark = pytest.mark.timeout(60)

NUM_ENVS = 4


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_matches_gymnasium_sync_vector_env_same_step(backend: str) -> None:
    fns = [functools.partial(gym.make, "CartPole-v1") for _ in range(NUM_ENVS)]
    reference = gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    envs_ = GymnasiumVectorEnv(fns, backend=backend, num_workers=2)
    assert isinstance(envs_, gym.vector.VectorEnv)
    assert envs_.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert envs_.single_observation_space == reference.single_observation_space
    assert envs_.single_action_space == reference.single_action_space
    assert envs_.action_space == reference.action_space and envs_.num_envs == NUM_ENVS
    obs, infos = envs_.reset(seed=5)
    ref_obs, _ = reference.reset(seed=5)
    np.testing.assert_array_equal(obs, ref_obs)
    rng = np.random.default_rng(0)
    episodes = 0
    for _ in range(300):
        actions = rng.integers(0, 2, NUM_ENVS)
        obs, rewards, terminations, truncations, infos = envs_.step(actions)
        ref = reference.step(actions)
        for got, want in zip((obs, rewards, terminations, truncations), ref[:4], strict=True):
            np.testing.assert_array_equal(got, want)
            assert got.dtype == want.dtype
        ref_infos = ref[4]
        assert ("final_obs" in infos) == ("final_obs" in ref_infos)
        if "final_obs" in infos:
            np.testing.assert_array_equal(infos["_final_obs"], ref_infos["_final_obs"])
            for i in np.flatnonzero(infos["_final_obs"]):
                np.testing.assert_array_equal(infos["final_obs"][i], ref_infos["final_obs"][i])
            done = infos["final_info"]["_episode"]
            np.testing.assert_array_equal(done, terminations | truncations)
            assert (infos["final_info"]["episode"]["l"][done] > 0).all()
            episodes += int(done.sum())
    assert episodes > 10
    envs_.close()
    reference.close()
    assert envs_.vecenv.closed


def test_cleanrl_style_loop_with_vector_wrappers() -> None:
    envs_ = GymnasiumVectorEnv(envs.cartpole, NUM_ENVS, backend="multiprocessing", num_workers=2)
    envs_ = gym.wrappers.vector.RecordEpisodeStatistics(envs_)
    assert isinstance(envs_.single_action_space, gym.spaces.Discrete)
    obs_dim = int(np.array(envs_.single_observation_space.shape).prod())
    next_obs, _ = envs_.reset(seed=1)
    returns = []
    for _ in range(200):
        action = envs_.action_space.sample()
        next_obs, _reward, terminations, truncations, infos = envs_.step(action)
        next_done = np.logical_or(terminations, truncations)
        assert next_obs.shape == (NUM_ENVS, obs_dim) and next_done.dtype == np.bool_
        if "episode" in infos:
            returns.extend(infos["episode"]["r"][infos["_episode"]].tolist())
    envs_.close()
    assert len(returns) > 5 and min(returns) >= 1


def test_wraps_an_existing_vecenv_and_copies_by_default() -> None:
    vecenv = shoal.vector.make(envs.cartpole, 2)
    with GymnasiumVectorEnv(vecenv) as envs_:
        obs, _ = envs_.reset(seed=0)
        envs_.step(np.zeros(2, np.int64))
        obs_after, *_ = envs_.step(np.zeros(2, np.int64))
        assert not np.shares_memory(obs, obs_after)
    assert vecenv.closed


def test_rejects_multi_agent_envs_and_partial_batches() -> None:
    with pytest.raises(APIUsageError, match=r"single-agent envs and synchronous batches.*agents_per_env=4"):
        GymnasiumVectorEnv(envs.kaz, 2)
    with pytest.raises(APIUsageError, match="batch_size=1"):
        GymnasiumVectorEnv(envs.cartpole, 2, num_workers=2, batch_size=1)
    with pytest.raises(APIUsageError, match="options"):
        GymnasiumVectorEnv(envs.cartpole, 2).reset(options={"x": 1})


def _recorded_cartpole() -> gym.Env:
    return gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1"))


def test_an_envs_own_episode_keys_reach_final_info() -> None:
    with GymnasiumVectorEnv([_recorded_cartpole] * 2) as envs_:
        envs_.reset(seed=0)
        for _ in range(200):
            infos = envs_.step(np.zeros(2, np.int64))[4]
            if "final_info" in infos:
                done = infos["final_info"]["_episode"]
                episode = infos["final_info"]["episode"]
                assert {"r", "l", "t"} <= set(episode)
                np.testing.assert_array_equal(episode["r"][done], episode["l"][done])  # CartPole: 1 per step
                return
    raise AssertionError("no episode ended")

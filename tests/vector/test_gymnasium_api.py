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


def _steps_of(envs_: gym.vector.VectorEnv, actions: list[np.ndarray]) -> list[tuple]:
    return [envs_.step(a) for a in actions]


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_next_step_autoreset_matches_gymnasium_sync_vector_env(backend: str, env_id: str) -> None:
    # Pendulum ends by truncation only (200 steps), CartPole mostly by termination.
    fns = [functools.partial(gym.make, env_id) for _ in range(NUM_ENVS)]
    reference = gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.NEXT_STEP)
    envs_ = GymnasiumVectorEnv(fns, backend=backend, num_workers=2, autoreset_mode=AutoresetMode.NEXT_STEP)
    assert envs_.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs_.autoreset_mode is AutoresetMode.NEXT_STEP
    obs, _ = envs_.reset(seed=11)
    np.testing.assert_array_equal(obs, reference.reset(seed=11)[0])
    rng = np.random.default_rng(0)
    ended = reset_steps = 0
    pending = np.zeros(NUM_ENVS, bool)
    returns = np.zeros(NUM_ENVS)
    lengths = np.zeros(NUM_ENVS, np.int64)
    for _ in range(450):
        actions = rng.integers(0, 2, NUM_ENVS) if env_id == "CartPole-v1" else rng.uniform(
            -2, 2, (NUM_ENVS, 1)).astype(np.float32)
        obs, rewards, terminations, truncations, infos = envs_.step(actions)
        ref_obs, ref_rewards, ref_terms, ref_truncs, _ = reference.step(actions)
        np.testing.assert_array_equal(obs, ref_obs)
        # shoal carries rewards as float32 (the data contract), returned as float64 like Gymnasium's.
        np.testing.assert_array_equal(rewards, ref_rewards.astype(np.float32).astype(np.float64))
        np.testing.assert_array_equal(terminations, ref_terms)
        np.testing.assert_array_equal(truncations, ref_truncs)
        assert rewards.dtype == ref_rewards.dtype and obs.dtype == ref_obs.dtype
        assert "final_obs" not in infos and "final_info" not in infos
        # The reset step: reward 0, not done, and the action ignored.
        assert (rewards[pending] == 0).all() and not (terminations | truncations)[pending].any()
        reset_steps += int(pending.sum())
        returns[~pending] += rewards[~pending]
        lengths[~pending] += 1
        done = terminations | truncations
        if done.any():
            np.testing.assert_array_equal(infos["_episode"], done)
            np.testing.assert_allclose(infos["episode"]["r"][done], returns[done], rtol=1e-5)
            np.testing.assert_array_equal(infos["episode"]["l"][done], lengths[done])
            returns[done] = 0
            lengths[done] = 0
            ended += int(done.sum())
        pending = done
    assert ended >= NUM_ENVS and reset_steps > 0
    envs_.close()
    reference.close()


def _assert_infos_match(infos: dict, ref: dict) -> None:
    """Every key Gymnasium gives is there with equal values; shoal adds only its episode statistics."""
    assert set(infos) - set(ref) <= {"episode", "_episode"}, set(infos) ^ set(ref)
    for key, value in ref.items():
        if isinstance(value, dict):
            _assert_infos_match(infos[key], value)
        else:
            np.testing.assert_array_equal(infos[key], value, err_msg=key)
            assert np.asarray(infos[key]).dtype == np.asarray(value).dtype, key


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_next_step_autoreset_infos_match_gymnasium_sync_vector_env(backend: str) -> None:
    # Taxi reports its transition probability (rainy: not always 1) and legal-action mask in every info, the
    # reset's included; time limits that differ per env make steps where some envs reset and others do not.
    fns = [functools.partial(gym.make, "Taxi-v4", is_rainy=True, max_episode_steps=40 + 17 * i)
           for i in range(NUM_ENVS)]
    reference = gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.NEXT_STEP)
    with GymnasiumVectorEnv(fns, backend=backend, num_workers=2, autoreset_mode=AutoresetMode.NEXT_STEP) as envs_:
        _assert_infos_match(envs_.reset(seed=4)[1], reference.reset(seed=4)[1])
        rng = np.random.default_rng(1)
        ends = 0
        for _ in range(420):
            actions = rng.integers(0, 6, NUM_ENVS)
            obs, _, _, _, infos = envs_.step(actions)
            ref_obs, _, ref_terms, ref_truncs, ref_infos = reference.step(actions)
            np.testing.assert_array_equal(obs.reshape(-1), ref_obs)
            _assert_infos_match(infos, ref_infos)
            ends += int((ref_terms | ref_truncs).sum())
        assert ends >= NUM_ENVS
    reference.close()


def test_normalize_observation_runs_on_next_step_autoreset() -> None:
    fns = [envs.cartpole] * NUM_ENVS
    with GymnasiumVectorEnv(fns) as same_step, pytest.raises(ValueError, match="NEXT_STEP or DISABLED"):
        gym.wrappers.vector.NormalizeObservation(same_step)
    ours = gym.wrappers.vector.NormalizeObservation(
        GymnasiumVectorEnv(fns, backend="multiprocessing", num_workers=2, autoreset_mode="NextStep"))
    theirs = gym.wrappers.vector.NormalizeObservation(
        gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.NEXT_STEP))
    np.testing.assert_allclose(ours.reset(seed=3)[0], theirs.reset(seed=3)[0], rtol=1e-6)
    rng = np.random.default_rng(1)
    for _ in range(300):
        actions = rng.integers(0, 2, NUM_ENVS)
        np.testing.assert_allclose(ours.step(actions)[0], theirs.step(actions)[0], rtol=1e-5, atol=1e-6)
    assert ours.obs_rms.count == theirs.obs_rms.count > 1000
    ours.close()
    theirs.close()


def test_next_step_autoreset_needs_env_constructors_and_a_known_mode() -> None:
    vecenv = shoal.vector.make(envs.cartpole, 2)
    with pytest.raises(APIUsageError, match="NEXT_STEP needs env constructors"):
        GymnasiumVectorEnv(vecenv, autoreset_mode=AutoresetMode.NEXT_STEP)
    vecenv.close()
    with pytest.raises(APIUsageError, match=r"autoreset_mode='Disabled'.*valid choices: \['SameStep', 'NextStep'\]"):
        GymnasiumVectorEnv([envs.cartpole] * 2, autoreset_mode="Disabled")
    with pytest.raises(APIUsageError, match=r"needs gymnasium\.Env constructors"):
        GymnasiumVectorEnv([envs.tictactoe] * 2, autoreset_mode=AutoresetMode.NEXT_STEP)


def test_explicit_reset_while_a_reset_is_deferred_resets_at_once() -> None:
    fns = [envs.cartpole] * 2
    reference = gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.NEXT_STEP)
    with GymnasiumVectorEnv(fns, autoreset_mode=AutoresetMode.NEXT_STEP) as envs_:
        envs_.reset(seed=0)
        reference.reset(seed=0)
        for _ in range(100):  # always push right: episodes end within ~10 steps
            _, _, terminations, _, _ = envs_.step(np.ones(2, np.int64))
            reference.step(np.ones(2, np.int64))
            if terminations.any():
                break
        assert terminations.any()
        np.testing.assert_array_equal(envs_.reset(seed=5)[0], reference.reset(seed=5)[0])
        left = np.zeros(2, np.int64)
        for _ in range(5):
            np.testing.assert_array_equal(envs_.step(left)[0], reference.step(left)[0])
    reference.close()

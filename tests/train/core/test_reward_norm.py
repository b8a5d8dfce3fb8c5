"""RewardNormalizer: rewards over the running standard deviation of the discounted return, against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shoal.errors import APIUsageError
from shoal.train import TrainConfig, Trainer
from shoal.train.core.reward_norm import RewardNormalizer

PRIOR = 1e-4  # pseudo-samples of mean 0 and variance 1 the statistics start from


def pooled_std(samples: list[float]) -> float:
    """sqrt(var + 1e-8) of the prior and every sample pooled, computed in one pass over all of them."""
    x = np.asarray(samples, np.float64)
    n = PRIOR + len(x)
    mean = x.sum() / n
    var = (PRIOR * (1.0 + mean**2) + ((x - mean) ** 2).sum()) / n
    return float(np.sqrt(var + 1e-8))


def test_rewards_are_divided_by_the_std_of_the_discounted_returns_so_far() -> None:
    gamma = 0.9
    norm = RewardNormalizer(3, gamma)
    rows = np.array([0, 1, 2])
    # per step: rewards of rows 0-2, which episodes end, which rows are in play (row 2 sits out step 1)
    steps = [
        ([1.0, -2.0, 0.5], [False, False, False], [True, True, True]),
        ([3.0, 0.0, 7.0], [True, False, False], [True, True, False]),
        ([-1.0, 4.0, 0.0], [False, False, True], [True, True, True]),
        ([2.0, 2.0, 1.0], [False, True, False], [True, True, True]),
    ]
    returns = np.zeros(3)
    seen: list[float] = []
    for rewards, ended, present in steps:
        r, e, p = np.array(rewards), np.array(ended), np.array(present)
        returns = returns * gamma + r
        seen.extend(returns[p].tolist())
        expected = np.clip(r / pooled_std(seen), -10, 10)
        out = norm(rows, r.astype(np.float32), e, p)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=1e-6)
        np.testing.assert_allclose(norm.std, pooled_std(seen), rtol=1e-12)
        returns[e] = 0.0
        np.testing.assert_array_equal(norm.returns, returns)
    # hand-checked: row 0's episode ended at step 1 (1 * 0.9 + 3), so its return at step 2 restarts at -1
    assert seen[3] == pytest.approx(3.9) and seen[5] == -1.0


def test_normalized_rewards_are_clipped_and_keep_their_sign() -> None:
    norm = RewardNormalizer(2, 0.99, clip=5.0)
    out = norm(np.array([0, 1]), np.array([-1.0, -1.0], np.float32), np.zeros(2, bool), np.ones(2, bool))
    # two equal returns: a variance of about 1e-4 / 2, so -1 / std is far beyond the clip
    assert out.tolist() == [-5.0, -5.0]


def test_state_round_trip_and_mismatch() -> None:
    norm = RewardNormalizer(2, 0.99)
    norm(np.array([0, 1]), np.array([1.0, 2.0], np.float32), np.zeros(2, bool), np.ones(2, bool))
    state = norm.state_dict()
    assert isinstance(state["returns"], torch.Tensor) and state["returns"].dtype == torch.float64
    other = RewardNormalizer(2, 0.99)
    other.load_state_dict(state)
    assert (other.mean, other.var, other.count) == (norm.mean, norm.var, norm.count)
    np.testing.assert_array_equal(other.returns, norm.returns)
    with pytest.raises(APIUsageError, match="for 2 rows, this run has 3"):
        RewardNormalizer(3, 0.99).load_state_dict(state)


def test_the_trainer_feeds_normalized_rewards_of_a_real_env_to_the_buffer() -> None:
    """CartPole pays 1 per step: the buffer's rewards are 1 / the std of every discounted return so far, episodes
    restarting after their ends; episode statistics stay raw."""
    gamma = 0.97
    trainer = Trainer(TrainConfig(env="CartPole-v1", num_envs=2, horizon=48, minibatch_size=32, gamma=gamma,
                                  reward_norm=True, total_steps=96, seed=3, trace_actor=False))
    try:
        trainer.collect()
        data = trainer.buffer.data()
        assert data.rewards.shape == (2, 48) and bool((data.terminals | data.truncations).any())  # episodes ended
        returns, seen = np.zeros(2), []
        for t in range(48):
            returns = returns * gamma + 1.0
            seen.extend(returns.tolist())
            np.testing.assert_allclose(data.rewards[:, t], np.clip(1.0 / pooled_std(seen), -10, 10), rtol=1e-6)
            returns[data.terminals[:, t] | data.truncations[:, t]] = 0.0
        assert all(float(r).is_integer() for r in trainer.episode_returns)  # raw returns: whole steps
    finally:
        trainer.close()


def test_reward_norm_is_refused_where_no_rollout_uses_it() -> None:
    with pytest.raises(APIUsageError, match="reward_norm"):
        TrainConfig(env="Pendulum-v1", algo="sac", reward_norm=True).validate()

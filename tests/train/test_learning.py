"""PPO learns: a contextual bandit (feed-forward) and a memory task (LSTM, BPTT over segments) in seconds."""

from __future__ import annotations

import time

import pytest

from shoal.train import TrainConfig, train


@pytest.mark.parametrize("async_learner", [False, True], ids=["one-process", "async-learner"])
def test_ppo_solves_a_contextual_bandit(async_learner: bool) -> None:
    start = time.perf_counter()
    result = train(
        TrainConfig(
            env="bandit",
            env_kwargs={"num_contexts": 4, "num_arms": 4},
            total_steps=4_000,
            num_envs=8,
            horizon=16,
            minibatch_size=64,
            update_epochs=4,
            learning_rate=1e-2,
            seed=0,
            eval_episodes=40,
            log_interval=60,
            async_learner=async_learner,
        )
    )
    assert result.evaluation is not None and result.evaluation["mean_return"] >= 0.95  # random: 0.25
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("async_learner", [False, True], ids=["one-process", "async-learner"])
def test_ppo_with_an_lstm_solves_the_memory_task(async_learner: bool) -> None:
    start = time.perf_counter()
    result = train(
        TrainConfig(
            env="memory",
            env_kwargs={"length": 4, "num_cues": 2},
            recurrent=True,
            total_steps=20_000,
            num_envs=8,
            horizon=16,
            minibatch_size=128,
            update_epochs=4,
            learning_rate=3e-3,
            seed=0,
            eval_episodes=40,
            log_interval=60,
            async_learner=async_learner,
        )
    )
    assert result.evaluation is not None and result.evaluation["mean_return"] >= 0.95  # memoryless: 0.5
    assert time.perf_counter() - start < 60


def test_a_feed_forward_policy_cannot_solve_the_memory_task() -> None:
    result = train(
        TrainConfig(
            env="memory",
            env_kwargs={"length": 4, "num_cues": 2},
            total_steps=8_000,
            num_envs=8,
            horizon=16,
            minibatch_size=128,
            update_epochs=4,
            learning_rate=3e-3,
            seed=0,
            eval_episodes=40,
            log_interval=60,
        )
    )
    assert result.evaluation is not None and result.evaluation["mean_return"] <= 0.75

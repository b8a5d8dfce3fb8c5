"""Behaviour cloning learns to act like the recorded expert, judged by playing the real env."""

from __future__ import annotations

from shoal.train import TrainConfig, train
from tests.train.offline.recorded import cartpole_expert, pendulum_expert, record

FAST = dict(tensorboard=False, log_interval=60.0, hidden_size=64, seed=1)


def test_bc_on_a_scripted_expert_plays_cartpole_near_the_experts_500() -> None:
    expert = record("CartPole-v1", cartpole_expert, 8)
    assert expert.episode_returns().min() == 500  # the expert; random play makes about 22
    # the online evaluation after the last update: one episode in each of 8 envs, the most likely actions
    result = train(TrainConfig(env="CartPole-v1", algo="bc", total_steps=600, horizon=600, num_envs=8, **FAST),
                   dataset=expert)
    assert result.episodes == 8 and result.episode_return >= 400, result.episode_return


def test_bc_with_box_actions_clones_a_pendulum_swing_up_far_beyond_random() -> None:
    expert = record("Pendulum-v1", pendulum_expert, 20)
    assert expert.episode_returns().mean() > -200  # uniformly random torques score about -1200
    result = train(TrainConfig(env="Pendulum-v1", algo="bc", total_steps=1200, horizon=1200, num_envs=8, **FAST),
                   dataset=expert)
    assert result.episodes == 8 and result.episode_return > -500, result.episode_return

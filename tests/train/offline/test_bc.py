"""Behaviour cloning learns to act like the recorded expert, judged by playing the real env: Discrete and Box
actions, and a turn-based game's masked moves recorded per seat by record_dataset."""

from __future__ import annotations

from pathlib import Path

from shoal.train import TrainConfig, train
from shoal.train.record import record_dataset
from shoal.train.selfplay.league import evaluate_match
from tests.emulation.helpers import HybridActionEnv
from tests.train.offline.recorded import aiming_expert, cartpole_expert, pendulum_expert, record

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


def test_bc_clones_the_tic_tac_toe_solver_from_masked_per_seat_moves(tmp_path: Path) -> None:
    data = record_dataset("solver", "pettingzoo.classic.tictactoe_v3", 800, num_envs=4)
    assert data.action_masks is not None and set(data.agents.tolist()) == {0, 1}  # both seats, legal moves known
    train(TrainConfig(env="pettingzoo.classic.tictactoe_v3", algo="bc", total_steps=300, horizon=300, num_envs=2,
                      eval_interval=0, run_dir=str(tmp_path / "bc"), **FAST), dataset=data)
    match = evaluate_match(tmp_path / "bc", "random", 60)  # shoal eval RUN --opponent random, seats alternating
    # the solver never loses; random play loses about 44% of its games against random play
    assert match["losses"] <= 12, match


def test_bc_with_hybrid_actions_aims_like_the_expert() -> None:
    expert = record(HybridActionEnv, aiming_expert, 20)  # a weapon choice, fire, power and a float aim per step
    assert expert.action_layout.kind == "hybrid" and expert.episode_returns().max() == 0.0
    result = train(TrainConfig(env="aiming", algo="bc", total_steps=600, horizon=600, num_envs=8, **FAST),
                   env_fn=HybridActionEnv, dataset=expert)
    # uniformly random aim misses by 2/3 per axis: about -67 over an episode's 50 steps
    assert result.episodes == 8 and result.episode_return > -10, result.episode_return

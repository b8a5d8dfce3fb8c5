"""IQL learns better than the behaviour that recorded its data, resumes exactly (its Q networks travel in the
checkpoint) and plays through the same evaluation as every policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shoal.envs.bandit import ContextualBandit
from shoal.errors import APIUsageError
from shoal.train import TrainConfig, make_trainer, train
from shoal.train.offline.iql import IQLTrainer
from shoal.train.record import record_dataset
from shoal.train.runs.evaluate import evaluate_checkpoint
from shoal.train.selfplay.league import evaluate_match
from tests.emulation.helpers import HybridActionEnv
from tests.train.offline.recorded import aiming_expert, bandit_mostly_wrong, pendulum_expert, record

FAST = dict(tensorboard=False, log_interval=60.0, hidden_size=32, num_envs=8)


def test_iql_picks_the_rewarded_arm_where_bc_copies_the_behaviours_favourite() -> None:
    # the behaviour plays each context's arm 30% of the time and the arm after it (never rewarded) 50%
    data = record(ContextualBandit, bandit_mostly_wrong(ContextualBandit().correct_arms), 1000)
    assert 0.25 < data.episode_returns().mean() < 0.45
    common = dict(env="bandit", total_steps=300, horizon=300, learning_rate=3e-3, seed=0, **FAST)
    cloned = train(TrainConfig(algo="bc", **common), dataset=data)
    iql = train(TrainConfig(algo="iql", **common), dataset=data)
    # one episode in each of 8 envs, most likely actions: BC takes the favourite (wrong) arm, IQL the rewarded one
    assert cloned.episode_return == 0.0 and iql.episode_return == 1.0


def test_a_resumed_iql_run_continues_exactly_as_an_uninterrupted_one(tmp_path: Path) -> None:
    data = record("Pendulum-v1", pendulum_expert, 2)
    common = dict(env="Pendulum-v1", algo="iql", horizon=20, eval_interval=0, seed=2, **FAST)
    straight = make_trainer(TrainConfig(total_steps=80, **common), dataset=data)
    assert isinstance(straight, IQLTrainer)
    straight_result = straight.train()
    run_dir = str(tmp_path / "run")
    train(TrainConfig(total_steps=40, run_dir=run_dir, **common), dataset=data)
    resumed = make_trainer(TrainConfig(total_steps=80, run_dir=run_dir, resume=True, **common), dataset=data)
    result = resumed.train()
    assert result.exact_resume and result.global_step == straight_result.global_step == 80
    for mine, theirs in ((result.policy, straight_result.policy), (resumed.critics, straight.critics)):
        a, b = mine.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert evaluate_checkpoint(run_dir, episodes=1)["episodes"] == 1  # shoal eval rebuilds the default Policy


def test_iql_refuses_hybrid_actions_saying_to_clone_them_instead() -> None:
    data = record(HybridActionEnv, aiming_expert, 1)
    with pytest.raises(APIUsageError, match=r"IQL needs Box or Discrete actions; this env's actions are hybrid "
                                            r"\(Dict\(.*\)\)\. Train it with --algo bc"):
        make_trainer(TrainConfig(env="aiming", algo="iql", **FAST), env_fn=HybridActionEnv, dataset=data)


def test_iql_on_a_board_game_builds_its_policy_with_a_separate_critic(tmp_path: Path) -> None:
    # the default policy of a board game shares its CNN between actor and critic; IQL's V needs its own
    data = record_dataset("random", "pettingzoo.classic.connect_four_v3", 300, num_envs=2)
    run_dir = tmp_path / "iql"
    result = train(TrainConfig(env="pettingzoo.classic.connect_four_v3", algo="iql", total_steps=20, horizon=10,
                               eval_interval=0, run_dir=str(run_dir), **FAST), dataset=data)
    assert result.global_step == 20 and result.policy.separate_critic
    assert evaluate_match(run_dir, "random", 4)["games"] == 4  # reloads with shoal eval RUN --opponent random

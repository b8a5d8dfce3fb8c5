"""The offline loop: online evaluations logged as the online algorithms log their returns, exact resume (also after
Ctrl-C), datasets that do not fit refused, and the result evaluated and exported like any policy."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from shoal.errors import APIUsageError, CheckpointError, DatasetError
from shoal.policies.export import export_onnx, run_onnx
from shoal.train import TrainConfig, make_trainer, train
from shoal.train.offline import trainer as offline_trainer
from shoal.train.offline.bc import BCTrainer
from shoal.train.record import record_dataset
from shoal.train.runs.checkpoint import list_checkpoints
from shoal.train.runs.evaluate import DEFAULT_MAX_STEPS, evaluate_checkpoint
from shoal.train.runs.logger import read_scalars
from tests.train.offline.recorded import cartpole_expert, pendulum_expert, record

FAST = dict(tensorboard=False, log_interval=0.0, hidden_size=32, num_envs=2)


@pytest.fixture(scope="module")
def expert() -> Any:
    return record("CartPole-v1", cartpole_expert, 4)


def _weights(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}


def test_online_evaluations_are_logged_as_episode_returns(tmp_path: Path, expert: Any) -> None:
    run_dir = tmp_path / "run"
    result = train(TrainConfig(env="CartPole-v1", algo="bc", total_steps=600, horizon=100, eval_interval=3,
                               run_dir=str(run_dir), **FAST), dataset=expert)
    assert result.global_step == 600 and result.updates == 6  # total_steps counts gradient steps
    logged: dict[int, dict[str, float]] = {}
    for row in read_scalars(run_dir):  # one row per (gradient step, scalar)
        logged.setdefault(row["step"] // 100, {})[row["name"]] = row["value"]
    # evaluated after updates 3 and 6 (one episode per env): the logged returns are those games'
    assert result.episodes == 4 and logged[6]["charts/episodes"] == 4 and logged[3]["charts/episodes"] == 2
    assert logged[6]["charts/episode_return"] == pytest.approx(result.episode_return)
    assert result.episode_return > 100  # random play makes about 22
    assert "charts/episode_return" not in logged[1] and logged[2]["losses/policy_loss"] > 0
    assert len(list_checkpoints(run_dir)) == 1 and result.checkpoint == list_checkpoints(run_dir)[0]


def test_a_resumed_run_continues_exactly_as_an_uninterrupted_one(tmp_path: Path, expert: Any) -> None:
    common = dict(env="CartPole-v1", algo="bc", horizon=50, eval_interval=2, seed=3, **FAST)
    straight = train(TrainConfig(total_steps=300, **common), dataset=expert)
    run_dir = str(tmp_path / "run")
    train(TrainConfig(total_steps=150, run_dir=run_dir, **common), dataset=expert)
    resumed = train(TrainConfig(total_steps=300, run_dir=run_dir, resume=True, **common), dataset=expert)
    assert resumed.exact_resume and resumed.global_step == straight.global_step == 300
    a, b = _weights(straight.policy), _weights(resumed.policy)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    # the same last evaluation; the first part's own final evaluation (at its budget, 150) adds its 2 games
    assert resumed.episode_return == straight.episode_return and resumed.episodes == straight.episodes + 2


def test_ctrl_c_saves_the_last_whole_update_and_the_run_resumes_exactly(tmp_path: Path, expert: Any) -> None:
    common = dict(env="CartPole-v1", algo="bc", horizon=40, eval_interval=0, seed=4, checkpoint_interval=0,
                  run_dir=str(tmp_path / "run"), **FAST)

    def interrupt(record: Any) -> None:
        if record.scalars["charts/update"] == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises in the loop, after update 2 is done

    trainer = make_trainer(TrainConfig(total_steps=200, **common), dataset=expert, callbacks=[interrupt])
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.update == 2 and trainer.last_checkpoint is not None and trainer.last_checkpoint.is_file()
    resumed = train(TrainConfig(total_steps=200, resume=True, **common), dataset=expert)
    straight = train(TrainConfig(total_steps=200, **{**common, "run_dir": None}), dataset=expert)
    a, b = _weights(straight.policy), _weights(resumed.policy)
    assert resumed.exact_resume and all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_on_another_dataset_is_refused(tmp_path: Path, expert: Any) -> None:
    common = dict(env="CartPole-v1", algo="bc", horizon=50, run_dir=str(tmp_path / "run"), **FAST)
    train(TrainConfig(total_steps=50, **common), dataset=expert)
    other = record_dataset("random", "CartPole-v1", 60)
    with pytest.raises(CheckpointError, match=r"trained on another dataset \(the dataset given: 4 episodes, 2000 "
                                              r"steps\) than the dataset given \(\d+ episodes, 60 steps\)"):
        train(TrainConfig(total_steps=100, resume=True, **common), dataset=other)


def test_a_dataset_of_another_env_is_refused_naming_both_spaces(expert: Any) -> None:
    with pytest.raises(DatasetError, match=r"holds observations of Box.*\(4,\).*but 'Pendulum-v1' observes "
                                           r"Box.*\(3,\)"):
        make_trainer(TrainConfig(env="Pendulum-v1", algo="bc", **FAST), dataset=expert)
    box_actions = dataclasses.replace(expert, actions=np.zeros((expert.num_steps, 1), np.float32),
                                      action_layout=record("Pendulum-v1", pendulum_expert, 1).action_layout)
    with pytest.raises(DatasetError, match=r"holds actions of Box.*, but 'CartPole-v1' takes actions of "
                                           r"Discrete\(2\)"):
        make_trainer(TrainConfig(env="CartPole-v1", algo="bc", **FAST), dataset=box_actions)


def test_an_offline_algo_without_a_dataset_says_how_to_give_one() -> None:
    with pytest.raises(APIUsageError, match="learns from a recorded dataset: give --dataset PATH"):
        make_trainer(TrainConfig(env="CartPole-v1", algo="bc", **FAST))
    with pytest.raises(APIUsageError, match="dataset= is read by the offline algorithms"):
        make_trainer(TrainConfig(env="CartPole-v1", algo="ppo"), dataset=record("CartPole-v1", cartpole_expert, 1))
    with pytest.raises(APIUsageError, match="does not support an LSTM policy"):
        TrainConfig(algo="bc", recurrent=True).validate()
    with pytest.raises(APIUsageError, match="collects no experience to record; drop --record-dataset"):
        TrainConfig(algo="iql", record_dataset="data/x").validate()


def test_the_result_evaluates_from_its_run_directory(tmp_path: Path, expert: Any) -> None:
    run_dir = tmp_path / "run"
    train(TrainConfig(env="CartPole-v1", algo="bc", total_steps=400, horizon=200, eval_interval=0,
                      run_dir=str(run_dir), **FAST), dataset=expert)
    evaluated = evaluate_checkpoint(run_dir, episodes=2)  # what shoal eval RUN runs
    assert evaluated["episodes"] == 2 and evaluated["mean_return"] > 100


def test_the_cloned_policy_exports_to_onnx_with_the_same_logits(tmp_path: Path, expert: Any) -> None:
    result = train(TrainConfig(env="CartPole-v1", algo="bc", total_steps=100, horizon=100, eval_interval=0, **FAST),
                   dataset=expert)
    path = tmp_path / "bc.onnx"
    export_onnx(result.policy, path)
    obs = np.asarray(expert.observations[:16])
    logits = run_onnx(path, {"obs": obs})[0]
    expected, _ = result.policy.actor(torch.from_numpy(obs))
    np.testing.assert_allclose(logits, expected.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_the_trainer_class_of_bc(expert: Any) -> None:
    trainer = make_trainer(TrainConfig(env="CartPole-v1", algo="bc", **FAST), dataset=expert)
    try:
        assert type(trainer) is BCTrainer and trainer.describe()[0].startswith(
            "dataset: 4 episodes, 2,000 steps, episode return 500.00")
    finally:
        trainer.close()


def test_an_online_evaluation_that_sees_no_episode_end_is_skipped_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    assert offline_trainer.ONLINE_EVAL_MAX_STEPS <= DEFAULT_MAX_STEPS // 10  # bounded below the final evaluation's
    monkeypatch.setattr(offline_trainer, "ONLINE_EVAL_MAX_STEPS", 300)  # keeps the test fast
    data = record("Pendulum-v1", pendulum_expert, 1)
    endless = "gymnasium.envs.classic_control.pendulum:PendulumEnv"  # the bare class: no time limit
    result = train(TrainConfig(env=endless, algo="bc", total_steps=40, horizon=10, eval_interval=2, **FAST),
                   dataset=data)
    assert result.global_step == 40 and result.updates == 4  # trained to the end
    assert result.episodes == 0
    skipped = [r.getMessage() for r in caplog.records if "skipped the online evaluation" in r.getMessage()]
    assert len(skipped) == 2 and "PendulumEnv" in skipped[0] and "time limit" in skipped[0]

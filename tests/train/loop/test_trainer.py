"""The trainer's record_dataset: every decision of the learner's slots, written when training ends or stops."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from shoal.cli import main
from shoal.datasets import load_dataset
from shoal.errors import APIUsageError
from shoal.train import TrainConfig, make_trainer
from shoal.train.runs.logger import LogRecord

pytestmark = pytest.mark.filterwarnings("ignore:The old environment creation API:DeprecationWarning")

FAST = {"num_envs": 4, "horizon": 32, "minibatch_size": 64, "update_epochs": 1, "tensorboard": False}


def test_ppo_records_every_transition_it_collected(tmp_path: Path) -> None:
    trainer = make_trainer(TrainConfig(env="CartPole-v1", total_steps=512, run_dir=str(tmp_path / "run"),
                                       record_dataset=str(tmp_path / "data"), **FAST))
    result = trainer.train()
    dataset = load_dataset(tmp_path / "data")
    assert result.dataset == tmp_path / "data" and result.summary()["dataset"] == str(tmp_path / "data")
    assert dataset.num_steps == result.global_step == 512
    assert dataset.metadata["source"] == "training run (ppo)" and dataset.metadata["run_dir"] == str(tmp_path / "run")
    # the episodes that ended are the ones the trainer counted, with the same (raw) returns; the rest were running
    ends = dataset.episode_offsets[1:] - 1
    ended = dataset.terminations[ends] | (dataset.truncations[ends] & (dataset.episode_lengths == 500))
    assert ended.sum() == result.episodes and 0 <= dataset.num_episodes - result.episodes <= 4  # one per env at most
    finished = Counter(np.round(dataset.episode_returns()[ended], 3).tolist())
    assert finished == Counter(np.round(list(trainer.episode_returns), 3).tolist())


def test_a_league_records_only_the_learners_seat(tmp_path: Path) -> None:
    config = TrainConfig(env="pettingzoo.classic.tictactoe_v3", total_steps=400, league=True,
                         league_opponents="random", run_dir=str(tmp_path / "run"),
                         record_dataset=str(tmp_path / "data"), **FAST)
    result = make_trainer(config).train()
    dataset = load_dataset(tmp_path / "data")
    # the learner's decisions; a rollout ends at its batch size, so the last ones may belong to no update
    recorded = dataset.num_steps + dataset.metadata["unanswered_decisions"]
    assert dataset.metadata["steps"] == dataset.num_steps  # what the dataset holds, not the decisions recorded
    assert result.global_step <= recorded <= result.global_step + 8
    assert set(dataset.agents.tolist()) == {0, 1}  # the learner's seat changes from game to game
    stones = dataset.observations.reshape(-1, 18).astype(np.int64).sum(1)[dataset.obs_index]
    for e in range(dataset.num_episodes):  # one player's moves only: the random opponent's are not stored
        moves = stones[dataset.episode_offsets[e]: dataset.episode_offsets[e + 1]]
        assert moves.tolist() == [2 * t + int(dataset.agents[e]) for t in range(len(moves))]
    assert dataset.num_episodes < 0.6 * result.global_step / 2  # about one episode per game, not two


def test_mappo_records_every_agent_slot(tmp_path: Path) -> None:
    config = TrainConfig(env="mpe2.simple_spread_v3", env_kwargs={"max_cycles": 16}, algo="mappo", total_steps=384,
                         num_envs=2, horizon=16, minibatch_size=96, update_epochs=1, tensorboard=False,
                         run_dir=str(tmp_path / "run"), record_dataset=str(tmp_path / "data"))
    result = make_trainer(config).train()
    dataset = load_dataset(tmp_path / "data")
    assert dataset.num_steps == result.global_step == 384
    assert dataset.episode_lengths.tolist() == [16] * 24  # 2 envs x 3 slots x 4 episodes of 16 steps
    assert Counter(dataset.agents.tolist()) == {0: 8, 1: 8, 2: 8}
    assert dataset.truncations.sum() == 24 and not dataset.terminations.any()


def test_sac_records_its_steps(tmp_path: Path) -> None:
    config = TrainConfig(env="Pendulum-v1", algo="sac", total_steps=400, learning_starts=100, num_envs=2,
                         horizon=50, minibatch_size=32, tensorboard=False, run_dir=str(tmp_path / "run"),
                         record_dataset=str(tmp_path / "data"))
    result = make_trainer(config).train()
    dataset = load_dataset(tmp_path / "data")
    assert dataset.num_steps == result.global_step == 400 and dataset.action_layout.kind == "continuous"
    assert np.abs(dataset.actions).max() <= 2.0  # the actions the env received (clipped to the bounds)


def test_an_interrupted_run_writes_what_it_collected(tmp_path: Path) -> None:
    def stop(record: LogRecord) -> None:
        if record.step >= 256:
            raise KeyboardInterrupt

    trainer = make_trainer(TrainConfig(env="CartPole-v1", total_steps=4096, run_dir=str(tmp_path / "run"),
                                       record_dataset=str(tmp_path / "data"), log_interval=0.0, **FAST),
                           callbacks=[stop])
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.dataset_path == tmp_path / "data"
    assert load_dataset(tmp_path / "data").num_steps == trainer.global_step == 256


def test_an_existing_dataset_is_refused_before_training_unless_overwrite(tmp_path: Path) -> None:
    config = TrainConfig(env="CartPole-v1", total_steps=128, record_dataset=str(tmp_path / "data"), **FAST)
    make_trainer(config).train()
    with pytest.raises(APIUsageError, match="already exists"):
        make_trainer(config)
    assert load_dataset(tmp_path / "data").num_steps == 128
    make_trainer(config.replace(total_steps=256, overwrite=True)).train()
    assert load_dataset(tmp_path / "data").num_steps == 256


def test_a_resumed_run_records_its_part_to_a_new_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, first, second = tmp_path / "run", tmp_path / "part1", tmp_path / "part2"
    config = TrainConfig(env="CartPole-v1", total_steps=128, run_dir=str(run), record_dataset=str(first), **FAST)
    make_trainer(config).train()
    resumed = config.replace(total_steps=256, resume=True)
    for same in (resumed, resumed.replace(overwrite=True)):  # overwriting would lose the first part
        with pytest.raises(APIUsageError, match="recorded before the resume point; give the resumed run a new path"):
            make_trainer(same)
    # the command line reuses the saved config, so its default is the same path: refused with the same advice
    args = ["train", "CartPole-v1", "--run-dir", str(run), "--resume", "--total-steps", "256"]
    assert main(args) == 2
    assert "give the resumed run a new path" in capsys.readouterr().err
    assert load_dataset(first).num_steps == 128
    assert main([*args, "--record-dataset", str(second)]) == 0
    assert load_dataset(first).num_steps == 128 and load_dataset(second).num_steps == 128  # from the resume point
    assert load_dataset(first).metadata["global_step"] == 128 and load_dataset(second).metadata["global_step"] == 256
    # the part of an earlier resume is the run's too
    again = ["train", "CartPole-v1", "--run-dir", str(run), "--resume", "--total-steps", "384", "--overwrite"]
    assert main([*again, "--record-dataset", str(second)]) == 2
    assert "give the resumed run a new path" in capsys.readouterr().err
    assert load_dataset(second).num_steps == 128

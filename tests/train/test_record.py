"""record_dataset: random, scripted and trained sources on single-agent, parallel and turn-based envs."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from shoal.datasets import OfflineDataset, load_dataset, save_dataset
from shoal.datasets.recorder import EpisodeRecorder
from shoal.errors import APIUsageError, CheckpointError
from shoal.train import TrainConfig, load_policy_from_checkpoint, train
from shoal.train.record import RecordingInterrupted, record_dataset
from tests.datasets.helpers import assert_same_dataset
from tests.emulation.test_pettingzoo import SpawnEnv
from tests.faults.envs import InterruptAt, interrupted_cartpole

pytestmark = pytest.mark.filterwarnings("ignore:The old environment creation API:DeprecationWarning")

TICTACTOE = "pettingzoo.classic.tictactoe_v3"


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("cartpole")
    train(TrainConfig(env="CartPole-v1", total_steps=8_000, run_dir=str(run_dir), tensorboard=False, seed=0))
    return run_dir


def _episodes(dataset: OfflineDataset) -> list[slice]:
    return [slice(int(a), int(b)) for a, b in zip(dataset.episode_offsets[:-1], dataset.episode_offsets[1:],
                                                  strict=True)]


def test_random_cartpole_records_exactly_the_budget_and_is_reproducible() -> None:
    dataset = record_dataset("random", "CartPole-v1", 1000, seed=0)
    assert dataset.num_steps == 1000 and dataset.metadata["steps"] == 1000
    assert dataset.metadata["env"] == "CartPole-v1" and dataset.metadata["source"] == "random"
    assert 10 < dataset.episode_returns().mean() < 40  # a random CartPole policy lasts about 22 steps
    assert 0.4 < dataset.actions.mean() < 0.6
    assert dataset.truncations[-1] and dataset.terminations[:-1].sum() == dataset.num_episodes - 1
    assert_same_dataset(dataset, record_dataset("random", "CartPole-v1", 1000, seed=0))
    assert not np.array_equal(dataset.actions, record_dataset("random", "CartPole-v1", 1000, seed=1).actions)


def test_a_trained_run_records_better_play_than_random_and_round_trips(cartpole_run: Path, tmp_path: Path) -> None:
    random_return = record_dataset("random", "CartPole-v1", 600, seed=1).episode_returns()[:-1].mean()
    dataset = record_dataset(cartpole_run, steps=600, seed=1)  # the run's env, sampling actions
    assert dataset.metadata["env"] == "CartPole-v1" and dataset.metadata["source"] == str(cartpole_run)
    assert dataset.episode_returns()[:-1].mean() > 2 * random_return
    policy, _, _ = load_policy_from_checkpoint(cartpole_run)
    assert_same_dataset(dataset, record_dataset(policy, "CartPole-v1", 600, seed=1))  # the policy module itself
    noisy = record_dataset(cartpole_run, steps=600, seed=1, epsilon=1.0)  # every decision random
    assert noisy.episode_returns()[:-1].mean() < 40
    path = save_dataset(dataset, tmp_path / "medium")
    assert_same_dataset(dataset, load_dataset(path))


def test_simple_spread_records_one_episode_per_agent_slot(tmp_path: Path) -> None:
    dataset = record_dataset("random", "mpe2.simple_spread_v3", 150, env_kwargs={"max_cycles": 25}, seed=0)
    assert dataset.num_episodes == 6 and dataset.episode_lengths.tolist() == [25] * 6
    assert dataset.agents.tolist() == [0, 1, 2, 0, 1, 2]
    ends = dataset.episode_offsets[1:] - 1
    assert dataset.truncations[ends].all() and not dataset.terminations.any()
    assert dataset.truncations.sum() == 6
    # each slot sees itself: its own velocity and position lead its observation, so slots differ at a step
    first_rows = dataset.observations[dataset.obs_offsets[:3]]
    assert len({row.tobytes() for row in first_rows}) == 3
    assert_same_dataset(dataset, load_dataset(save_dataset(dataset, tmp_path / "spread")))


def test_agents_that_die_store_nothing_after_their_death() -> None:
    dataset = record_dataset("random", "squad", 300, seed=0)  # 3 agents; a wrong echo kills
    deaths = 0
    for steps in _episodes(dataset):
        rewards = dataset.rewards[steps]
        assert (rewards[:-1] == 1.0).all()  # alive while echoing
        if dataset.terminations[steps.stop - 1]:
            deaths += 1
            assert rewards[-1] == -1.0
        else:
            assert rewards[-1] == 1.0 and dataset.truncations[steps.stop - 1] and len(rewards) <= 8
    assert deaths > 0.8 * dataset.num_episodes and set(dataset.agents.tolist()) == {0, 1, 2}


def test_spawned_agents_start_their_episode_at_their_first_decision() -> None:
    """SpawnEnv: two walkers live 4 steps; a child is born every step and dies 2 steps later (the last one is born
    truncated and never acts). A newborn's first reward came before it decided anything: it is not stored."""
    dataset = record_dataset("random", lambda: SpawnEnv(lifetime=2, horizon=4), 26, max_agents=6, seed=0)
    assert dataset.num_episodes == 10  # two games of walker_0, walker_1, child_1, child_2, child_3
    assert dataset.episode_lengths.tolist() == [4, 4, 2, 2, 1] * 2
    assert dataset.agents.tolist() == [0, 1, 2, 3, 4] * 2 and dataset.agent_types.tolist() == [0, 0, 1, 1, 1] * 2
    ends = dataset.episode_offsets[1:] - 1
    assert dataset.terminations[ends].tolist() == [False, False, True, True, False] * 2
    assert dataset.truncations[ends].tolist() == [True, True, False, True, True] * 2
    assert np.array_equal(dataset.rewards, dataset.actions + 0.5)  # each step's own reward, no birth reward
    child_1 = dataset.observations[dataset.obs_offsets[2]: dataset.obs_offsets[3]]
    assert child_1.tolist() == [[1, 0], [2, 1], [3, 2]]  # born at t=1, acts at t=1 and 2, final at t=3


def test_tictactoe_stores_only_each_players_moves_and_the_losers_penalty_on_its_last_move() -> None:
    dataset = record_dataset("random", TICTACTOE, 300, seed=0)
    assert dataset.action_masks is not None and dataset.num_steps == 300
    boards = dataset.observations.reshape(-1, 3, 3, 2).astype(np.int64)
    stones = boards.sum((1, 2, 3))
    obs = dataset.obs_index
    # a move is legal, on a square left free, and the mask lists exactly the free squares
    assert dataset.action_masks[obs, dataset.actions].all()
    assert (dataset.action_masks[obs].sum(1) == 9 - stones[obs]).all()
    wins = losses = 0
    for e, steps in enumerate(_episodes(dataset)):
        player = int(dataset.agents[e])
        moves = stones[obs[steps]]
        assert moves.tolist() == [2 * t + player for t in range(len(moves))]  # its own turns only
        rewards = dataset.rewards[steps]
        assert (rewards[:-1] == 0).all()
        if dataset.terminations[steps.stop - 1]:
            wins += rewards[-1] == 1.0
            losses += rewards[-1] == -1.0
    assert wins == losses > 5  # each lost game: the loser's -1 on its last move, the winner's +1 on its own


def test_a_scripted_solver_draws_against_itself_unless_epsilon_mixes_in_random_moves() -> None:
    solved = record_dataset("solver", TICTACTOE, 200, seed=0)
    assert solved.metadata["source"] == "solver" and not solved.rewards.any()  # perfect play: every game a draw
    mixed = record_dataset("solver", TICTACTOE, 200, seed=0, epsilon=0.5)
    assert mixed.rewards.any() and mixed.metadata["epsilon"] == 0.5
    assert mixed.action_masks[mixed.obs_index, mixed.actions].all()  # random moves are legal moves too


def test_bad_sources_and_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(APIUsageError, match="needs an env"):
        record_dataset("random", steps=10)
    with pytest.raises(APIUsageError, match="steps must be a positive int"):
        record_dataset("random", "CartPole-v1", 0)
    with pytest.raises(APIUsageError, match="epsilon"):
        record_dataset("random", "CartPole-v1", 10, epsilon=1.5)
    with pytest.raises(CheckpointError, match="does not exist"):
        record_dataset(tmp_path / "no-run", steps=10)
    with pytest.raises(APIUsageError, match="heuristic"):
        record_dataset("heuristic", "CartPole-v1", 10)


def test_a_run_records_the_env_kwargs_and_wrappers_it_was_built_with(tmp_path: Path) -> None:
    """Both ways of recording a run (during training, and from its checkpoint afterwards) store the env it played:
    the run's own env_kwargs and SuperSuit wrappers, and no Gymnasium env_spec (the bare registered spec would
    rebuild another env: 500 steps, no wrappers)."""
    run_dir, wrappers = tmp_path / "run", "clip_reward_v0(lower_bound=0, upper_bound=0.5)"
    train(TrainConfig(env="CartPole-v1", env_kwargs={"max_episode_steps": 20}, wrappers=wrappers, total_steps=128,
                      num_envs=2, horizon=64, minibatch_size=64, update_epochs=1, tensorboard=False,
                      run_dir=str(run_dir), record_dataset=str(tmp_path / "during")))
    after = record_dataset(run_dir, steps=100, seed=0)
    for dataset in (load_dataset(tmp_path / "during"), after):
        assert dataset.metadata["env_kwargs"] == {"max_episode_steps": 20}
        assert dataset.metadata["wrappers"] == wrappers
        assert dataset.episode_lengths.max() <= 20 and dataset.rewards.max() == 0.5  # the env it was built as
    raw = json.loads((save_dataset(after, tmp_path / "after") / "data" / "metadata.json").read_text())
    assert "env_spec" not in raw and raw["shoal"]["metadata"]["wrappers"] == wrappers
    assert "env_spec" not in json.loads((tmp_path / "during" / "data" / "metadata.json").read_text())
    # without wrappers a registered id made with keywords is no bare spec either
    plain = record_dataset("random", "CartPole-v1", 30, env_kwargs={"max_episode_steps": 20})
    raw = json.loads((save_dataset(plain, tmp_path / "plain") / "data" / "metadata.json").read_text())
    assert plain.metadata["wrappers"] is None and "env_spec" not in raw


def test_the_metadata_counts_the_steps_stored_not_the_unanswered_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    """A turn-based move still waiting for its outcome when the drain limit is reached is left out: ``steps``
    counts what the dataset holds and ``unanswered_decisions`` what was left out."""
    import shoal.train.record as record_module

    monkeypatch.setattr(record_module, "_DRAIN_STEPS_PER_SLOT", 0)  # no stepping on after the budget
    dataset = record_dataset("random", TICTACTOE, 11, seed=0)
    assert dataset.metadata["unanswered_decisions"] > 0
    assert dataset.metadata["steps"] == dataset.num_steps == 11 - dataset.metadata["unanswered_decisions"]


def test_an_interrupted_recording_keeps_every_decision_made_until_then() -> None:
    with pytest.raises(RecordingInterrupted) as caught:
        record_dataset("random", interrupted_cartpole, 1000, seed=3)
    partial = caught.value.dataset
    assert isinstance(caught.value, KeyboardInterrupt) and caught.value.signal_name == "SIGINT"
    # 149 steps answered; the 150th decision never got its outcome, so it is not stored
    assert partial.num_steps == 149 and partial.metadata["interrupted"] is True
    assert partial.metadata["unanswered_decisions"] == 1
    # the same steps as an uninterrupted recording of the same seed, the running episode ending truncated
    full = record_dataset("random", "CartPole-v1", 149, seed=3)
    np.testing.assert_array_equal(partial.observations, full.observations)
    np.testing.assert_array_equal(partial.actions, full.actions)
    np.testing.assert_array_equal(partial.rewards, full.rewards)
    np.testing.assert_array_equal(partial.terminations, full.terminations)
    assert partial.truncations[-1] and full.metadata["interrupted"] is False


def test_an_interrupt_before_the_first_whole_step_is_a_plain_interrupt() -> None:
    # the first decision never got its outcome: nothing to keep, and Ctrl-C is not a usage error
    with pytest.raises(KeyboardInterrupt) as caught:
        record_dataset("random", lambda: InterruptAt("CartPole-v1", 1), 100, seed=0)
    assert not isinstance(caught.value, RecordingInterrupted)


def test_an_interrupt_while_the_dataset_is_built_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    build = EpisodeRecorder.dataset

    def interrupted(self: EpisodeRecorder, metadata: dict | None = None) -> OfflineDataset:
        signal.raise_signal(signal.SIGINT)  # Ctrl-C while the (complete) recording becomes a dataset
        return build(self, metadata)

    monkeypatch.setattr(EpisodeRecorder, "dataset", interrupted)
    with pytest.raises(RecordingInterrupted) as caught:
        record_dataset("random", "CartPole-v1", 50, seed=0)
    assert caught.value.dataset.num_steps == 50 and caught.value.dataset.metadata["interrupted"] is True

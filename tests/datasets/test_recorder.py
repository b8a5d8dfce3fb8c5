"""EpisodeRecorder: per-slot episodes out of a vector env's results, checked against the env replayed by hand."""

from __future__ import annotations

import signal

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo import ParallelEnv

from shoal import vector
from shoal.datasets import EpisodeRecorder
from shoal.errors import APIUsageError
from shoal.train.runs.resolve import resolve_env
from tests.datasets.helpers import assert_same_dataset

pytestmark = pytest.mark.filterwarnings("ignore:The old environment creation API:DeprecationWarning")


def test_cartpole_episodes_replay_exactly_in_the_raw_env() -> None:
    vec = vector.make(lambda: gym.make("CartPole-v1"), 1, seed=5)
    recorder = EpisodeRecorder(vec.obs_layout, vec.action_layout, vec.num_agents, vec.agents_per_env)
    rng = np.random.default_rng(0)
    rows = np.arange(1)
    obs, _ = vec.reset(5)
    for _ in range(150):
        actions = rng.integers(0, 2, 1)
        recorder.act(rows, obs, actions)
        obs, rewards, terminals, truncations, infos = vec.step(actions)
        recorder.finish(rows, rewards, terminals, truncations, vec.masks, obs, infos)
    vec.close()
    recorder.stop()
    dataset = recorder.dataset({"env": "CartPole-v1"})
    assert dataset.num_steps == 150 and dataset.metadata["unanswered_decisions"] == 0
    # the same actions in a fresh CartPole, reset as the emulator resets it (seeded once, then unseeded)
    env = gym.make("CartPole-v1")
    first, _ = env.reset(seed=5)
    for e in range(dataset.num_episodes):
        steps = range(dataset.episode_offsets[e], dataset.episode_offsets[e + 1])
        rows = dataset.observations[dataset.obs_offsets[e]: dataset.obs_offsets[e + 1]]
        assert np.array_equal(rows[0], first)
        for j, t in enumerate(steps):
            obs, reward, terminated, truncated, _ = env.step(int(dataset.actions[t]))
            assert np.array_equal(rows[j + 1], obs) and reward == dataset.rewards[t]
            assert terminated == dataset.terminations[t]
            assert truncated == dataset.truncations[t] or (e == dataset.num_episodes - 1 and t == steps[-1])
        first, _ = env.reset()
    assert dataset.terminations[:-1].sum() == dataset.num_episodes - 1  # every finished CartPole episode fails
    assert dataset.truncations[-1] and not dataset.terminations[-1]  # the one the budget cut


def test_a_turn_based_move_without_its_outcome_is_left_out_until_answered() -> None:
    vec = vector.make(resolve_env("pettingzoo.classic.tictactoe_v3"), 1, seed=0)
    recorder = EpisodeRecorder(vec.obs_layout, vec.action_layout, vec.num_agents, vec.agents_per_env)
    all_rows = np.arange(2)
    obs, _ = vec.reset(0)
    for move in (0, 4, 8):  # player_1, player_2, player_1
        row = np.flatnonzero(vec.masks)
        recorder.act(row, obs[row], np.array([move]), vec.action_masks[row])
        obs, rewards, terminals, truncations, infos = vec.step(np.full(2, move))
        recorder.finish(all_rows, rewards, terminals, truncations, vec.masks, obs, infos)
    assert recorder.pending.tolist() == [True, False]  # player_1's last move waits for player_2's
    recorder.stop()
    with pytest.raises(APIUsageError, match="stopped"):
        recorder.act(np.array([1]), obs[1:], np.array([2]))
    cut = recorder.dataset()
    assert cut.metadata["unanswered_decisions"] == 1
    assert cut.agents.tolist() == [0, 1] and cut.episode_lengths.tolist() == [1, 1]
    assert cut.truncations.tolist() == [True, True] and not cut.terminations.any()
    # player_1's final observation is the board it made its unanswered move on: its stone and player_2's
    board = cut.observations.reshape(-1, 3, 3, 2)
    assert board[1].sum() == 2 and board[1][..., 0].sum() == 1  # after move 0 and player_2's 4
    assert recorder.dataset().observations.tobytes() == cut.observations.tobytes()  # dataset() changes nothing
    # player_2 moves (not recorded): player_1's move is answered, its episode ends before its next decision
    obs, rewards, terminals, truncations, infos = vec.step(np.full(2, 2))
    recorder.finish(all_rows, rewards, terminals, truncations, vec.masks, obs, infos)
    vec.close()
    answered = recorder.dataset()
    assert answered.metadata["unanswered_decisions"] == 0
    assert answered.agents.tolist() == [0, 1] and answered.episode_lengths.tolist() == [2, 1]
    assert answered.truncations.tolist() == [False, True, True]
    assert np.array_equal(answered.actions, [0, 8, 4])
    # the legal moves stored with each decision: 9, then 7 free squares for player_1
    assert answered.action_masks[answered.obs_index].sum(1).tolist() == [9, 7, 8]


class _VanishEnv(ParallelEnv):
    """Two agents; ``b`` leaves after its second step without a termination or truncation flag (so without a final
    observation); ``a`` truncates after four steps. Observation: ``[t, agent index]``."""

    metadata = {"name": "vanish_v0"}
    possible_agents = ["a", "b"]

    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0, 10, (2,), np.float32)

    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(2)

    def _obs(self, agent: str) -> np.ndarray:
        return np.array([self.t, self.possible_agents.index(agent)], np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.t, self.agents = 0, ["a", "b"]
        return {a: self._obs(a) for a in self.agents}, {}

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        self.t += 1
        if self.t == 2:
            self.agents = ["a"]
        done = self.t >= 4
        out = ({a: self._obs(a) for a in self.agents}, dict.fromkeys(self.agents, 1.0),
               dict.fromkeys(self.agents, False), dict.fromkeys(self.agents, done), {})
        if done:
            self.agents = []
        return out


def test_an_agent_gone_without_a_final_observation_ends_on_its_last_one() -> None:
    vec = vector.make(_VanishEnv, 1, seed=0)
    recorder = EpisodeRecorder(vec.obs_layout, vec.action_layout, vec.num_agents, vec.agents_per_env)
    rows = np.arange(2)
    obs, _ = vec.reset(0)
    for _ in range(4):
        live = np.flatnonzero(vec.masks)
        recorder.act(live, obs[live], np.zeros(len(live), np.int64))
        obs, rewards, terminals, truncations, infos = vec.step(np.zeros(2, np.int64))
        recorder.finish(rows, rewards, terminals, truncations, vec.masks, obs, infos)
    vec.close()
    dataset = recorder.dataset()
    assert dataset.metadata["missing_final_observations"] == 1
    assert dataset.agents.tolist() == [0, 1] and dataset.episode_lengths.tolist() == [4, 2]
    b = dataset.observations[dataset.obs_offsets[1]: dataset.obs_offsets[2]]
    assert b.tolist() == [[0, 1], [1, 1], [1, 1]]  # its last observation stands in for the final one
    assert dataset.truncations.tolist() == [False, False, False, True, False, True]


def _record_tictactoe(steps: int, cut: str | None = None, last_finish: bool = True) -> tuple[EpisodeRecorder, bool]:
    """Random legal moves in 2 tic-tac-toe envs for ``steps`` steps (the last one's result not applied unless
    ``last_finish``); with ``cut``, a real SIGINT is raised inside the last step's ``act`` or ``finish``, between
    two of the recorder's updates. Returns the recorder and whether the recording was interrupted."""
    vec = vector.make(resolve_env("pettingzoo.classic.tictactoe_v3"), 2, seed=0)
    recorder = EpisodeRecorder(vec.obs_layout, vec.action_layout, vec.num_agents, vec.agents_per_env)
    rng = np.random.default_rng(0)
    every_row = np.arange(vec.num_agents)
    obs, _ = vec.reset(0)
    try:
        for step in range(steps):
            live = np.flatnonzero(vec.masks)
            legal = vec.action_masks[live]
            actions = np.array([rng.choice(np.flatnonzero(m)) for m in legal])
            last = step == steps - 1
            if last and cut == "act":  # after the step's entries are counted, before its observations are stored
                _interrupt_once(recorder, "_obs")
            recorder.act(live, obs[live], actions, legal)
            full = np.zeros(vec.num_agents, np.int64)
            full[live] = actions
            obs, rewards, terminals, truncations, infos = vec.step(full)
            if last and cut == "finish":  # after the rewards are added, before the answered moves are marked
                _interrupt_once(recorder, "_last_obs")
            if last_finish or not last:
                recorder.finish(every_row, rewards, terminals, truncations, vec.masks, obs, infos)
    except KeyboardInterrupt:
        return recorder, True
    finally:
        vec.close()
    return recorder, False


def _interrupt_once(recorder: EpisodeRecorder, attribute: str) -> None:
    """Make the recorder's next use of its ``attribute`` raise SIGINT (Ctrl-C) first."""
    inner = getattr(recorder, attribute)

    def interrupt() -> None:
        setattr(recorder, attribute, inner)
        signal.raise_signal(signal.SIGINT)  # KeyboardInterrupt at the next bytecode, unless held

    class Interrupting:
        def __getattr__(self, name: str) -> object:
            interrupt()
            return getattr(inner, name)

        def __getitem__(self, key: object) -> object:
            interrupt()
            return inner[key]

        def __setitem__(self, key: object, value: object) -> None:
            interrupt()
            inner[key] = value

    setattr(recorder, attribute, Interrupting())


@pytest.mark.parametrize("cut", ["act", "finish"])
def test_ctrl_c_in_the_middle_of_a_step_applies_the_step_whole(cut: str) -> None:
    """Ctrl-C between two of a step's updates is delivered once the step is applied: the dataset saved after the
    interrupt is the one an uninterrupted recording of the same steps gives (a half-applied step misaligned it)."""
    interrupted, stopped = _record_tictactoe(6, cut)
    whole, _ = _record_tictactoe(6, last_finish=cut == "finish")  # the interrupt stops the loop after the cut call
    assert stopped
    for recorder in (interrupted, whole):
        recorder.stop()
    saved, expected = interrupted.dataset(), whole.dataset()
    assert_same_dataset(saved, expected)
    assert saved.metadata == expected.metadata

"""PettingZooEmulator in lock step with raw PettingZoo envs (parallel and AEC), plus slot-semantics edge cases."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv

from shoal.emulation import ActionLayout, Buffers, PettingZooEmulator, compile_layout, emulate, flatten
from shoal.emulation.base import split_action_mask
from shoal.errors import APIUsageError, CapacityError, EnvError, SpaceError

# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def expected_row(emu: PettingZooEmulator, raw: Any, agent: str, obs: Any) -> np.ndarray:
    """The flat row an agent's raw observation should produce: flattened (mask removed), zero-padded."""
    space, _ = split_action_mask(raw.observation_space(agent))
    row = np.zeros(emu.obs_layout.flat_size, emu.obs_layout.flat_dtype)
    own = compile_layout(space)
    flatten(own, obs, out=row[: own.flat_size])
    return row


def raw_mask(obs: Any, info: Any) -> np.ndarray | None:
    if isinstance(obs, dict) and "action_mask" in obs:
        return np.asarray(obs["action_mask"]).astype(bool)
    if isinstance(info, dict) and "action_mask" in info:
        return np.asarray(info["action_mask"]).astype(bool)
    return None


def flat_actions(emu: PettingZooEmulator, raw: Any, native: dict[str, Any], slot_of: dict[str, int]) -> np.ndarray:
    """Flat action batch with the live agents' actions in their slots and junk in every other row."""
    layout = emu.action_layout
    junk = 97 if layout.kind in ("discrete", "multi_discrete") else 1e6
    out = np.full((emu.num_agents, *layout.flat_shape), junk, layout.flat_dtype)
    for agent, action in native.items():
        out[slot_of[agent]] = ActionLayout(raw.action_space(agent)).from_native(action)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Parallel envs in lock step
# ----------------------------------------------------------------------------------------------------------------


def run_parallel_lock_step(make: Callable[[], ParallelEnv], seed: int, steps: int,
                           max_agents: int | None = None) -> dict[str, int]:
    """Step a raw parallel env and its emulation side by side; assert every row, reward, flag and info."""
    raw = make()
    emu = PettingZooEmulator(make(), max_agents=max_agents)
    n = emu.num_agents
    assert emu.is_parallel
    slot_of = {agent: i for i, agent in enumerate(raw.possible_agents)}  # stable ids
    groups = list(dict.fromkeys(a.rsplit("_", 1)[0] for a in raw.possible_agents))
    expected_types = [groups.index(a.rsplit("_", 1)[0]) for a in raw.possible_agents]
    expected_types += [-1] * (n - len(expected_types))
    for agent in raw.possible_agents:
        raw.action_space(agent).seed(seed + slot_of[agent])

    def check_episode_start(raw_obs: dict, raw_infos: dict, obs: np.ndarray, infos: list, key: str | None) -> None:
        assert emu.masks.tolist() == [emu.slot_agents[i] in raw.agents for i in range(n)]
        assert emu.slot_agents == [*raw.possible_agents, *[None] * (n - len(raw.possible_agents))]
        assert emu.agent_types.tolist() == expected_types
        for i in range(n):
            agent = emu.slot_agents[i]
            if agent in raw.agents:
                np.testing.assert_array_equal(obs[i], expected_row(emu, raw, agent, raw_obs[agent]))
                info = infos[i] if key is None else infos[i][key]
                assert info == raw_infos.get(agent, {})
            else:
                assert not obs[i].any(), "absent and padded slots are zero-filled"

    raw_obs, raw_infos = raw.reset(seed=seed)
    obs, infos = emu.reset(seed=seed)
    check_episode_start(raw_obs, raw_infos, obs, infos, None)
    ended: set[str] = set()
    returns: dict[str, float] = defaultdict(float)
    lengths: dict[str, int] = defaultdict(int)
    counts = {"deaths": 0, "mid_episode_deaths": 0, "episodes": 0}
    for _ in range(steps):
        native = {agent: raw.action_space(agent).sample() for agent in raw.agents}
        actions = flat_actions(emu, raw, native, slot_of)
        live_before = emu.masks.copy()
        raw_obs, raw_rewards, raw_terms, raw_truncs, raw_infos = raw.step(native)
        obs, rewards, terminals, truncations, infos = emu.step(actions)
        assert rewards.dtype == np.float32 and terminals.dtype == np.bool_ and len(infos) == n
        episode_over = not raw.agents
        for i in np.flatnonzero(~live_before):
            assert (rewards[i], terminals[i], truncations[i]) == (0.0, False, False), f"slot {i} was masked"
            if not episode_over:
                assert not emu.masks[i] and not obs[i].any()
        for agent in native:
            i = slot_of[agent]
            returns[agent] += raw_rewards[agent]
            lengths[agent] += 1
            assert rewards[i] == np.float32(raw_rewards[agent]), agent
            assert (terminals[i], truncations[i]) == (raw_terms[agent], raw_truncs[agent]), agent
            if raw_terms[agent] or raw_truncs[agent]:
                assert agent not in ended, f"{agent} reported twice"
                ended.add(agent)
                counts["deaths"] += 1
                np.testing.assert_array_equal(infos[i]["final_observation"],
                                              expected_row(emu, raw, agent, raw_obs[agent]))
                assert infos[i]["episode"] == pytest.approx({"return": returns.pop(agent),
                                                             "length": lengths.pop(agent)})
                if not episode_over:
                    counts["mid_episode_deaths"] += 1
                    assert not emu.masks[i] and not obs[i].any(), f"dead {agent} is masked and zero-filled"
            else:
                assert emu.masks[i]
                np.testing.assert_array_equal(obs[i], expected_row(emu, raw, agent, raw_obs[agent]))
                assert {k: v for k, v in infos[i].items() if k != "reset_info"} == raw_infos.get(agent, {})
        if episode_over:
            counts["episodes"] += 1
            ended.clear()
            raw_obs, raw_infos = raw.reset()
            check_episode_start(raw_obs, raw_infos, obs, infos, "reset_info")
        else:
            assert emu.masks.tolist() == [emu.slot_agents[i] in raw.agents for i in range(n)]
    emu.close()
    return counts


def test_knights_archers_zombies_deaths_are_reported_once_then_masked() -> None:
    from pettingzoo.butterfly import knights_archers_zombies_v11

    def make() -> ParallelEnv:
        return knights_archers_zombies_v11.parallel_env(max_cycles=150, spawn_delay=3, max_zombies=20,
                                                       line_death=True)

    counts = run_parallel_lock_step(make, seed=2, steps=160)
    assert counts["mid_episode_deaths"] >= 2 and counts["episodes"] >= 1, counts


def test_simple_spread_lock_step_and_auto_reset() -> None:
    from mpe2 import simple_spread_v3

    counts = run_parallel_lock_step(lambda: simple_spread_v3.parallel_env(max_cycles=6), seed=3, steps=20)
    assert counts["episodes"] == 3


def test_simple_spread_continuous_actions() -> None:
    from mpe2 import simple_spread_v3

    make = lambda: simple_spread_v3.parallel_env(max_cycles=4, continuous_actions=True)  # noqa: E731
    counts = run_parallel_lock_step(make, seed=4, steps=9)
    assert counts["episodes"] == 2


def test_simple_tag_heterogeneous_observations_are_padded() -> None:
    from mpe2 import simple_tag_v3

    counts = run_parallel_lock_step(lambda: simple_tag_v3.parallel_env(max_cycles=5), seed=5, steps=12)
    assert counts["episodes"] == 2
    emu = PettingZooEmulator(simple_tag_v3.parallel_env(max_cycles=5))
    assert emu.agent_groups == ["adversary", "agent"]
    assert {g: layout.flat_size for g, layout in emu.obs_layouts.items()} == {"adversary": 16, "agent": 14}
    assert emu.single_observation_space.shape == (16,)
    obs, _ = emu.reset(seed=0)
    assert emu.agent_types.tolist() == [0, 0, 0, 1]
    assert obs[3, :14].any() and not obs[3, 14:].any(), "the good agent's row is zero-padded"
    assert emu.single_observation_space.contains(obs[3])


def test_pursuit_lock_step() -> None:
    from pettingzoo.sisl import pursuit_v5

    counts = run_parallel_lock_step(lambda: pursuit_v5.parallel_env(max_cycles=8), seed=6, steps=10)
    assert counts["episodes"] == 1


def test_max_agents_larger_than_possible_agents_pads() -> None:
    from mpe2 import simple_spread_v3

    counts = run_parallel_lock_step(lambda: simple_spread_v3.parallel_env(max_cycles=3), seed=7, steps=7,
                                    max_agents=5)
    assert counts["episodes"] == 2
    emu = PettingZooEmulator(simple_spread_v3.parallel_env(max_cycles=3), max_agents=5)
    obs, infos = emu.reset(seed=0)
    assert emu.masks.tolist() == [True, True, True, False, False]
    assert emu.slot_agents == ["agent_0", "agent_1", "agent_2", None, None]
    assert emu.agent_types.tolist() == [0, 0, 0, -1, -1]
    assert not obs[3:].any() and infos[3:] == [{}, {}]
    assert emu.action_masks[3:].all(), "padded rows keep valid (all True) action masks"


# ----------------------------------------------------------------------------------------------------------------
# AEC envs in lock step
# ----------------------------------------------------------------------------------------------------------------


def run_aec_lock_step(make: Callable[[], AECEnv], seed: int, steps: int) -> dict[str, Any]:
    """Drive a raw AEC env (the standard ``last()``/``step`` loop) and its emulation with the same actions.

    The oracle for rewards is ``raw.last()``: the reward an agent collected since its previous turn. Every
    emulated reward must equal it for the selected live agent and for each agent reported finished.
    """
    raw = make()
    emu = PettingZooEmulator(make())
    n = emu.num_agents
    assert not emu.is_parallel
    slot_of = {agent: i for i, agent in enumerate(raw.possible_agents)}
    rng = np.random.default_rng(seed)
    for agent in raw.possible_agents:
        raw.action_space(agent).seed(seed + slot_of[agent])
    raw_returns: dict[str, float] = defaultdict(float)
    emu_returns: dict[str, float] = defaultdict(float)
    lengths: dict[str, int] = defaultdict(int)
    finished: list[dict[str, float]] = []  # per episode: raw return per agent
    log: dict[str, Any] = {"episodes": finished, "final_rewards": [], "mid_episode_deaths": 0}

    def check_turn(obs: np.ndarray, rewards: np.ndarray, expected: np.ndarray) -> Any:
        agent = raw.agent_selection
        s = slot_of[agent]
        raw_obs, reward, term, trunc, info = raw.last()
        assert not (term or trunc)
        raw_returns[agent] += reward
        expected[s] += reward
        assert emu.masks.tolist() == [i == s for i in range(n)], "only the agent whose turn it is acts"
        np.testing.assert_array_equal(obs[s], expected_row(emu, raw, agent, raw_obs))
        assert not np.delete(obs, s, axis=0).any(), "waiting agents' rows are zero-filled"
        mask = raw_mask(raw_obs, info)
        if emu.action_masks is not None:
            np.testing.assert_array_equal(emu.action_masks[s], True if mask is None else mask)
            assert np.delete(emu.action_masks, s, axis=0).all()
        np.testing.assert_array_equal(rewards, expected.astype(np.float32))
        return mask

    raw.reset(seed=seed)
    obs, infos = emu.reset(seed=seed)
    assert emu.slot_agents == list(raw.possible_agents)
    mask = check_turn(obs, emu.buffers.rewards, np.zeros(n))
    for _ in range(steps):
        agent = raw.agent_selection
        action = rng.choice(np.flatnonzero(mask)) if mask is not None else raw.action_space(agent).sample()
        actions = flat_actions(emu, raw, {agent: action}, slot_of)
        raw.step(action)
        obs, rewards, terminals, truncations, infos = emu.step(actions)
        lengths[agent] += 1
        expected = np.zeros(n)
        expected_terms = np.zeros(n, bool)
        expected_truncs = np.zeros(n, bool)
        episode_slots = list(raw.possible_agents)
        while raw.agents and (raw.terminations[raw.agent_selection] or raw.truncations[raw.agent_selection]):
            dead = raw.agent_selection
            d = slot_of[dead]
            raw_obs, reward, term, trunc, _ = raw.last()
            raw_returns[dead] += reward
            expected[d] = reward
            expected_terms[d], expected_truncs[d] = term, trunc
            np.testing.assert_array_equal(infos[d]["final_observation"], expected_row(emu, raw, dead, raw_obs))
            assert infos[d]["episode"] == pytest.approx({"return": raw_returns[dead], "length": lengths[dead]})
            raw.step(None)
        episode_over = not raw.agents
        if not episode_over:
            log["mid_episode_deaths"] += int(expected_terms.sum() + expected_truncs.sum())
        for i, a in enumerate(episode_slots):
            emu_returns[a] += float(rewards[i])
        if episode_over:
            log["final_rewards"].append(dict(zip(episode_slots, rewards.tolist(), strict=True)))
            finished.append(dict(raw_returns))
            assert dict(emu_returns) == pytest.approx(dict(raw_returns)), "per-agent returns match the raw env"
            raw_returns.clear()
            emu_returns.clear()
            lengths.clear()
            raw.reset()
            assert all("reset_info" in infos[slot_of[a]] for a in raw.agents)
        np.testing.assert_array_equal(terminals, expected_terms)
        np.testing.assert_array_equal(truncations, expected_truncs)
        # After an auto-reset the new episode's first agent has earned nothing yet (last() gives 0), so the
        # rewards still describe the finished episode.
        mask = check_turn(obs, rewards, expected)
    emu.close()
    return log


@pytest.mark.parametrize("game", ["connect_four_v3", "tictactoe_v3"])
def test_board_games_deliver_end_rewards_to_both_players(game: str) -> None:
    import importlib

    module = importlib.import_module(f"pettingzoo.classic.{game}")
    log = run_aec_lock_step(module.env, seed=8, steps=150)
    assert len(log["episodes"]) >= 4
    outcomes = set()
    for final, returns in zip(log["final_rewards"], log["episodes"], strict=True):
        assert final == returns, "both players' end rewards arrive in the episode's last step"
        assert sorted(final.values()) in ([-1.0, 1.0], [0.0, 0.0])
        outcomes.add(tuple(sorted(final.values())))
    assert (-1.0, 1.0) in outcomes


def test_connect_four_turns_masks_and_auto_reset() -> None:
    from pettingzoo.classic import connect_four_v3

    emu = emulate(connect_four_v3.env())
    assert isinstance(emu, PettingZooEmulator) and emu.action_masks.shape == (2, 7)
    assert "action_mask" not in emu.obs_layout.space.spaces
    emu.reset(seed=0)
    assert emu.masks.tolist() == [True, False]
    # player_0 stacks column 0, player_1 column 1: player_0 wins on its 4th move.
    for column in [0, 1, 0, 1, 0, 1]:
        obs, rewards, terminals, _, _ = emu.step(np.array([column, column], np.int64))
        assert not rewards.any() and not terminals.any()
    assert emu.masks.tolist() == [True, False]
    obs, rewards, terminals, truncations, infos = emu.step(np.array([0, 99], np.int64))
    assert rewards.tolist() == [1.0, -1.0] and terminals.tolist() == [True, True] and not truncations.any()
    assert infos[0]["episode"] == {"return": 1.0, "length": 4}
    assert infos[1]["episode"] == {"return": -1.0, "length": 3}
    assert emu.masks.tolist() == [True, False], "terminals & masks: row 0 already holds the next episode"
    assert not obs[0].any() and emu.action_masks[0].all(), "an empty board"
    final = infos[0]["final_observation"].reshape(6, 7, 2)
    assert final[:, 0, 0].sum() == 4
    # Filling column 0 makes it illegal for the player whose turn it is.
    for _ in range(6):
        emu.step(np.array([0, 0], np.int64))
    assert emu.masks.tolist() == [True, False] and emu.action_masks[0].tolist() == [False] + [True] * 6
    with pytest.raises(APIUsageError, match=r"action 7 for agent 'player_0' \(slot 0\)"):
        emu.step(np.array([7, 0], np.int64))
    # Action masks are advice, not enforced: the env's own rule (TerminateIllegalWrapper) ends the game and its
    # -1 reaches the offender through env.rewards.
    obs, rewards, terminals, truncations, infos = emu.step(np.array([0, 0], np.int64))
    assert rewards.tolist() == [-1.0, 0.0] and terminals.all() and truncations.all()
    assert infos[0]["episode"] == {"return": -1.0, "length": 4} and emu.masks.tolist() == [True, False]


def test_wrapper_that_rewrites_rewards_is_honoured() -> None:
    supersuit = pytest.importorskip("supersuit")
    from pettingzoo.classic import tictactoe_v3

    log = run_aec_lock_step(lambda: supersuit.reward_lambda_v0(tictactoe_v3.env(), lambda r: 2 * r), seed=1,
                            steps=60)
    assert {tuple(sorted(r.values())) for r in log["episodes"]} & {(-2.0, 2.0)}


def test_simple_spread_aec_delays_rewards_to_the_next_turn() -> None:
    from mpe2 import simple_spread_v3

    log = run_aec_lock_step(lambda: simple_spread_v3.env(max_cycles=4), seed=9, steps=30)
    assert len(log["episodes"]) >= 2


def test_knights_archers_zombies_aec() -> None:
    from pettingzoo.butterfly import knights_archers_zombies_v11

    make = lambda: knights_archers_zombies_v11.env(max_cycles=100, spawn_delay=3, line_death=True)  # noqa: E731
    log = run_aec_lock_step(make, seed=0, steps=400)
    assert len(log["episodes"]) >= 1 and log["mid_episode_deaths"] >= 1, log
    assert sum(log["episodes"][0].values()) > 0, "some zombie kills were rewarded"


# ----------------------------------------------------------------------------------------------------------------
# Tiny custom envs: spawning agents, heterogeneous actions, broken observations
# ----------------------------------------------------------------------------------------------------------------


class SpawnEnv(ParallelEnv):
    """Walkers that live until ``horizon``; a child spawns every step and dies ``lifetime`` steps later."""

    metadata = {"name": "spawn_v0"}
    render_mode = None

    def __init__(self, initial: tuple[str, ...] = ("walker_0", "walker_1"), lifetime: int = 2, horizon: int = 4,
                 bad_first_obs: bool = False) -> None:
        self.possible_agents = ["walker_0", "walker_1"]
        self.initial = list(initial)
        self.lifetime = lifetime
        self.horizon = horizon
        self.bad_first_obs = bad_first_obs
        self._obs_space = spaces.Box(-10, 10, (2,), np.float32)
        self._act_space = spaces.Discrete(3)
        self.received: list[dict[str, Any]] = []

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_space

    def _obs(self, agent: str) -> np.ndarray:
        return np.array([self.t, self.t - self.born[agent]], np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.t = 0
        self.agents = list(self.initial)
        self.born = dict.fromkeys(self.agents, 0)
        value = np.full(2, 99.0, np.float32) if self.bad_first_obs else None
        return {a: self._obs(a) if value is None else value for a in self.agents}, {a: {"t": 0} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        self.received.append(dict(actions))
        assert set(actions) == set(self.agents)
        self.t += 1
        child = f"child_{self.t}"
        self.born[child] = self.t
        acting = [*self.agents, child]
        terms = {a: a.startswith("child") and self.t - self.born[a] >= self.lifetime for a in acting}
        truncs = {a: self.t >= self.horizon for a in acting}
        rewards = {a: float(actions.get(a, 0)) + 0.5 for a in acting}
        obs = {a: self._obs(a) for a in acting}
        infos = {a: {"t": self.t} for a in acting}
        self.agents = [a for a in acting if not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, infos


def test_spawned_agents_take_free_slots_and_keep_them() -> None:
    env = PettingZooEmulator(SpawnEnv(lifetime=2, horizon=4), max_agents=6)
    obs, infos = env.reset(seed=0)
    assert env.slot_agents == ["walker_0", "walker_1", None, None, None, None] and infos[0] == {"t": 0}
    env.step(np.array([1, 2, 0, 0, 0, 0]))
    assert env.slot_agents[:3] == ["walker_0", "walker_1", "child_1"]
    assert env.masks.tolist() == [True, True, True, False, False, False]
    assert env.agent_types.tolist() == [0, 0, 1, -1, -1, -1] and env.agent_groups == ["walker", "child"]
    assert env.buffers.rewards.tolist() == [1.5, 2.5, 0.5, 0, 0, 0], "a newborn's reward is reported, not acted for"
    np.testing.assert_array_equal(env.buffers.obs[2], [1, 0])
    env.step(np.array([0, 0, 2, 9, 9, 9]))
    assert env.env.received[-1] == {"walker_0": 0, "walker_1": 0, "child_1": 2}
    assert env.slot_agents[:4] == ["walker_0", "walker_1", "child_1", "child_2"]
    obs, rewards, terminals, truncations, infos = env.step(np.array([0, 0, 1, 1, 9, 9]))
    # child_1 (age 2) dies: reported once, then masked; its slot is kept for the episode, child_3 takes slot 4.
    assert terminals.tolist() == [False, False, True, False, False, False] and rewards[2] == 1.5
    np.testing.assert_array_equal(infos[2]["final_observation"], [3, 2])
    assert infos[2]["episode"] == {"return": 0.5 + 2.5 + 1.5, "length": 2}
    assert env.slot_agents[:5] == ["walker_0", "walker_1", "child_1", "child_2", "child_3"]
    assert env.masks.tolist() == [True, True, False, True, True, False] and not obs[2].any()
    obs, rewards, terminals, truncations, infos = env.step(np.array([0, 0, 99, 1, 1, 9]))
    # horizon: every live agent truncates; child_4 is born truncated; the env resets with fresh slots.
    assert truncations.tolist() == [True, True, False, True, True, True]
    assert terminals.tolist() == [False, False, False, True, False, False], "child_2 dies of old age too"
    assert rewards[2] == 0.0 and infos[2] == {}
    assert env.slot_agents == ["walker_0", "walker_1", None, None, None, None]
    assert env.masks.tolist() == [True, True, False, False, False, False] and not obs[2:].any()
    assert infos[0]["reset_info"] == {"t": 0} and "reset_info" not in infos[5]
    assert infos[5]["episode"] == {"return": 0.5, "length": 0}, "child_4 was born truncated and never acted"
    np.testing.assert_array_equal(infos[5]["final_observation"], [4, 0])


def test_spawned_agents_fall_back_to_unused_reserved_slots() -> None:
    env = PettingZooEmulator(SpawnEnv(initial=("walker_0",), lifetime=5, horizon=9), max_agents=4)
    env.reset(seed=0)
    assert env.masks.tolist() == [True, False, False, False]
    env.step(np.zeros(4, np.int64))
    env.step(np.zeros(4, np.int64))
    assert env.slot_agents == ["walker_0", None, "child_1", "child_2"], "free slots beyond possible_agents first"
    env.step(np.zeros(4, np.int64))
    assert env.slot_agents == ["walker_0", "child_3", "child_1", "child_2"]
    with pytest.raises(CapacityError, match=r"'child_4'.*max_agents=4.*raise max_agents"):
        env.step(np.zeros(4, np.int64))


def test_more_live_agents_than_slots_raises() -> None:
    with pytest.raises(CapacityError, match=r"'walker_1'.*max_agents=1"):
        PettingZooEmulator(SpawnEnv(), max_agents=1).reset(seed=0)


class MixedEnv(ParallelEnv):
    """Agents with different action spaces (and optionally different observation spaces)."""

    metadata = {"name": "mixed_v0"}

    def __init__(self, action_spaces: dict[str, spaces.Space], obs_spaces: dict[str, spaces.Space] | None = None):
        self.possible_agents = list(action_spaces)
        self._act = action_spaces
        self._obs = obs_spaces or dict.fromkeys(action_spaces, spaces.Box(-1, 1, (3,), np.float32))
        self.received: list[dict[str, Any]] = []

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._act[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.agents = list(self.possible_agents)
        return {a: self._obs[a].high.copy() for a in self.agents}, {}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        self.received.append(actions)
        for agent, action in actions.items():
            assert self._act[agent].contains(action), (agent, action)
        obs = {a: self._obs[a].low.copy() for a in self.agents}
        zeros = dict.fromkeys(self.agents, 0.0)
        false = dict.fromkeys(self.agents, False)
        return obs, zeros, false, false, {}


def test_heterogeneous_discrete_actions_are_padded_and_masked() -> None:
    env = PettingZooEmulator(MixedEnv({"scout_0": spaces.Discrete(3), "tank_0": spaces.Discrete(5, start=1)}))
    assert env.single_action_space == spaces.Discrete(5)
    env.reset(seed=0)
    assert env.action_masks.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    env.step(np.array([2, 4]))
    assert env.env.received[-1] == {"scout_0": 2, "tank_0": 5}
    with pytest.raises(APIUsageError, match=r"action 3 for agent 'scout_0' \(slot 0\).*Discrete\(3\)"):
        env.step(np.array([3, 0]))


def test_mixed_discrete_actions_pad_to_multi_discrete() -> None:
    env = PettingZooEmulator(MixedEnv({"a_0": spaces.MultiDiscrete([2, 4]), "b_0": spaces.Discrete(3)}))
    assert env.single_action_space == spaces.MultiDiscrete([3, 4])
    env.reset(seed=0)
    # a_0: choices 0..1 of entry 0, 0..3 of entry 1; b_0: 0..2 of entry 0, only 0 of the padded entry 1.
    assert env.action_masks.tolist() == [[True, True, False, True, True, True, True],
                                         [True, True, True, True, False, False, False]]
    env.step(np.array([[1, 3], [2, 0]]))
    received = env.env.received[-1]
    assert received["a_0"].tolist() == [1, 3] and int(received["b_0"]) == 2
    with pytest.raises(APIUsageError, match=r"agent 'b_0'.*below \[3, 1\]"):
        env.step(np.array([[1, 3], [2, 1]]))


def test_heterogeneous_box_actions_pad_and_ignore_extra_entries() -> None:
    env = PettingZooEmulator(MixedEnv({"arm_0": spaces.Box(-1, 1, (2,), np.float32),
                                       "leg_0": spaces.Box(-2, 2, (3,), np.float32)}))
    assert env.single_action_space.shape == (3,) and env.action_masks is None
    env.reset(seed=0)
    env.step(np.array([[0.5, -0.5, 123.0], [1.0, 2.0, -2.0]], np.float32))
    received = env.env.received[-1]
    assert received["arm_0"].tolist() == [0.5, -0.5] and received["leg_0"].tolist() == [1.0, 2.0, -2.0]


def test_padded_observation_space_is_the_union_and_holds_the_zero_padding() -> None:
    narrow, wide = spaces.Box(1, 2, (2,), np.float32), spaces.Box(-3, 5, (3,), np.float32)
    env = PettingZooEmulator(MixedEnv(dict.fromkeys(["a_0", "b_0"], spaces.Discrete(2)), {"a_0": narrow, "b_0": wide}))
    flat = env.single_observation_space
    assert flat.low.tolist() == [-3, -3, -3] and flat.high.tolist() == [5, 5, 5]
    env = PettingZooEmulator(MixedEnv(dict.fromkeys(["a_0", "b_0"], spaces.Discrete(2)),
                                      {"a_0": narrow, "b_0": spaces.Box(1.5, 4, (3,), np.float32)}))
    flat = env.single_observation_space
    assert flat.low.tolist() == [1, 1, 0] and flat.high.tolist() == [4, 4, 4]
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == [[2, 2, 0], [4, 4, 4]] and all(flat.contains(row) for row in obs)
    obs, *_ = env.step(np.array([0, 1]))
    assert obs.tolist() == [[1, 1, 0], [1.5, 1.5, 1.5]]


def test_incompatible_spaces_name_both_agents() -> None:
    box = spaces.Box(-1, 1, (3,), np.float32)
    with pytest.raises(SpaceError, match=r"'a_0' and 'b_0'.*action spaces.*wrapper|'a_0' and 'b_0'"):
        PettingZooEmulator(MixedEnv({"a_0": spaces.Discrete(3), "b_0": box}))
    with pytest.raises(SpaceError, match=r"agents 'a_0' and 'b_0' have different observation spaces"):
        PettingZooEmulator(MixedEnv({"a_0": spaces.Discrete(3), "b_0": spaces.Discrete(3)},
                                    {"a_0": box, "b_0": spaces.Box(0, 1, (2, 2), np.float32)}))


def test_lifecycle_and_action_shape_errors() -> None:
    from pettingzoo.classic import tictactoe_v3

    env = PettingZooEmulator(tictactoe_v3.env())
    with pytest.raises(APIUsageError, match=r"before reset\(\)"):
        env.step(np.zeros(2, np.int64))
    env.reset(seed=0)
    with pytest.raises(APIUsageError, match=r"shape \(3,\).*'player_1', 'player_2'"):
        env.step(np.zeros(3, np.int64))
    with pytest.raises(APIUsageError, match=r"action 9 for agent 'player_1'"):
        env.step(np.array([9, 0]))
    env.close()
    with pytest.raises(APIUsageError, match=r"after close\(\)"):
        env.step(np.zeros(2, np.int64))
    with pytest.raises(APIUsageError, match=r"after close\(\)"):
        env.reset()
    with pytest.raises(APIUsageError, match="ParallelEnv or AECEnv"):
        PettingZooEmulator(object())


def test_first_observation_outside_its_space_names_the_agent() -> None:
    with pytest.raises(EnvError, match=r"agent 'walker_0'.*outside"):
        PettingZooEmulator(SpawnEnv(bad_first_obs=True)).reset(seed=0)
    PettingZooEmulator(SpawnEnv(bad_first_obs=True), check_observations=False).reset(seed=0)


def test_writes_into_buffers_it_is_handed() -> None:
    from mpe2 import simple_tag_v3

    env = PettingZooEmulator(simple_tag_v3.parallel_env(max_cycles=3))
    big = {name: np.zeros((2, *shape), dtype) for name, (shape, dtype) in env.buffer_spec().items()}
    env.attach(Buffers(**{name: array[1] for name, array in big.items()}))
    obs, _ = env.reset(seed=0)
    assert np.shares_memory(obs, big["obs"]) and big["obs"][1].any() and not big["obs"][0].any()
    assert big["masks"][1].all() and big["agent_types"][1].tolist() == [0, 0, 0, 1]


def test_a_pickled_aec_emulator_continues_exactly_like_the_original() -> None:
    """PettingZoo envs pickle as their constructor call (EzPickle): shoal's snapshot pickler keeps their state."""
    from pettingzoo.classic import connect_four_v3

    from shoal.vector.snapshot import dumps_env, loads_env

    env = PettingZooEmulator(connect_four_v3.env())
    env.reset(seed=1)
    rng = np.random.default_rng(0)

    def legal() -> np.ndarray:
        return np.array([rng.choice(np.flatnonzero(row)) if row.any() else 0 for row in env.action_masks])

    for _ in range(6):
        env.step(legal())
    copy_ = loads_env(dumps_env(env))
    for _ in range(80):  # crosses episode ends
        actions = legal()
        mine, theirs = env.step(actions), copy_.step(actions)
        for a, b in zip(mine[:4], theirs[:4], strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(env.masks, copy_.masks)
        np.testing.assert_array_equal(env.action_masks, copy_.action_masks)


class _BadReward(SpawnEnv):
    """SpawnEnv whose step gives agent ``who`` the reward ``bad``."""

    def __init__(self, bad: Any, who: str) -> None:
        super().__init__()
        self.bad, self.who = bad, who

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        obs, rewards, terms, truncs, infos = super().step(actions)
        rewards[self.who] = self.bad
        return obs, rewards, terms, truncs, infos


@pytest.mark.parametrize("who", ["walker_1", "child_1"], ids=["live", "spawned"])
@pytest.mark.parametrize("bad", [None, "3", np.array([1.0, 2.0]), 1j], ids=["none", "str", "vector", "complex"])
def test_a_reward_that_is_not_one_number_is_named_with_its_agent(bad: Any, who: str) -> None:
    env = PettingZooEmulator(_BadReward(bad, who), max_agents=6)
    env.reset(seed=0)
    with pytest.raises(EnvError, match=rf"agent '{who}' returned the reward .* must be one real number"):
        env.step(np.array([1, 2, 0, 0, 0, 0]))


def test_a_turn_based_env_names_a_bad_reward_too() -> None:
    from pettingzoo.utils.conversions import parallel_to_aec

    env = PettingZooEmulator(parallel_to_aec(_BadReward(None, "walker_1")), max_agents=6)
    env.reset(seed=0)
    with pytest.raises(EnvError, match=r"agent 'walker_1' returned the reward None"):
        for _ in range(4):
            env.step(np.zeros(6, np.int64))


class _BadObservation(SpawnEnv):
    """SpawnEnv whose step ``at`` gives agent ``who`` an observation of 3 entries (the space has 2)."""

    def __init__(self, who: str, at: int) -> None:
        super().__init__()
        self.who, self.at = who, at

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        obs, rewards, terms, truncs, infos = super().step(actions)
        if self.t == self.at:
            obs[self.who] = np.zeros(3, np.float32)
        return obs, rewards, terms, truncs, infos


# child_1 spawns on step 1 and dies on step 3: its last observation is the final one of its slot.
@pytest.mark.parametrize(("who", "at"), [("walker_1", 2), ("child_1", 1), ("child_1", 3)],
                         ids=["live", "spawning", "final"])
@pytest.mark.parametrize("turns", [False, True], ids=["parallel", "aec"])
def test_an_observation_that_does_not_fit_names_its_agent_and_env(who: str, at: int, turns: bool) -> None:
    from pettingzoo.utils.conversions import parallel_to_aec

    raw = _BadObservation(who, at)
    env = PettingZooEmulator(parallel_to_aec(raw) if turns else raw, max_agents=6)
    env.reset(seed=0)
    with pytest.raises(SpaceError, match=rf"agent '{who}' \(slot \d\) of spawn_v0 returned an observation that does "
                                         r"not fit its observation space: .*shape \(3,\).*Fix the env"):
        for _ in range(12):
            env.step(np.zeros(6, np.int64))


def test_an_env_without_a_name_is_named_by_its_class_not_a_wrapper() -> None:
    from pettingzoo.utils.conversions import parallel_to_aec

    raw = _BadObservation("walker_1", 2)
    raw.metadata = {}
    env = PettingZooEmulator(parallel_to_aec(raw), max_agents=6)
    env.reset(seed=0)
    with pytest.raises(SpaceError, match=r"agent 'walker_1' \(slot 1\) of _BadObservation returned"):
        for _ in range(12):
            env.step(np.zeros(6, np.int64))


@pytest.mark.parametrize("good", [np.float32(1.5), np.int64(2), True, np.array(0.25)])
def test_numeric_rewards_of_any_kind_reach_their_slot(good: Any) -> None:
    env = PettingZooEmulator(_BadReward(good, "walker_1"), max_agents=6)
    env.reset(seed=0)
    rewards = env.step(np.array([1, 2, 0, 0, 0, 0]))[1]
    assert rewards[1] == np.float32(float(good))

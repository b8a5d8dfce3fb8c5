"""The direct step for ``aec_to_parallel`` envs returns exactly what PettingZoo's wrapper returns."""

from __future__ import annotations

import importlib
import pickle
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from pettingzoo import AECEnv
from pettingzoo.utils.conversions import aec_to_parallel_wrapper, parallel_wrapper_fn
from pettingzoo.utils.wrappers import (
    AssertOutOfBoundsWrapper,
    BaseWrapper,
    OrderEnforcingWrapper,
    TerminateIllegalWrapper,
)

from shoal.emulation import PettingZooEmulator
from shoal.emulation.parallel_step import direct_parallel_step

ENVS = {
    "mpe2.simple_spread_v3": {"max_cycles": 30},
    "mpe2.simple_tag_v3": {"max_cycles": 30},  # heterogeneous agents
    "pettingzoo.butterfly.knights_archers_zombies_v11": {  # agents die mid-episode
        "max_cycles": 150, "spawn_delay": 3, "max_zombies": 20, "line_death": True},
    "pettingzoo.sisl.pursuit_v5": {"max_cycles": 40},
    "pettingzoo.butterfly.pistonball_v6": {"max_cycles": 20, "continuous": True},  # Box actions, clip wrapper
}


def make(module: str) -> Any:
    return importlib.import_module(module).parallel_env(**ENVS[module])


def assert_same(ours: tuple, theirs: tuple) -> None:
    for mine, reference in zip(ours, theirs, strict=True):
        assert list(mine) == list(reference)  # same agents, same order
        for agent, value in reference.items():
            if isinstance(value, dict):
                assert mine[agent].keys() == value.keys()
            else:
                np.testing.assert_array_equal(mine[agent], value)


@pytest.mark.parametrize("module", sorted(ENVS))
@pytest.mark.parametrize("actions_checked", [True, False])
def test_direct_step_matches_the_wrapper(module: str, actions_checked: bool) -> None:
    reference, env = make(module), make(module)
    step = direct_parallel_step(env, actions_checked=actions_checked)
    assert step is not None
    rng = np.random.default_rng(0)
    episodes = steps = deaths = 0
    while episodes < 2 and steps < 400:
        seed = int(rng.integers(1 << 30))
        ref_obs, _ = reference.reset(seed=seed)
        obs, _ = env.reset(seed=seed)
        assert_same((obs,), (ref_obs,))
        while reference.agents:
            for agent in reference.agents:
                reference.action_space(agent).seed(int(rng.integers(1 << 30)))
            actions = {agent: reference.action_space(agent).sample() for agent in reference.agents}
            assert_same(step(actions), reference.step(actions))
            assert env.agents == reference.agents
            deaths += 0 < len(env.agents) < len(actions)
            steps += 1
        episodes += 1
    assert episodes == 2
    if "knights" in module:
        assert deaths >= 2


def test_bounds_checks_stay_unless_the_actions_were_checked() -> None:
    env = make("mpe2.simple_spread_v3")
    env.reset(seed=0)
    step = direct_parallel_step(env, actions_checked=False)
    with pytest.raises(AssertionError, match="action is not in action space"):
        step(dict.fromkeys(env.agents, 7))


class _Renamed(aec_to_parallel_wrapper):
    pass


class _Custom(BaseWrapper):
    pass


def test_unknown_envs_keep_their_own_step() -> None:
    from pettingzoo.butterfly import knights_archers_zombies_v11

    aec = knights_archers_zombies_v11.env()
    assert direct_parallel_step(aec, actions_checked=True) is None  # an AEC env, not a parallel wrapper
    assert direct_parallel_step(_Renamed(knights_archers_zombies_v11.env()), actions_checked=True) is None
    assert direct_parallel_step(aec_to_parallel_wrapper(_Custom(aec)), actions_checked=True) is None
    from pettingzoo.classic import tictactoe_v3

    illegal = TerminateIllegalWrapper(tictactoe_v3.raw_env(), illegal_reward=-1)
    wrapped = object.__new__(aec_to_parallel_wrapper)
    wrapped.aec_env = illegal
    assert direct_parallel_step(wrapped, actions_checked=True) is None


@pytest.mark.parametrize("module", ["pettingzoo.butterfly.knights_archers_zombies_v11", "mpe2.simple_tag_v3"])
def test_emulator_output_is_the_same_with_and_without_the_direct_step(module: str) -> None:
    fast = PettingZooEmulator(make(module))
    slow = PettingZooEmulator(make(module), direct_parallel_step=False)
    assert fast._parallel_step != fast.env.step and slow._parallel_step == slow.env.step
    rng = np.random.default_rng(1)
    for env in (fast, slow):
        env.reset(seed=3)
    for _ in range(300):
        actions = np.array([rng.choice(np.flatnonzero(row)) for row in fast.action_masks])
        out_fast, out_slow = fast.step(actions), slow.step(actions)
        for mine, theirs in zip(out_fast[:4], out_slow[:4], strict=True):
            np.testing.assert_array_equal(mine, theirs)
        np.testing.assert_array_equal(fast.masks, slow.masks)
        for mine, theirs in zip(out_fast[4], out_slow[4], strict=True):
            assert mine.keys() == theirs.keys()
            if "episode" in mine:
                assert mine["episode"] == theirs["episode"]


class _Tally(AECEnv):
    """A tiny picklable AEC env: each agent adds its action to a shared tally; five cycles per episode."""

    metadata = {"name": "tally", "is_parallelizable": True}

    def __init__(self) -> None:
        self.possible_agents = ["a_0", "a_1"]

    def observation_space(self, agent: str) -> gym.spaces.Box:
        return gym.spaces.Box(0, 100, (2,), np.float32)

    def action_space(self, agent: str) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(3)

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.agents = list(self.possible_agents)
        self.tally, self.turns = 0, 0
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: {} for a in self.agents}
        self.agent_selection = self.agents[0]

    def observe(self, agent: str) -> np.ndarray:
        return np.array([self.tally, self.turns], np.float32)

    def step(self, action: Any) -> None:
        if self.terminations[self.agent_selection] or self.truncations[self.agent_selection]:
            self._was_dead_step(action)
            return
        self.tally += int(action)
        self.turns += 1
        self.rewards = {a: float(action) if a == self.agent_selection else 0.0 for a in self.agents}
        if self.turns >= 10:
            self.truncations = dict.fromkeys(self.agents, True)
        index = self.agents.index(self.agent_selection)
        self.agent_selection = self.agents[(index + 1) % len(self.agents)]


def _tally() -> Any:
    return parallel_wrapper_fn(lambda: OrderEnforcingWrapper(AssertOutOfBoundsWrapper(_Tally())))()


def test_a_vector_env_snapshot_with_the_direct_step_continues_identically() -> None:
    """The direct step pickles with its env, so exact resume keeps working for picklable PettingZoo envs."""
    import shoal.vector

    vecenv = shoal.vector.make(_tally, 2, backend="serial")
    reference = shoal.vector.make(_tally, 2, backend="serial", emulate_kwargs={"direct_parallel_step": False})
    try:
        for v in (vecenv, reference):
            v.reset(seed=0)
            v.step(np.array([1, 2, 0, 1]))
        assert type(vecenv._groups[0].envs[0]._parallel_step).__name__ == "_DirectStep"
        state = pickle.loads(pickle.dumps(vecenv.get_state()))
        copy_ = shoal.vector.make(_tally, 2, backend="serial")
        try:
            assert copy_.set_state(state) is True
            for t in range(12):
                actions = np.array([t % 3, (t + 1) % 3, (t + 2) % 3, t % 2])
                outputs = [v.step(actions) for v in (vecenv, copy_, reference)]
                for other in outputs[1:]:
                    for mine, theirs in zip(outputs[0][:4], other[:4], strict=True):
                        np.testing.assert_array_equal(mine, theirs)
        finally:
            copy_.close()
    finally:
        vecenv.close()
        reference.close()

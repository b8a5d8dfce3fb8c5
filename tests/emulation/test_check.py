"""check_env: real envs pass, broken ones get messages that name the problem."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.butterfly import knights_archers_zombies_v11
from pettingzoo.classic import tictactoe_v3

from shoal.emulation import check_env
from shoal.errors import EnvError


def test_real_envs_pass() -> None:
    assert check_env(gym.make("CartPole-v1"), steps=100) == []
    assert check_env(gym.make("Blackjack-v1"), steps=100) == []
    assert check_env(tictactoe_v3.env(), steps=60) == []
    assert check_env(knights_archers_zombies_v11.parallel_env(max_cycles=30), steps=40) == []


class UnseededEnv(gym.Env):
    observation_space = spaces.Box(0, 1, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.random.random(2).astype(np.float32), {}

    def step(self, action):
        return np.random.random(2).astype(np.float32), 0.0, False, False, {}


def test_nondeterminism_is_reported_with_the_fix() -> None:
    with pytest.raises(EnvError, match=r"not deterministic.*reset\(seed=0\)"):
        check_env(UnseededEnv(), steps=5)


class WanderingObs(UnseededEnv):
    def reset(self, *, seed=None, options=None):
        return np.array([0.5, 0.5], np.float32), {}

    def step(self, action):
        return np.array([3.0, 0.5], np.float32), 0.0, False, False, {}


def test_observation_outside_space_names_the_step() -> None:
    problems = check_env(WanderingObs(), steps=5, raise_on_error=False)
    assert any(p.startswith("step 1: observation outside") for p in problems), problems


class UnstableSpaces(ParallelEnv):
    metadata = {"name": "unstable"}
    possible_agents = ["a_0", "b_0"]

    def observation_space(self, agent):
        return spaces.Box(0, 1, (2,), np.float32) if np.random.random() < 2 else None

    def action_space(self, agent):
        return spaces.Discrete(np.random.randint(2, 10**6))


class ResurrectingEnv(ParallelEnv):
    metadata = {"name": "resurrect"}
    possible_agents = ["a_0", "a_1"]

    @functools.cache  # noqa: B019
    def observation_space(self, agent):
        return spaces.Box(0, 1, (1,), np.float32)

    @functools.cache  # noqa: B019
    def action_space(self, agent):
        return spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.t = 0
        return {a: np.zeros(1, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        obs = {a: np.zeros(1, np.float32) for a in self.agents}
        terms = {a: (a == "a_1" and self.t == 1) for a in self.agents}
        zeros = {a: 0.0 for a in self.agents}
        return obs, zeros, terms, {a: False for a in self.agents}, {a: {} for a in self.agents}


def test_unstable_spaces_and_resurrected_agents_are_reported() -> None:
    problems = check_env(UnstableSpaces(), raise_on_error=False)
    assert any("agent 'a_0': action_space(agent) returned different spaces" in p for p in problems)
    problems = check_env(ResurrectingEnv(), steps=5, raise_on_error=False)
    assert any("['a_1'] acted again after terminating" in p for p in problems), problems

"""A two-agent coordination game: both agents are rewarded only when they choose different actions.

Each episode lasts ``rounds`` simultaneous moves. Every agent sees the round counter and a private cue; the joint
reward (given to both) is 1 when the two actions differ and 0 otherwise, so the optimum needs the agents to break
symmetry, e.g. by their agent id, which parameter-shared policies only learn with an id or a centralized critic.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

__all__ = ["CoordinationEnv"]


class CoordinationEnv(ParallelEnv):
    """Parallel PettingZoo env with agents ``agent_0`` and ``agent_1``.

    Observation per agent: ``float32[2]`` = (round / rounds, 1.0). Actions: ``Discrete(num_actions)``.
    ``state()``: ``float32[1]`` = round / rounds. Reward per agent and round: 1 if the actions differ else 0.
    """

    metadata = {"name": "coordination_v0", "render_modes": []}

    def __init__(self, rounds: int = 8, num_actions: int = 2) -> None:
        self.rounds = rounds
        self.num_actions = num_actions
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: list[str] = []
        self.state_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self._t = 0

    @functools.cache  # noqa: B019 - spaces must be the same object on every call
    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (2,), np.float32)

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(self.num_actions)

    def _obs(self) -> dict[str, np.ndarray]:
        return {a: np.array([self._t / self.rounds, 1.0], np.float32) for a in self.agents}

    def state(self) -> np.ndarray:
        return np.array([self._t / self.rounds], np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.agents = list(self.possible_agents)
        self._t = 0
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        a0, a1 = int(actions["agent_0"]), int(actions["agent_1"])
        reward = float(a0 != a1)
        self._t += 1
        done = self._t >= self.rounds
        obs = self._obs()
        agents = list(self.agents)
        rewards = dict.fromkeys(agents, reward)
        terminations = dict.fromkeys(agents, done)
        truncations = dict.fromkeys(agents, False)
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, {a: {} for a in agents}

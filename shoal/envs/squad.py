"""A small parallel multi-agent env in which agents die: every wrong move kills the agent that made it."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

__all__ = ["SquadEnv"]


class SquadEnv(ParallelEnv):
    """``num_agents`` agents each see a private cue and must echo it; an agent that does not is terminated.

    Observation per agent: ``float32[num_cues + 1]`` = the cue one-hot and the fraction of the episode
    elapsed. Action: ``Discrete(num_cues)``. Reward: +1 for echoing the cue, -1 (and termination) otherwise.
    Survivors are truncated after ``max_steps`` steps, so a solved episode returns ``max_steps`` per agent.
    Agents that die leave masked slots until the episode ends: a test bed for dead-slot handling.
    """

    metadata = {"name": "squad_v0", "render_modes": []}

    def __init__(self, num_agents: int = 3, num_cues: int = 2, max_steps: int = 8) -> None:
        self.possible_agents = [f"agent_{i}" for i in range(num_agents)]
        self.agents: list[str] = []
        self.num_cues = num_cues
        self.max_steps = max_steps
        self._rng = np.random.default_rng()
        self._cues: dict[str, int] = {}
        self._t = 0

    @functools.cache  # noqa: B019 - spaces must be the same object on every call
    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, 1.0, (self.num_cues + 1,), np.float32)

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(self.num_cues)

    def _observe(self) -> dict[str, np.ndarray]:
        out = {}
        for agent in self.agents:
            self._cues[agent] = int(self._rng.integers(self.num_cues))
            obs = np.zeros(self.num_cues + 1, np.float32)
            obs[self._cues[agent]] = 1.0
            obs[-1] = self._t / self.max_steps
            out[agent] = obs
        return out

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._t = 0
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        self._t += 1
        acting = list(self.agents)
        rewards, terminations, truncations = {}, {}, {}
        for agent in acting:
            correct = int(actions[agent]) == self._cues[agent]
            rewards[agent] = 1.0 if correct else -1.0
            terminations[agent] = not correct
            truncations[agent] = correct and self._t >= self.max_steps
        self.agents = [a for a in acting if not (terminations[a] or truncations[a])]
        obs = self._observe()
        for agent in acting:  # final observations of the agents that just left
            if agent not in obs:
                final = np.zeros(self.num_cues + 1, np.float32)
                final[-1] = self._t / self.max_steps
                obs[agent] = final
        return obs, rewards, terminations, truncations, {a: {} for a in acting}

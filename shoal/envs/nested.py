"""An env with nested Dict observation and action spaces of mixed dtypes, for tests and benchmarks."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["NestedDictEnv"]


class NestedDictEnv(gym.Env):
    """A learnable task behind nested, mixed-dtype spaces; episodes both terminate and truncate.

    Observation (a byte row once flattened)::

        {"agent": {"position": float32[2], "health": Discrete(5)},
         "target": Discrete(3), "flags": MultiBinary(2), "grid": uint8[3, 3]}

    Action ``{"choice": Discrete(3), "switch": Discrete(2)}`` (flat: ``MultiDiscrete([3, 2])``). Reward per
    step: 0.5 when ``choice == target`` plus 0.5 when ``switch == flags[0]`` (so at most 1, a random policy
    averages 5/12). Each step terminates with probability ``terminate_prob``; an episode still running after
    ``max_steps`` steps is truncated.
    """

    metadata = {"render_modes": []}

    def __init__(self, max_steps: int = 16, terminate_prob: float = 0.02) -> None:
        self.max_steps = max_steps
        self.terminate_prob = terminate_prob
        self.observation_space = spaces.Dict(
            {
                "agent": spaces.Dict(
                    {
                        "position": spaces.Box(-1.0, 1.0, (2,), np.float32),
                        "health": spaces.Discrete(5),
                    }
                ),
                "target": spaces.Discrete(3),
                "flags": spaces.MultiBinary(2),
                "grid": spaces.Box(0, 3, (3, 3), np.uint8),
            }
        )
        self.action_space = spaces.Dict({"choice": spaces.Discrete(3), "switch": spaces.Discrete(2)})
        self._obs: dict[str, Any] = {}
        self._t = 0

    def _draw(self) -> dict[str, Any]:
        rng = self.np_random
        return {
            "agent": {
                "position": rng.uniform(-1.0, 1.0, 2).astype(np.float32),
                "health": np.int64(rng.integers(5)),
            },
            "target": np.int64(rng.integers(3)),
            "flags": rng.integers(0, 2, 2).astype(np.int8),
            "grid": rng.integers(0, 4, (3, 3)).astype(np.uint8),
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        self._obs = self._draw()
        return self._obs, {}

    def step(self, action: dict[str, Any]) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        reward = 0.5 * float(int(action["choice"]) == int(self._obs["target"]))
        reward += 0.5 * float(int(action["switch"]) == int(self._obs["flags"][0]))
        self._t += 1
        terminated = bool(self.np_random.random() < self.terminate_prob)
        truncated = not terminated and self._t >= self.max_steps
        self._obs = self._draw()
        return self._obs, reward, terminated, truncated, {}

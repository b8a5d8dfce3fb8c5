"""A memory task: a cue is shown only at the first step and must be recalled at the last one."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["MemoryEnv"]


class MemoryEnv(gym.Env):
    """Remember the cue of step 0 and name it at step ``length - 1``.

    Observation ``float32[num_cues + 2]``: the cue one-hot (only at step 0, zeros afterwards), a "query" flag
    set at the last step, and a constant 1. Actions ``Discrete(num_cues)`` are ignored until the last step,
    where naming the cue earns reward 1 (0 otherwise) and the episode terminates. A memoryless policy cannot
    beat ``1 / num_cues`` per episode; a recurrent one reaches 1.
    """

    metadata = {"render_modes": []}

    def __init__(self, length: int = 4, num_cues: int = 2) -> None:
        if length < 2 or num_cues < 2:
            raise ValueError(f"need length >= 2 and num_cues >= 2, got {length}, {num_cues}")
        self.length = length
        self.num_cues = num_cues
        self.observation_space = spaces.Box(0.0, 1.0, (num_cues + 2,), np.float32)
        self.action_space = spaces.Discrete(num_cues)
        self._cue = 0
        self._t = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.num_cues + 2, np.float32)
        if self._t == 0:
            obs[self._cue] = 1.0
        if self._t == self.length - 1:
            obs[self.num_cues] = 1.0
        obs[-1] = 1.0
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(self.num_cues))
        self._t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        last = self._t == self.length - 1
        reward = float(last and int(action) == self._cue)
        self._t += 1
        if last:
            self._t = self.length - 1  # the final observation repeats the query step
        return self._obs(), reward, last, False, {}

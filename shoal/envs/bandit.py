"""A contextual bandit: one step per episode, the right arm depends on the context shown."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["ContextualBandit"]


class ContextualBandit(gym.Env):
    """Each episode shows one of ``num_contexts`` contexts (one-hot); the agent picks one of ``num_arms``.

    The correct arm of context ``c`` is ``correct_arms[c]``, a fixed permutation drawn from ``task_seed`` (the
    same in every copy of the env, whatever the reset seed). Reward 1 for the correct arm, 0 otherwise; the
    episode terminates after that one step. A random policy earns ``1 / num_arms`` per episode, a solved
    one 1.

    Observation: ``float32[num_contexts]`` one-hot. Action: ``Discrete(num_arms)``.
    """

    metadata = {"render_modes": []}

    def __init__(self, num_contexts: int = 4, num_arms: int = 4, task_seed: int = 0) -> None:
        if num_contexts < 1 or num_arms < 2:
            raise ValueError(f"need num_contexts >= 1 and num_arms >= 2, got {num_contexts}, {num_arms}")
        self.num_contexts = num_contexts
        self.num_arms = num_arms
        self.observation_space = spaces.Box(0.0, 1.0, (num_contexts,), np.float32)
        self.action_space = spaces.Discrete(num_arms)
        task = np.random.default_rng(task_seed)
        self.correct_arms = task.integers(0, num_arms, num_contexts)
        self._context = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.num_contexts, np.float32)
        obs[self._context] = 1.0
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._context = int(self.np_random.integers(self.num_contexts))
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward = float(int(action) == int(self.correct_arms[self._context]))
        return self._obs(), reward, True, False, {}

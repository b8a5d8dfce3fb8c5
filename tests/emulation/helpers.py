"""Assertions shared by the emulation tests."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


def assert_same_sample(space: spaces.Space, expected: Any, actual: Any, path: str = "obs") -> None:
    """Assert two samples of ``space`` are equal leaf by leaf, bit for bit and dtype for dtype."""
    if isinstance(space, spaces.Dict):
        assert set(actual) == set(space.spaces), path
        for key, sub in space.spaces.items():
            assert_same_sample(sub, expected[key], actual[key], f"{path}[{key!r}]")
    elif isinstance(space, spaces.Tuple):
        assert len(actual) == len(space.spaces), path
        for i, sub in enumerate(space.spaces):
            assert_same_sample(sub, expected[i], actual[i], f"{path}[{i}]")
    elif isinstance(space, spaces.Text):
        assert actual == expected, path
    else:
        exp = np.asarray(expected)
        act = np.asarray(actual)
        assert act.dtype == np.dtype(space.dtype), f"{path}: dtype {act.dtype} != {space.dtype}"
        assert act.shape == exp.shape, f"{path}: shape {act.shape} != {exp.shape}"
        assert act.tobytes() == exp.astype(space.dtype).tobytes(), f"{path}: values differ"


class HybridActionEnv(gym.Env):
    """A small aiming game with a hybrid action: which weapon (``Discrete(3, start=1)``), fire or hold
    (``MultiBinary(1)``), a power level (integer ``Box`` in ``[-1, 2]``) and where to aim (float ``Box``).

    ``step`` rejects any action outside ``action_space`` (as a strict env would); the reward is minus the aiming
    error. Observation ``float32[2]``: the target position. Episodes last ``length`` steps (truncated).
    """

    def __init__(self, length: int = 50) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Dict({
            "weapon": spaces.Discrete(3, start=1),
            "fire": spaces.MultiBinary(1),
            "power": spaces.Box(-1, 2, (1,), np.int32),
            "aim": spaces.Box(-1.0, 1.0, (2,), np.float32),
        })
        self.length = length
        self.received: list[Any] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.target = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self.target, {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self.action_space.contains(action):
            raise ValueError(f"HybridActionEnv: action {action!r} is outside {self.action_space!r}")
        self.received.append(action)
        self.t += 1
        reward = -float(np.abs(action["aim"] - self.target).sum())
        self.target = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self.target, reward, False, self.t >= self.length, {}

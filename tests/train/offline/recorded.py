"""A tiny recorder for the offline tests: steps a real Gymnasium env with a scripted controller (a function of the
observation, which shoal.train.record.record_dataset does not take as a source) and fills an OfflineDataset, plus
the controllers themselves. Random data comes from record_dataset("random", ...)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from shoal.datasets import OfflineDataset
from shoal.emulation import ActionLayout, compile_layout, flatten


def record(env_id: str | Callable[[], gym.Env], act: Callable[[np.ndarray, np.random.Generator], Any], episodes: int,
           seed: int = 0, **env_kwargs: Any) -> OfflineDataset:
    """``episodes`` whole episodes of ``act(obs, rng) -> native action`` on ``gymnasium.make(env_id)`` (or the env
    ``env_id()`` builds)."""
    env = gym.make(env_id, **env_kwargs) if isinstance(env_id, str) else env_id()
    obs_layout, action_layout = compile_layout(env.observation_space), ActionLayout(env.action_space)
    rng = np.random.default_rng(seed)
    rows, actions, rewards, terminations, truncations, offsets = [], [], [], [], [], [0]
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        rows.append(flatten(obs_layout, obs))
        while True:
            action = act(obs, rng)
            obs, reward, terminated, truncated, _ = env.step(action)
            rows.append(flatten(obs_layout, obs))
            actions.append(action_layout.from_native(action))
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            if terminated or truncated:
                break
        offsets.append(len(actions))
    env.close()
    return OfflineDataset(np.stack(rows), np.stack(actions), np.asarray(rewards, np.float32),
                          np.asarray(terminations), np.asarray(truncations), np.asarray(offsets, np.int64),
                          obs_layout, action_layout, metadata={"env": env_id if isinstance(env_id, str) else ""})


def cartpole_expert(obs: np.ndarray, rng: np.random.Generator) -> int:
    """Push towards where the pole falls, corrected for the cart's drift: 500 (the time limit) from any start."""
    x, x_dot, theta, theta_dot = obs
    return int(theta + 0.5 * theta_dot + 0.01 * x + 0.1 * x_dot > 0)


def pendulum_expert(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pump energy until the pendulum is near the top, then hold it there with a PD controller."""
    cos, sin, speed = obs
    angle = np.arctan2(sin, cos)  # 0 upright
    if cos > 0.85:
        torque = -(10.0 * angle + 2.0 * speed)
    else:
        energy = 0.5 * speed**2 - 15.0 * (1.0 - cos)  # 0 at rest upright (3g/2l = 15 for l=1, g=10)
        torque = 2.0 * np.sign(speed if speed != 0 else 1.0) * (1.0 if energy < 0 else -1.0)
    return np.asarray([np.clip(torque, -2.0, 2.0)], np.float32)


def bandit_mostly_wrong(correct_arms: np.ndarray) -> Callable[[np.ndarray, np.random.Generator], int]:
    """On the contextual bandit: the context's arm 30% of the time, the next one (never right) 50%, any 20%."""
    def act(obs: np.ndarray, rng: np.random.Generator) -> int:
        right, n = int(correct_arms[int(np.argmax(obs))]), len(correct_arms)
        draw = rng.random()
        return right if draw < 0.3 else (right + 1) % n if draw < 0.8 else int(rng.integers(n))

    return act

"""Offline datasets for tests: real CartPole episodes played by a scripted controller of chosen noise levels."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np

from shoal import vector
from shoal.datasets import OfflineDataset


def cartpole_fn(max_episode_steps: int = 200) -> functools.partial:
    """A CartPole-v1 constructor with its time limit at ``max_episode_steps``."""
    return functools.partial(gym.make, "CartPole-v1", max_episode_steps=max_episode_steps)


def balance(obs: np.ndarray) -> int:
    """A controller that balances CartPole for its whole time limit: push towards where the pole falls."""
    _, velocity, angle, angular_velocity = obs
    return int(angle + 0.5 * angular_velocity + 0.01 * velocity > 0)


def topple(obs: np.ndarray) -> int:
    """The opposite of :func:`balance`: the pole falls within about ten steps."""
    return 1 - balance(obs)


def cartpole_dataset(noise: list[float], seed: int = 0, max_episode_steps: int = 200) -> OfflineDataset:
    """One episode per entry of ``noise``: the balancing controller, replaced by a uniformly random action with
    that probability at each step (1.0: a random policy); a negative entry ``-p`` plays :func:`topple` with that
    noise instead. The emulator's own flat rows and final observations."""
    vec = vector.make(cartpole_fn(max_episode_steps), 1, backend="serial", seed=seed)
    rng = np.random.default_rng(seed)
    observations, actions, rewards, terminations, truncations, offsets = [], [], [], [], [], [0]
    try:
        obs, _ = vec.reset(seed)
        for epsilon in noise:
            while True:
                observations.append(obs[0].copy())
                controller = topple if epsilon < 0 else balance
                action = int(rng.integers(2)) if rng.random() < abs(epsilon) else controller(obs[0])
                obs, reward, terminal, truncated, infos = vec.step(np.array([action]))
                actions.append(action)
                rewards.append(float(reward[0]))
                terminations.append(bool(terminal[0]))
                truncations.append(bool(truncated[0] and not terminal[0]))
                if terminal[0] or truncated[0]:
                    observations.append(np.asarray(infos[0]["final_observation"], np.float32).copy())
                    offsets.append(len(actions))
                    break
        layouts = vec.obs_layout, vec.action_layout
    finally:
        vec.close()
    return OfflineDataset(
        observations=np.stack(observations).astype(layouts[0].flat_dtype),
        actions=np.asarray(actions, np.int64),
        rewards=np.asarray(rewards, np.float32),
        terminations=np.asarray(terminations),
        truncations=np.asarray(truncations),
        episode_offsets=np.asarray(offsets, np.int64),
        obs_layout=layouts[0],
        action_layout=layouts[1],
        metadata={"env": "CartPole-v1", "source": "scripted controller with noise", "seed": seed},
    )

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


def join(*datasets: OfflineDataset) -> OfflineDataset:
    """The episodes of ``datasets`` one after the other (same layouts)."""
    first = datasets[0]
    offsets = [np.zeros(1, np.int64)]
    for d in datasets:
        offsets.append(d.episode_offsets[1:] + offsets[-1][-1])
    return OfflineDataset(*(np.concatenate([getattr(d, name) for d in datasets]) for name in
                            ("observations", "actions", "rewards", "terminations", "truncations")),
                          np.concatenate(offsets), first.obs_layout, first.action_layout, metadata=first.metadata)


def random_discrete(n: int) -> Callable[[np.ndarray, np.random.Generator], int]:
    return lambda obs, rng: int(rng.integers(n))


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


def pendulum_random(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-2.0, 2.0, size=1).astype(np.float32)


def cartpole_balancer(obs: np.ndarray, rng: np.random.Generator) -> int:
    """Pole feedback alone (no correction for the cart): balances for 200 steps, though the cart drifts off the
    track before 500. A simpler rule than the expert's, which a small model imitates within a few hundred steps."""
    _, x_dot, theta, theta_dot = obs
    return int(theta + 0.5 * theta_dot + 0.01 * x_dot > 0)


def cartpole_toppler(obs: np.ndarray, rng: np.random.Generator) -> int:
    """The balancer's opposite: the pole falls within about ten steps."""
    return 1 - cartpole_balancer(obs, rng)


def noisy(act: Callable[[np.ndarray, np.random.Generator], int], epsilon: float,
          n: int = 2) -> Callable[[np.ndarray, np.random.Generator], int]:
    """``act`` with a uniformly random action of ``n`` in place of its own with probability ``epsilon``."""
    return lambda obs, rng: int(rng.integers(n)) if rng.random() < epsilon else act(obs, rng)


def mixed_cartpole(episodes: int = 6, max_episode_steps: int = 200) -> OfflineDataset:
    """CartPole episodes of four qualities, ``episodes`` of each: the balancer (the time limit of 200), the balancer
    with 60% random actions (about 30 to 120), the toppler (about 9) and random play (about 20)."""
    controllers = [cartpole_balancer, noisy(cartpole_balancer, 0.6), cartpole_toppler, random_discrete(2)]
    return join(*(record("CartPole-v1", act, episodes, seed=100 * i, max_episode_steps=max_episode_steps)
                  for i, act in enumerate(controllers)))


def aiming_expert(obs: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """On tests.emulation.helpers.HybridActionEnv: aim at the target shown (reward 0), one fixed weapon setting."""
    return {"weapon": 2, "fire": np.ones(1, np.int8), "power": np.ones(1, np.int32), "aim": obs.astype(np.float32)}

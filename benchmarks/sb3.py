"""Stable-Baselines3 on shoal's backends: env steps per second through ``shoal.vector.to_sb3``, beside SB3's own
vector envs, in one run.

Two figures per configuration, on CartPole-v1 (16 envs) and on MPE2 simple_spread_v3 (8 envs x 3 agents, SB3
indices = agent slots; SB3's side is SuperSuit's ``pettingzoo_env_to_vec_env_v1`` + ``concat_vec_envs_v1``, the
usual way to give SB3 a PettingZoo env):

* ``step``: ``VecEnv.step`` with random actions, nothing else (best of 3 one-second windows);
* ``PPO``: SB3 ``PPO("MlpPolicy").learn`` steps per second (rollouts and updates; one torch thread).

``xN`` in a name is N worker processes.

No target: the figures say what the bridge costs or saves against SB3's own vectorization.

    python benchmarks/sb3.py [--seconds 1.0] [--ppo-steps 8192]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import shoal.vector
from benchmarks.common import line, rate

warnings.filterwarnings("ignore")
CARTPOLE = functools.partial(gym.make, "CartPole-v1")


def spread() -> Any:
    from mpe2 import simple_spread_v3

    return simple_spread_v3.parallel_env(N=3, max_cycles=25, continuous_actions=False)


def sb3_cartpole(kind: str, num_envs: int) -> Any:
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    cls = DummyVecEnv if kind == "dummy" else SubprocVecEnv
    return cls([CARTPOLE] * num_envs)


def supersuit_spread(num_envs: int, num_workers: int) -> Any:
    import supersuit

    vec = supersuit.pettingzoo_env_to_vec_env_v1(spread())
    return supersuit.concat_vec_envs_v1(vec, num_envs, num_cpus=num_workers, base_class="stable_baselines3")


def shoal_sb3(env_fn: Callable[[], Any], num_envs: int, backend: str) -> Any:
    workers = 1 if backend == "serial" else 2
    return shoal.vector.to_sb3(shoal.vector.make(env_fn, num_envs, backend=backend, num_workers=workers))


def step_rate(env: Any, seconds: float) -> float:
    env.reset()
    rng = np.random.default_rng(0)
    n = env.num_envs
    actions = rng.integers(0, env.action_space.n, (64, n))
    i = 0

    def chunk() -> int:
        nonlocal i
        for _ in range(16):
            env.step(actions[i % 64])
            i += 1
        return 16 * n

    return rate(chunk, seconds)


def ppo_rate(env: Any, steps: int) -> float:
    from stable_baselines3 import PPO

    # unseeded: SuperSuit's SB3 vector env has no seed()
    model = PPO("MlpPolicy", env, n_steps=max(64, 2048 // env.num_envs), batch_size=256)
    start = time.perf_counter()
    model.learn(steps)
    return model.num_timesteps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--ppo-steps", type=int, default=8_192)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the multiprocessing workers need the other core

    cases = {
        "CartPole-v1, 16 envs": [
            ("SB3 DummyVecEnv", lambda: sb3_cartpole("dummy", 16)),
            ("SB3 SubprocVecEnv x16", lambda: sb3_cartpole("subproc", 16)),
            ("shoal serial via to_sb3", lambda: shoal_sb3(CARTPOLE, 16, "serial")),
            ("shoal multiprocessing x2 via to_sb3", lambda: shoal_sb3(CARTPOLE, 16, "multiprocessing")),
        ],
        "simple_spread_v3, 8 envs x 3 agents": [
            ("SuperSuit concat_vec_envs_v1 x1", lambda: supersuit_spread(8, 0)),
            ("SuperSuit concat_vec_envs_v1 x2", lambda: supersuit_spread(8, 2)),
            ("shoal serial via to_sb3", lambda: shoal_sb3(spread, 8, "serial")),
            ("shoal multiprocessing x2 via to_sb3", lambda: shoal_sb3(spread, 8, "multiprocessing")),
        ],
    }
    for title, makers in cases.items():
        print(f"== {title}")
        results = []
        for name, make in makers:
            env = make()
            try:
                steps = step_rate(env, args.seconds)
                ppo = ppo_rate(env, args.ppo_steps)
            finally:
                env.close()
            results.append((name, steps, ppo))
        ref_name, ref_steps, ref_ppo = results[0]
        for name, steps, _ in results:
            print(line(f"step  {name}", steps, "steps/s", ref_steps, f"vs {ref_name}"))
        for name, _, ppo in results:
            print(line(f"PPO   {name}", ppo, "steps/s", ref_ppo, f"vs {ref_name}"))


if __name__ == "__main__":
    main()

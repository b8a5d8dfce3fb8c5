"""Env constructors for the vector tests: module-level, so they pickle by reference under spawn and on Ray."""

from __future__ import annotations

import os
import signal
import time
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pettingzoo.utils import BaseParallelWrapper

__all__ = [
    "CrashEnv",
    "HangEnv",
    "Poison",
    "PoisonParallel",
    "SlowEnv",
    "cartpole",
    "crash_in_worker",
    "crash_on_make",
    "hang_in_worker",
    "kaz",
    "nested",
    "poisoned_cartpole",
    "poisoned_kaz",
    "poisoned_nested",
    "tictactoe",
]

KAZ_MAX_CYCLES = 40


def cartpole() -> gym.Env:
    """CartPole-v1 (TimeLimit 500)."""
    return gym.make("CartPole-v1")


def nested() -> gym.Env:
    """shoal's nested, mixed-dtype Dict env (Dict observations and actions), short episodes."""
    from shoal.envs.nested import NestedDictEnv

    return NestedDictEnv(max_steps=7, terminate_prob=0.1)


def kaz() -> Any:
    """knights_archers_zombies_v11 as a ParallelEnv (4 agents, agents die), short episodes."""
    with warnings.catch_warnings():  # pettingzoo flags its versioned-module imports as the "old API"
        warnings.simplefilter("ignore", DeprecationWarning)
        from pettingzoo.butterfly import knights_archers_zombies_v11

    return knights_archers_zombies_v11.parallel_env(max_cycles=KAZ_MAX_CYCLES)


def tictactoe() -> Any:
    """tictactoe_v3, a turn-based AEC env with legal-action masks (2 agents, one acts at a time)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pettingzoo.classic import tictactoe_v3

    return tictactoe_v3.env()


def crash_on_make() -> gym.Env:
    """An env constructor that raises."""
    raise RuntimeError("boom while making the env")


def crash_in_worker() -> gym.Env:
    """CartPole in the main process (the parent's probe env), an error in any worker process."""
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        raise RuntimeError("boom while making the env in a worker")
    return cartpole()


def hang_forever() -> None:
    """Sleep for good (in short naps, so the process still dies at once on SIGTERM)."""
    while True:
        time.sleep(0.05)


def in_worker() -> bool:
    """True in a multiprocessing worker or a Ray actor, False in the test process itself."""
    import multiprocessing
    import sys

    if multiprocessing.parent_process() is not None:
        return True
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def hang_in_worker() -> gym.Env:
    """CartPole in the test process (the parent's probe env); a constructor that never returns in a worker."""
    if in_worker():
        hang_forever()
    return cartpole()


class HangEnv(gym.Env):
    """A tiny env that hangs for good in ``where``: "step" (after ``after`` steps), "reset" or "close" (only in a
    worker: the parent's probe env is closed in the test process).

    Observation ``float32[2]`` = (step count, 0); action ``Discrete(2)``; never ends on its own.
    """

    def __init__(self, after: int = 3, where: str = "step") -> None:
        self.observation_space = spaces.Box(-1e9, 1e9, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.after, self.where = after, where
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self.where == "reset":
            hang_forever()
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        if self.where == "step" and self.t >= self.after:
            hang_forever()
        return np.array([self.t, 0], np.float32), 1.0, False, False, {}

    def close(self) -> None:
        if self.where == "close" and in_worker():
            hang_forever()


class CrashEnv(gym.Env):
    """A tiny env that misbehaves after ``after`` steps: ``how`` is "raise", "exit" (os._exit), "kill" (SIGKILL)
    or "segv" (SIGSEGV, as a native crash).

    Observation ``float32[2]`` = (step count, seed or -1); action ``Discrete(2)``; never ends on its own.
    """

    def __init__(self, after: int = 3, how: str = "raise", on_reset: bool = False) -> None:
        self.observation_space = spaces.Box(-1e9, 1e9, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.after, self.how, self.on_reset = after, how, on_reset
        self.t = 0
        self.seed = -1

    def _fail(self) -> None:
        if self.how == "raise":
            raise ValueError("CrashEnv failed on purpose")
        if self.how == "exit":
            os._exit(3)
        os.kill(os.getpid(), signal.SIGSEGV if self.how == "segv" else signal.SIGKILL)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self.on_reset:
            self._fail()
        self.t = 0
        self.seed = -1 if seed is None else seed
        return np.array([0, self.seed], np.float32), {"seed": np.int64(self.seed)}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        if self.t >= self.after:
            self._fail()
        return np.array([self.t, self.seed], np.float32), 1.0, False, False, {}


class SlowEnv(gym.Env):
    """Sleeps ``delay`` seconds per step; reports its seed; episodes of ``length`` steps (terminated).

    Observation ``float32[2]`` = (step count, seed); ``infos`` at reset: ``{"seed": seed}``.
    """

    def __init__(self, delay: float = 0.0, length: int = 5) -> None:
        self.observation_space = spaces.Box(-1e9, 1e9, (2,), np.float32)
        self.action_space = spaces.Discrete(3)
        self.delay, self.length = delay, length
        self.t = 0
        self.seed = -1

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        if seed is not None:
            self.seed = seed
        return np.array([0, self.seed], np.float32), {"seed": np.int64(self.seed)}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.delay:
            time.sleep(self.delay)
        self.t += 1
        return (np.array([self.t, self.seed], np.float32), float(action), self.t >= self.length, False,
                {"action": np.int64(action)})


# ---- envs that return NaN or infinity --------------------------------------------------------------------------


class Poison(gym.Wrapper):
    """A real env that returns ``value`` (NaN by default) once per episode: in the reward, or in entry ``index``
    of the observation leaf at ``path`` (keys into a Dict observation), at step ``at`` of the episode (0: on
    reset). Everything else is the wrapped env's own."""

    def __init__(self, env: gym.Env, field: str = "reward", at: int = 3, value: float = float("nan"),
                 index: int = 0, path: tuple[str, ...] = ()) -> None:
        super().__init__(env)
        self.field, self.at, self.value, self.index, self.path = field, at, value, index, path
        self.t = 0

    def _poison(self, obs: Any) -> Any:
        if self.field != "obs" or self.t != self.at:
            return obs
        if not self.path:
            obs = np.array(obs)
            obs[self.index] = self.value
            return obs
        leaf = obs
        for key in self.path[:-1]:
            leaf = leaf[key]
        leaf[self.path[-1]] = np.array(leaf[self.path[-1]])
        leaf[self.path[-1]][self.index] = self.value
        return obs

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        self.t = 0
        return self._poison(obs), info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.t += 1
        if self.field == "reward" and self.t == self.at:
            reward = self.value
        return self._poison(obs), reward, terminated, truncated, info


def poisoned_cartpole(field: str = "reward", at: int = 3, value: float = float("nan"), index: int = 2,
                      max_episode_steps: int | None = None) -> gym.Env:
    """CartPole-v1 returning ``value`` at step ``at`` of each episode (see :class:`Poison`)."""
    return Poison(gym.make("CartPole-v1", max_episode_steps=max_episode_steps), field, at, value, index)


def poisoned_nested(at: int = 2, value: float = float("inf")) -> gym.Env:
    """shoal's nested Dict env (a byte row) with ``value`` in ``obs['agent']['position'][1]`` at step ``at``."""
    from shoal.envs.nested import NestedDictEnv

    return Poison(NestedDictEnv(max_steps=50, terminate_prob=0.0), "obs", at, value, 1, ("agent", "position"))


class PoisonParallel(BaseParallelWrapper):
    """A PettingZoo ParallelEnv whose agent ``agent`` receives ``value`` as its reward at step ``at`` after each
    reset (the wrapped env's observations, infos and ends are untouched)."""

    def __init__(self, env: Any, agent: str, at: int = 2, value: float = float("nan")) -> None:
        super().__init__(env)
        self.poisoned, self.at, self.value = agent, at, value
        self.t = 0

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.t = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        self.t += 1
        if self.t == self.at and self.poisoned in rewards:
            rewards = {**rewards, self.poisoned: self.value}
        return obs, rewards, terms, truncs, infos


def poisoned_kaz(at: int = 2) -> Any:
    """knights_archers_zombies_v11 (float64 observations) whose second archer gets a NaN reward at step ``at``."""
    env = kaz()
    return PoisonParallel(env, env.possible_agents[1], at)

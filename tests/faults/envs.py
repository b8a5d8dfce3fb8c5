"""CartPole with a fault injected: module-level constructors, so they pickle by reference into workers and Ray
actors, and ``tests.faults.envs:NAME`` works as a command-line env."""

from __future__ import annotations

import ctypes
import functools
import os
import signal
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["FAULTS", "FaultyCartPole", "Float64Observations", "InterruptAt", "cartpole", "faulty", "float64_cartpole",
           "interrupted_cartpole", "raises_in_step_cli"]

#: What :class:`FaultyCartPole` can do wrong, and when.
FAULTS = ("reset", "step", "close", "obs_shape", "obs_dtype", "exit", "kill", "segfault", "hang")


class FaultyCartPole(gym.Wrapper):
    """CartPole-v1 that misbehaves on its ``after``-th step, counted across episodes (or at its first reset for
    ``fault="reset"``).

    ``fault``: ``"reset"``/``"step"``/``"close"`` raise ``RuntimeError`` there; ``"obs_shape"`` returns 7 numbers
    instead of 4; ``"obs_dtype"`` returns a string; ``"exit"`` calls ``os._exit(7)``; ``"kill"`` sends itself SIGKILL
    (as the out-of-memory killer would); ``"segfault"`` reads address 0 (a real native crash); ``"hang"`` blocks for
    ``hang_s`` seconds.
    """

    def __init__(self, fault: str, after: int = 2, hang_s: float = 60.0) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault={fault!r}; choose from {FAULTS}")
        super().__init__(gym.make("CartPole-v1"))
        self.fault, self.after, self.hang_s = fault, after, hang_s
        self.t = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        if self.fault == "reset":
            raise RuntimeError("FaultyCartPole: injected fault in reset")
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.t += 1  # steps since construction, across episodes
        if self.t >= self.after:
            obs = self._inject(obs)
        return obs, float(reward), terminated, truncated, info

    def _inject(self, obs: np.ndarray) -> Any:
        if self.fault == "step":
            raise RuntimeError("FaultyCartPole: injected fault in step")
        if self.fault == "obs_shape":
            return np.zeros(7, np.float32)
        if self.fault == "obs_dtype":
            return "not an observation"
        if self.fault == "exit":
            os._exit(7)
        if self.fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fault == "segfault":
            ctypes.string_at(0)
        if self.fault == "hang":
            import time

            time.sleep(self.hang_s)
        return obs

    def close(self) -> None:
        super().close()
        if self.fault == "close":
            raise RuntimeError("FaultyCartPole: injected fault in close")


def cartpole() -> gym.Env:
    """A healthy CartPole-v1 (stands beside the faulty one, so a message must say which env failed)."""
    return gym.make("CartPole-v1")


class Float64Observations(gym.ObservationWrapper):
    """Returns CartPole's observations as float64 while its space says float32."""

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(observation, np.float64)


def float64_cartpole() -> gym.Env:
    """CartPole-v1 whose observations come as float64 (its space says float32)."""
    return Float64Observations(gym.make("CartPole-v1"))


def faulty(fault: str, **kwargs: Any) -> Callable[[], FaultyCartPole]:
    """A picklable constructor of ``FaultyCartPole(fault, **kwargs)``."""
    return functools.partial(FaultyCartPole, fault, **kwargs)


def raises_in_step_cli() -> FaultyCartPole:
    """For the command line (``tests.faults.envs:raises_in_step_cli``): raises on its 40th step."""
    return FaultyCartPole("step", after=40)


class InterruptAt(gym.Wrapper):
    """``env_id`` that raises KeyboardInterrupt (as Ctrl-C would) at its ``at``-th step, counted across episodes."""

    def __init__(self, env_id: str, at: int) -> None:
        super().__init__(gym.make(env_id))
        self.at, self.steps = at, 0

    def step(self, action: Any) -> Any:
        self.steps += 1
        if self.steps == self.at:
            raise KeyboardInterrupt
        return self.env.step(action)


def interrupted_cartpole() -> InterruptAt:
    """For the command line (``tests.faults.envs:interrupted_cartpole``): CartPole-v1 interrupted at its 150th step."""
    return InterruptAt("CartPole-v1", 150)

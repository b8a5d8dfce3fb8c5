"""Emulation: any Gymnasium or PettingZoo env as fixed slots of flat observations and actions (numpy only)."""

from __future__ import annotations

from typing import Any

from shoal.emulation.actions import ActionLayout
from shoal.emulation.base import Buffers, Emulator
from shoal.emulation.check import check_env
from shoal.emulation.flatten import Flattener, flatten, flatten_batch, to_native, unflatten
from shoal.emulation.gymnasium import GymnasiumEmulator
from shoal.emulation.layout import Layout, Leaf, SpaceHandler, compile_layout, register_space
from shoal.emulation.pettingzoo import PettingZooEmulator
from shoal.errors import APIUsageError

__all__ = [
    # entry point
    "emulate",
    # emulators
    "Buffers",
    "Emulator",
    "GymnasiumEmulator",
    "PettingZooEmulator",
    # layouts and flattening
    "ActionLayout",
    "Flattener",
    "Layout",
    "Leaf",
    "SpaceHandler",
    "compile_layout",
    "flatten",
    "flatten_batch",
    "register_space",
    "to_native",
    "unflatten",
    # checks
    "check_env",
]


def emulate(env: Any, max_agents: int | None = None, **opts: Any) -> Emulator:
    """Wrap ``env`` in the emulator that fits it.

    Args:
        env: a ``gymnasium.Env``, a ``pettingzoo.ParallelEnv`` or a ``pettingzoo.AECEnv``.
        max_agents: number of slots for PettingZoo envs (default ``len(env.possible_agents)``); must be
            ``None`` or 1 for Gymnasium envs.
        **opts: passed to the emulator (e.g. ``buffers=``, ``action_mask_key=``, ``check_finite=``: on by
            default, a reward or float observation entry that is NaN or infinite raises
            :class:`~shoal.errors.NonFiniteError` naming the field and the step; under 1% of an emulated CartPole
            step with the native module, see the emulators' docstrings).

    Returns:
        A :class:`GymnasiumEmulator` or :class:`PettingZooEmulator`.
    """
    import gymnasium as gym
    from pettingzoo import AECEnv, ParallelEnv

    if isinstance(env, Emulator):
        return env
    if isinstance(env, gym.Env):
        if max_agents not in (None, 1):
            raise APIUsageError(f"max_agents={max_agents} given for a single-agent gymnasium env; omit it")
        return GymnasiumEmulator(env, **opts)
    if isinstance(env, ParallelEnv | AECEnv):
        return PettingZooEmulator(env, max_agents=max_agents, **opts)
    raise APIUsageError(
        f"cannot emulate {type(env).__name__}: expected a gymnasium.Env, pettingzoo.ParallelEnv or "
        "pettingzoo.AECEnv (wrap other APIs, e.g. with shimmy, first)"
    )

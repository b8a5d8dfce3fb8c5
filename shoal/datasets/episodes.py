"""Recorded experience as flat emulated rows: the one in-memory form every offline algorithm reads.

A dataset holds whole per-slot trajectories (one agent slot of one env, from its reset or spawn to its end),
concatenated. Observations are the emulator's flat rows, so any nested or mixed-dtype space is stored once in the
layout's dtype and unflattened with the same zero-copy views the online policies use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoal.emulation.actions import ActionLayout
from shoal.emulation.base import action_mask_width
from shoal.emulation.layout import Layout
from shoal.errors import APIUsageError

__all__ = ["OfflineDataset"]


@dataclass(frozen=True)
class OfflineDataset:
    """``E`` episodes of ``T_0 .. T_{E-1}`` steps (``T = sum T_i``), concatenated in episode order.

    Attributes:
        observations: ``[T + E, flat_size]`` of ``obs_layout.flat_dtype``. Episode ``i`` owns the ``T_i + 1`` rows
            from ``obs_offsets[i]``: the observation before each of its steps, then the one after its last step
            (the final observation, also on truncation).
        actions: ``[T, *action_layout.flat_space.shape]``: the flat action taken at each step (``int64`` for
            discrete layouts, ``float32`` for continuous and hybrid ones).
        rewards: ``float32[T]``.
        terminations, truncations: ``bool[T]``; at most the last step of an episode sets one. An episode the
            recording budget cut short ends with ``truncations`` set (it bootstraps like a time limit).
        episode_offsets: ``int64[E + 1]``: episode ``i``'s steps are ``[episode_offsets[i], episode_offsets[i+1])``.
        obs_layout: the layout of one observation row (its ``space`` is the per-slot observation space).
        action_layout: the layout of one action.
        action_masks: ``bool[T + E, mask_width]`` (1 = legal), aligned with ``observations``, or ``None``.
        agents: ``int32[E]``: the slot (agent index) each episode was played in (0 for single-agent envs).
        agent_types: ``int32[E]``: the agent type of each episode's slot (0 for single-agent envs).
        metadata: free-form facts about how it was recorded (env id, source, steps, seed).

    Raises:
        APIUsageError: an array whose shape does not fit the episodes (``agents`` and ``agent_types`` included) or
            the layouts (``action_masks`` one column per choice of the action layout; none for Box actions).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    episode_offsets: np.ndarray
    obs_layout: Layout
    action_layout: ActionLayout
    action_masks: np.ndarray | None = None
    agents: np.ndarray | None = None
    agent_types: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        episodes = len(self.episode_offsets) - 1
        steps = int(self.episode_offsets[-1]) if episodes >= 0 else 0
        if episodes < 1:
            raise APIUsageError("an offline dataset needs at least one episode")
        if self.episode_offsets[0] != 0 or np.any(np.diff(self.episode_offsets) < 1):
            raise APIUsageError("episode_offsets must start at 0 and grow by at least one step per episode")
        expected = {
            "observations": (steps + episodes, self.obs_layout.flat_size),
            "actions": (steps, *self.action_layout.flat_space.shape),
            "rewards": (steps,),
            "terminations": (steps,),
            "truncations": (steps,),
        }
        for name, shape in expected.items():
            got = getattr(self, name).shape
            if got != shape:
                raise APIUsageError(f"offline dataset field {name!r} has shape {got}; expected {shape} for "
                                    f"{episodes} episodes of {steps} steps")
        if self.observations.dtype != self.obs_layout.flat_dtype:
            raise APIUsageError(f"offline dataset observations are {self.observations.dtype}; the layout's rows are "
                                f"{self.obs_layout.flat_dtype}")
        if self.action_masks is not None:
            if len(self.action_masks) != steps + episodes:
                raise APIUsageError(f"offline dataset action_masks has {len(self.action_masks)} rows; expected "
                                    f"{steps + episodes}, one per observation")
            width = action_mask_width(self.action_layout) if self.action_layout.kind != "continuous" else 0
            if self.action_masks.shape != (steps + episodes, width) or not width:
                raise APIUsageError(f"offline dataset action_masks has shape {self.action_masks.shape}; the "
                                    f"{self.action_layout.kind} actions {self.action_layout.flat_space} need "
                                    + (f"[{steps + episodes}, {width}] (one column per choice) or None" if width
                                       else "none (leave action_masks=None)"))
        for name in ("agents", "agent_types"):
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, np.zeros(episodes, np.int32))
            elif np.shape(value) != (episodes,):
                raise APIUsageError(f"offline dataset field {name!r} has shape {np.shape(value)}; expected "
                                    f"({episodes},), one entry per episode")

    @property
    def num_episodes(self) -> int:
        return len(self.episode_offsets) - 1

    @property
    def num_steps(self) -> int:
        return int(self.episode_offsets[-1])

    @property
    def episode_lengths(self) -> np.ndarray:
        """``int64[E]``."""
        return np.diff(self.episode_offsets)

    @property
    def obs_offsets(self) -> np.ndarray:
        """``int64[E + 1]``: episode ``i``'s observation rows are ``[obs_offsets[i], obs_offsets[i+1])``."""
        return self.episode_offsets + np.arange(self.num_episodes + 1)

    @property
    def episode_of_step(self) -> np.ndarray:
        """``int64[T]``: the episode each step belongs to."""
        return np.repeat(np.arange(self.num_episodes), self.episode_lengths)

    @property
    def obs_index(self) -> np.ndarray:
        """``int64[T]``: the observation row each step acted on (step ``t`` of episode ``i`` -> ``t + i``)."""
        return np.arange(self.num_steps) + self.episode_of_step

    @property
    def next_obs_index(self) -> np.ndarray:
        """``int64[T]``: the observation row after each step."""
        return self.obs_index + 1

    def episode_returns(self) -> np.ndarray:
        """``float64[E]``: undiscounted return of each episode."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_offsets[:-1])

    def returns_to_go(self, gamma: float = 1.0) -> np.ndarray:
        """``float32[T]``: the (discounted) sum of rewards from each step to its episode's end."""
        out = np.empty(self.num_steps, np.float64)
        rewards = self.rewards.astype(np.float64)
        for start, stop in zip(self.episode_offsets[:-1], self.episode_offsets[1:], strict=True):
            running = 0.0
            for t in range(stop - 1, start - 1, -1):
                running = rewards[t] + gamma * running
                out[t] = running
        return out.astype(np.float32)

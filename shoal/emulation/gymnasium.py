"""GymnasiumEmulator: a single-agent ``gymnasium.Env`` as one slot with flat observations and actions."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from shoal.emulation.actions import ActionLayout
from shoal.emulation.base import ACTION_MASK_KEY, Buffers, Emulator, State, split_action_mask
from shoal.emulation.flatten import Flattener, flatten
from shoal.emulation.layout import compile_layout
from shoal.emulation.stats import EpisodeStats
from shoal.errors import APIUsageError

__all__ = ["GymnasiumEmulator"]

StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]


class GymnasiumEmulator(Emulator):
    """Wrap a ``gymnasium.Env`` as an emulated env with ``num_agents == 1``.

    * Observations are flattened into ``obs[0]`` (``[1, flat_size]``); a legal-action mask found under
      ``action_mask_key`` in a Dict observation or in ``info`` is moved to ``action_masks[0]``.
    * Actions are flat (see :class:`~shoal.emulation.actions.ActionLayout`) with shape ``[1, *flat_shape]`` and
      are converted back to the env's native structure before ``env.step``.
    * Episodes auto-reset in the same step. That step's ``infos[0]`` holds the env's last step info plus
      ``"final_observation"`` (the flat final observation, a copy, for bootstrapping truncated episodes),
      ``"episode"`` (``{"return", "length"}``) and ``"reset_info"``; ``obs`` already holds the new episode's
      first observation.

    The returned arrays are the emulator's buffers: they are overwritten by the next call, copy what you keep.

    Args:
        env: the environment. Its spaces may be any nesting of supported spaces.
        buffers: arrays to write into (see :class:`Buffers`); allocated when omitted.
        action_mask_key: key of the legal-action mask in a Dict observation or in infos; ``None`` disables it.
        check_observations: check the first observation against the observation space.
    """

    def __init__(self, env: gym.Env, buffers: Buffers | None = None, action_mask_key: str | None = ACTION_MASK_KEY,
                 check_observations: bool = True) -> None:
        if not isinstance(env, gym.Env):
            raise APIUsageError(f"GymnasiumEmulator needs a gymnasium.Env, got {type(env).__name__}; use "
                                "shoal.emulate() to pick the emulator for PettingZoo envs")
        self.env = env
        obs_space, self._mask_in_obs = split_action_mask(env.observation_space, action_mask_key)
        self._mask_key = action_mask_key
        self.obs_layout = compile_layout(obs_space)
        self.action_layout = ActionLayout(env.action_space)
        self.num_agents = 1
        self.agents = ["agent_0"]
        self.stats = EpisodeStats(1)
        self._check = check_observations
        self.buffers = Buffers.allocate(self.buffer_spec())
        if buffers is not None:
            self.attach(buffers)
        else:
            self._bind()
        self._discrete_n = int(self.action_layout.flat_space.n) if self.action_layout.kind == "discrete" else 0
        self._discrete_start = self._root_start()

    def _root_start(self) -> int:
        space = self.env.action_space
        return int(space.start) if isinstance(space, gym.spaces.Discrete) else 0

    def _bind(self) -> None:
        self._writer = Flattener(self.obs_layout, self.buffers.obs[0])
        self.buffers.agent_types[:] = 0

    # ----------------------------------------------------------------------------------------------------------

    def _write(self, obs: Any, info: dict[str, Any]) -> None:
        mask = None
        if self._mask_in_obs:
            mask = obs[self._mask_key]
            obs = {key: value for key, value in obs.items() if key != self._mask_key}
        elif self._mask_key is not None and info and self._mask_key in info:
            mask = info[self._mask_key]
        self._writer.write(obs)
        action_masks = self.buffers.action_masks
        if action_masks is not None:
            action_masks[0] = True if mask is None else np.asarray(mask).reshape(-1).astype(bool)

    def _strip_mask(self, obs: Any) -> Any:
        if self._mask_in_obs:
            return {key: value for key, value in obs.items() if key != self._mask_key}
        return obs

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Reset the env (seeded when ``seed`` is given).

        Returns:
            ``obs`` ``[1, flat_size]`` and ``infos``, a list with the env's reset info.
        """
        if self._state is State.CLOSED:
            self._require_ready("reset")
        obs, info = self.env.reset(seed=seed, options=options)
        if self._check:
            self.check_first_observation(self.env.observation_space, obs, f"{type(self.env.unwrapped).__name__}")
            self._check = False
        self._write(obs, info)
        buffers = self.buffers
        buffers.masks[0] = True
        buffers.rewards[0] = 0.0
        buffers.terminals[0] = False
        buffers.truncations[0] = False
        self.stats.reset()
        self._state = State.READY
        return buffers.obs, [info]

    def _native_action(self, actions: Any) -> Any:
        if self._discrete_n:
            actions = np.asarray(actions)
            if actions.shape == (1,) and actions.dtype.kind in "iu":
                a = int(actions[0])
                if 0 <= a < self._discrete_n:
                    return a + self._discrete_start
        actions = self.action_layout.validate(actions, 1)
        return self.action_layout.to_native(actions[0])

    def step(self, actions: np.ndarray) -> StepResult:
        """Apply ``actions[0]`` (flat; shape ``[1, *flat_shape]``); auto-reset when the episode ends.

        Returns:
            ``(obs [1, flat_size], rewards float32[1], terminals bool[1], truncations bool[1], infos [dict])``.
        """
        if self._state is not State.READY:
            self._require_ready("step")
        obs, reward, terminated, truncated, info = self.env.step(self._native_action(actions))
        buffers = self.buffers
        buffers.rewards[0] = reward
        buffers.terminals[0] = terminated
        buffers.truncations[0] = truncated
        self.stats.add(0, reward)
        if terminated or truncated:
            info = dict(info)
            info["final_observation"] = flatten(self.obs_layout, self._strip_mask(obs))
            info["episode"] = self.stats.finish(0)
            obs, reset_info = self.env.reset()
            info["reset_info"] = reset_info
            self._write(obs, reset_info)
        else:
            self._write(obs, info)
        return buffers.obs, buffers.rewards, buffers.terminals, buffers.truncations, [info]

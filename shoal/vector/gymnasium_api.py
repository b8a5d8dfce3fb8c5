"""GymnasiumVectorEnv: a ``gymnasium.vector.VectorEnv`` over any shoal backend, for existing training code.

Swap the constructor and keep the loop (CleanRL style)::

    envs = GymnasiumVectorEnv([make_env(env_id, i) for i in range(num_envs)], backend="multiprocessing")
    obs, infos = envs.reset(seed=seed)
    obs, rewards, terminations, truncations, infos = envs.step(actions)

Single-agent envs only (``agents_per_env == 1``) and synchronous batches (``batch_size == num_envs``).
Observations and actions are shoal's flat forms: identical to the env's own for ``Box`` observations and
``Discrete``/``MultiDiscrete``/``Box`` actions; nested observations arrive as flat rows (rebuild them with
``shoal.emulation.unflatten(envs.obs_layout, obs)``).

Two autoreset modes, as Gymnasium 1.x defines them (``autoreset_mode=``, also in ``metadata["autoreset_mode"]``):

* ``AutoresetMode.SAME_STEP`` (default): when an episode ends, ``obs`` already holds the next episode's first
  observation and ``infos`` carries, Gymnasium style (a key's array plus its ``"_key"`` mask), ``"final_obs"`` and
  ``"final_info"`` of the finished episode, then the reset info. ``final_info["episode"] = {"r", "l"}`` holds the
  episode's return and length, as a per-env ``RecordEpisodeStatistics`` would.
* ``AutoresetMode.NEXT_STEP``: the step that ends an episode returns its final observation in ``obs`` and its own
  info (plus ``"episode" = {"r", "l"}``); the env's next step ignores its action and resets it: ``obs`` is the new
  episode's first observation, the reward 0, terminations and truncations False, the info the reset info. This is
  what ``gymnasium.vector.SyncVectorEnv(..., autoreset_mode=AutoresetMode.NEXT_STEP)`` returns, step for step, and
  what wrappers such as ``gymnasium.wrappers.vector.NormalizeObservation`` require. shoal's emulators reset in the
  same step, so each env is wrapped in :class:`DeferredReset`, which answers that reset with the final observation
  and resets the env on its next step; it therefore needs env constructors, not a ready vector env.

The vector ``gymnasium.wrappers.vector.RecordEpisodeStatistics`` works on top of either mode.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from shoal.errors import APIUsageError
from shoal.vector.base import VecEnv

__all__ = ["DeferredReset", "GymnasiumVectorEnv"]

_MODES = (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP)

_SHOAL_KEYS = ("final_observation", "episode", "reset_info")


class GymnasiumVectorEnv(VectorEnv):
    """Expose a shoal vector env through the ``gymnasium.vector.VectorEnv`` API.

    Args:
        env_fns: a shoal :class:`~shoal.vector.base.VecEnv`, or what :func:`shoal.vector.make` takes: a list of
            env constructors (one per env, like ``SyncVectorEnv``) or one constructor with ``num_envs``.
        num_envs: number of envs when ``env_fns`` is a single constructor.
        copy: return copies of the observations (like Gymnasium's default) instead of views that the next
            step overwrites.
        autoreset_mode: ``AutoresetMode.SAME_STEP`` (default) or ``AutoresetMode.NEXT_STEP`` (or their string
            values), see the module docstring. ``NEXT_STEP`` needs env constructors.
        **make_kwargs: passed to :func:`shoal.vector.make` (``backend``, ``num_workers``, ...).

    Attributes:
        vecenv: the wrapped shoal vector env; ``obs_layout``/``action_layout`` are forwarded from it.
    """

    def __init__(self, env_fns: VecEnv | Callable[[], Any] | Sequence[Callable[[], Any]],
                 num_envs: int | None = None, copy: bool = True,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP, **make_kwargs: Any) -> None:
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError:
            mode = None
        if mode not in _MODES:
            raise APIUsageError(f"autoreset_mode={autoreset_mode!r} is not supported; valid choices: "
                                f"{[m.value for m in _MODES]} (gymnasium.vector.AutoresetMode)")
        next_step = mode is AutoresetMode.NEXT_STEP
        if isinstance(env_fns, VecEnv):
            if num_envs is not None or make_kwargs:
                raise APIUsageError("num_envs and make keywords are for building a vector env; "
                                    "give either a VecEnv or env constructors")
            if next_step:
                raise APIUsageError("autoreset_mode=NEXT_STEP needs env constructors (each env is wrapped to defer "
                                    "its reset); a ready shoal VecEnv resets in the same step. Pass the env_fns "
                                    "instead, or use autoreset_mode=SAME_STEP")
            vecenv = env_fns
        else:
            from shoal.vector import make

            if num_envs is None:
                if callable(env_fns):
                    raise APIUsageError("num_envs is required with a single env constructor; or pass a list")
                num_envs = len(env_fns)
            if next_step:
                fns = [env_fns] * num_envs if callable(env_fns) else list(env_fns)
                env_fns = [functools.partial(_deferred, fn) for fn in fns]
            vecenv = make(env_fns, num_envs, **make_kwargs)
        if vecenv.agents_per_env != 1 or vecenv.batch_size != vecenv.num_envs:
            vecenv.close()
            raise APIUsageError(
                f"GymnasiumVectorEnv needs single-agent envs and synchronous batches; got agents_per_env="
                f"{vecenv.agents_per_env}, batch_size={vecenv.batch_size}, num_envs={vecenv.num_envs}. Use the "
                "shoal VecEnv API directly for multi-agent envs and partial batches")
        self.vecenv = vecenv
        self.copy = copy
        self.autoreset_mode = mode
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        # NEXT_STEP: envs whose episode counts one reset step too many (every episode after an autoreset).
        self._reset_step = np.zeros(vecenv.num_envs, np.int64)
        self.num_envs = vecenv.num_envs
        self.single_observation_space = vecenv.single_observation_space
        self.single_action_space = vecenv.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.obs_layout = vecenv.obs_layout
        self.action_layout = vecenv.action_layout

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env: env ``i`` gets ``seed + i`` (a list must be exactly ``[seed + i]``).

        Returns:
            ``obs`` ``[num_envs, *obs_shape]`` and the reset infos (Gymnasium vector format).
        """
        if options:
            raise APIUsageError("reset(options=...) is not supported by shoal vector envs; configure the env "
                                "in its constructor instead")
        if seed is not None and not isinstance(seed, int | np.integer):
            seeds = list(seed)
            if len(seeds) != self.num_envs or seeds != [seeds[0] + i for i in range(self.num_envs)]:
                raise APIUsageError(f"reset(seed=...) takes an int (env i gets seed + i) or the list "
                                    f"[seed + i for i in range({self.num_envs})]; got {seeds!r}")
            seed = seeds[0]
        if seed is not None:
            self._np_random, self._np_random_seed = None, int(seed)
        obs, infos = self.vecenv.reset(seed=seed)
        self._reset_step[:] = 0
        vector_infos: dict[str, Any] = {}
        for i, info in enumerate(infos):
            if info:
                vector_infos = self._add_info(vector_infos, info, i)
        return (obs.copy() if self.copy else obs), vector_infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every env with ``actions`` ``[num_envs, *action_shape]``; envs autoreset as ``autoreset_mode`` says.

        Returns:
            ``(obs, rewards float64[num_envs], terminations bool[num_envs], truncations bool[num_envs], infos)``.
        """
        obs, rewards, terminals, truncations, infos = self.vecenv.step(actions)
        vector_infos: dict[str, Any] = {}
        next_step = self.autoreset_mode is AutoresetMode.NEXT_STEP
        for i, info in enumerate(infos):
            if not info:
                continue
            info = self._next_step_info(info, i) if next_step else _to_gymnasium(info)
            vector_infos = self._add_info(vector_infos, info, i)
        return ((obs.copy() if self.copy else obs), rewards.astype(np.float64), terminals.copy(),
                truncations.copy(), vector_infos)

    def _next_step_info(self, info: dict[str, Any], i: int) -> dict[str, Any]:
        """The info of env ``i`` in next-step form: an episode end keeps its own info plus ``"episode"``."""
        if "final_observation" not in info:
            return info
        out = {key: value for key, value in info.items() if key not in _SHOAL_KEYS}
        episode = info.get("episode")
        if episode is not None:  # the emulator counted the deferred reset step into the episode: not Gymnasium's
            theirs = {k: v for k, v in episode.items() if k not in ("return", "length")}
            out["episode"] = {"r": episode["return"], "l": episode["length"] - self._reset_step[i], **theirs}
        self._reset_step[i] = 1
        return out

    def close_extras(self, **kwargs: Any) -> None:
        """Close the wrapped shoal vector env (workers, shared memory, envs)."""
        self.vecenv.close()

    def __enter__(self) -> GymnasiumVectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_gymnasium(info: dict[str, Any]) -> dict[str, Any]:
    """Translate a shoal emulator's info into Gymnasium's same-step autoreset form (episode ends only)."""
    if "final_observation" not in info:
        return info
    final_info = {key: value for key, value in info.items() if key not in _SHOAL_KEYS}
    episode = info.get("episode")
    if episode is not None:  # Gymnasium's names; an env's own keys (e.g. RecordEpisodeStatistics' "r", "t") win
        theirs = {k: v for k, v in episode.items() if k not in ("return", "length")}
        final_info["episode"] = {"r": episode["return"], "l": episode["length"], **theirs}
    out: dict[str, Any] = {"final_obs": info["final_observation"], "final_info": final_info}
    out.update(info.get("reset_info") or {})
    return out


class DeferredReset(gym.Wrapper):
    """Turns the same-step reset of the shoal emulator around it into Gymnasium's next-step autoreset.

    When an episode ends, the emulator resets the env at once; this wrapper answers that reset with the final
    observation (and an empty info) and resets the wrapped env on the next :meth:`step` instead, ignoring its
    action and returning ``(first observation, 0.0, False, False, reset info)``. A reset while one is deferred (an
    explicit ``reset(seed=...)`` of the vector env) resets at once. The wrapped env's RNG sees the same calls in
    the same order as under ``SyncVectorEnv``'s next-step mode.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._final: Any = None  # the last observation of an episode that just ended, until the emulator resets
        self._deferred = False

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._deferred:
            self._deferred = False
            obs, info = self.env.reset()
            return obs, 0.0, False, False, info
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            self._final = obs
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if self._final is not None:  # the emulator's reset right after the episode's last step
            obs, self._final = self._final, None
            self._deferred = True
            return obs, {}
        self._deferred = False
        return self.env.reset(seed=seed, options=options)


def _deferred(env_fn: Callable[[], Any]) -> DeferredReset:
    """``env_fn()`` wrapped in :class:`DeferredReset` (module level, so it pickles for worker processes)."""
    env = env_fn()
    if not isinstance(env, gym.Env):
        raise APIUsageError(f"autoreset_mode=NEXT_STEP needs gymnasium.Env constructors; {env_fn!r} returned "
                            f"{type(env).__name__}")
    return DeferredReset(env)

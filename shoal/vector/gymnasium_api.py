"""GymnasiumVectorEnv: a ``gymnasium.vector.VectorEnv`` over any shoal backend, for existing training code.

Swap the constructor and keep the loop (CleanRL style)::

    envs = GymnasiumVectorEnv([make_env(env_id, i) for i in range(num_envs)], backend="multiprocessing")
    obs, infos = envs.reset(seed=seed)
    obs, rewards, terminations, truncations, infos = envs.step(actions)

Single-agent envs only (``agents_per_env == 1``) and synchronous batches (``batch_size == num_envs``).
Observations and actions are shoal's flat forms: identical to the env's own for ``Box`` observations and
``Discrete``/``MultiDiscrete``/``Box`` actions; nested observations arrive as flat rows (rebuild them with
``shoal.emulation.unflatten(envs.obs_layout, obs)``).

Autoreset is same-step (``metadata["autoreset_mode"] == AutoresetMode.SAME_STEP``): when an episode ends, ``obs``
already holds the next episode's first observation and ``infos`` carries, Gymnasium style (a key's array plus
its ``"_key"`` mask), ``"final_obs"`` and ``"final_info"`` of the finished episode, then the reset info.
``final_info["episode"] = {"r", "l"}`` holds the episode's return and length, as a per-env
``RecordEpisodeStatistics`` would; the vector ``gymnasium.wrappers.vector.RecordEpisodeStatistics`` works on top.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from shoal.errors import APIUsageError
from shoal.vector.base import VecEnv

__all__ = ["GymnasiumVectorEnv"]

_SHOAL_KEYS = ("final_observation", "episode", "reset_info")


class GymnasiumVectorEnv(VectorEnv):
    """Expose a shoal vector env through the ``gymnasium.vector.VectorEnv`` API.

    Args:
        env_fns: a shoal :class:`~shoal.vector.base.VecEnv`, or what :func:`shoal.vector.make` takes: a list of
            env constructors (one per env, like ``SyncVectorEnv``) or one constructor with ``num_envs``.
        num_envs: number of envs when ``env_fns`` is a single constructor.
        copy: return copies of the observations (like Gymnasium's default) instead of views that the next
            step overwrites.
        **make_kwargs: passed to :func:`shoal.vector.make` (``backend``, ``num_workers``, ...).

    Attributes:
        vecenv: the wrapped shoal vector env; ``obs_layout``/``action_layout`` are forwarded from it.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env_fns: VecEnv | Callable[[], Any] | Sequence[Callable[[], Any]],
                 num_envs: int | None = None, copy: bool = True, **make_kwargs: Any) -> None:
        if isinstance(env_fns, VecEnv):
            if num_envs is not None or make_kwargs:
                raise APIUsageError("num_envs and make keywords are for building a vector env; "
                                    "give either a VecEnv or env constructors")
            vecenv = env_fns
        else:
            from shoal.vector import make

            if num_envs is None:
                if callable(env_fns):
                    raise APIUsageError("num_envs is required with a single env constructor; or pass a list")
                num_envs = len(env_fns)
            vecenv = make(env_fns, num_envs, **make_kwargs)
        if vecenv.agents_per_env != 1 or vecenv.batch_size != vecenv.num_envs:
            vecenv.close()
            raise APIUsageError(
                f"GymnasiumVectorEnv needs single-agent envs and synchronous batches; got agents_per_env="
                f"{vecenv.agents_per_env}, batch_size={vecenv.batch_size}, num_envs={vecenv.num_envs}. Use the "
                "shoal VecEnv API directly for multi-agent envs and partial batches")
        self.vecenv = vecenv
        self.copy = copy
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
        vector_infos: dict[str, Any] = {}
        for i, info in enumerate(infos):
            if info:
                vector_infos = self._add_info(vector_infos, info, i)
        return (obs.copy() if self.copy else obs), vector_infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every env with ``actions`` ``[num_envs, *action_shape]``; envs autoreset in the same step.

        Returns:
            ``(obs, rewards float64[num_envs], terminations bool[num_envs], truncations bool[num_envs], infos)``.
        """
        obs, rewards, terminals, truncations, infos = self.vecenv.step(actions)
        vector_infos: dict[str, Any] = {}
        for i, info in enumerate(infos):
            if info:
                vector_infos = self._add_info(vector_infos, _to_gymnasium(info), i)
        return ((obs.copy() if self.copy else obs), rewards.astype(np.float64), terminals.copy(),
                truncations.copy(), vector_infos)

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

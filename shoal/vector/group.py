"""EnvGroup: a run of consecutive envs stepped in one process, each writing straight into its rows of the buffers.

Every backend is built from groups: the serial backend holds them all in-process, a multiprocessing worker holds
one over a slice of shared memory, a Ray actor holds one over its own arrays. A group steps its envs the fastest
exact way they allow (see :meth:`EnvGroup._link_batch`): as one :class:`~shoal.emulation.gymnasium_batch.
GymnasiumBatch`, or through each env's checked ``step``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from shoal.emulation import Emulator, emulate
from shoal.emulation.gymnasium_batch import GymnasiumBatch
from shoal.errors import APIUsageError
from shoal.vector.buffers import env_buffers
from shoal.vector.snapshot import dumps_env

__all__ = ["EnvGroup", "InfoPairs", "make_emulator"]

log = logging.getLogger(__name__)

#: ``(row, info)`` for every agent row with a non-empty info dict; rows count from the group's first row.
InfoPairs = list[tuple[int, dict[str, Any]]]


def make_emulator(env_fn: Callable[[], Any], emulate_kwargs: dict[str, Any]) -> Emulator:
    """Call ``env_fn`` and wrap what it returns with :func:`shoal.emulate` (an emulator is kept as is).

    The emulators skip their own NaN/infinity check unless ``emulate_kwargs`` asks for it: the vector env checks
    whole batches itself, more cheaply and naming the env's index (``check_finite`` of :func:`shoal.vector.make`).
    """
    return emulate(env_fn(), **{"check_finite": False, **emulate_kwargs})


class EnvGroup:
    """Consecutive envs of one vector env, stepped in turn by the process that holds them.

    Args:
        env_fns: one callable per env of the group, each returning a gymnasium/PettingZoo env or an emulator.
        arrays: the group's rows of every buffer (see :class:`~shoal.vector.buffers.BufferLayout`), including
            ``actions`` ``[rows, *flat_action_shape]``, which :meth:`step` reads.
        agents_per_env: slots per env (``A``); env ``i`` of the group owns rows ``[i * A, (i + 1) * A)``.
        emulate_kwargs: keywords for :func:`shoal.emulate`.
        first: an already built emulator to use as the group's first env (the serial backend's probe env).
        first_env: global index of the group's first env, for error messages.
    """

    def __init__(self, env_fns: Sequence[Callable[[], Any]], arrays: dict[str, np.ndarray], agents_per_env: int,
                 emulate_kwargs: dict[str, Any], first: Emulator | None = None, first_env: int = 0) -> None:
        self.envs: list[Emulator] = []
        self.agents_per_env = agents_per_env
        self._arrays = arrays
        self._flat_actions = arrays["actions"]
        self._batch: GymnasiumBatch | None = None
        try:
            for i, env_fn in enumerate(env_fns):
                env = first if i == 0 and first is not None else make_emulator(env_fn, emulate_kwargs)
                self.envs.append(env)
                buffers = env_buffers(arrays, i, agents_per_env)
                try:
                    env.attach(buffers)
                except APIUsageError as exc:
                    ours = {name: (a.shape, str(a.dtype)) for name, a in vars(buffers).items() if a is not None}
                    theirs = {name: (shape, str(np.dtype(dtype))) for name, (shape, dtype) in env.buffer_spec().items()}
                    differ = sorted(name for name in ours.keys() | theirs.keys() if ours.get(name) != theirs.get(name))
                    ours = {name: ours.get(name) for name in differ}
                    theirs = {name: theirs.get(name) for name in differ}
                    raise APIUsageError(
                        f"env {first_env + i} does not match env 0: its buffers (shape, dtype) are {theirs} but env "
                        f"0's are {ours}. Every env of a vector env needs the same observation and action spaces "
                        "and number of agents (max_agents).") from exc
        except BaseException:
            self.close()
            raise
        a = agents_per_env
        self._actions = [arrays["actions"][i * a : (i + 1) * a] for i in range(len(self.envs))]

    def _link_batch(self) -> None:
        """Step the envs as one :class:`GymnasiumBatch` when they allow it (ready single-agent emulators with a
        plain Box observation and one shared Discrete action table, stepping with the class's own code); else
        each env's checked ``step`` runs."""
        batchable = bool(self.envs) and self._flat_actions.ndim == 1
        self._batch = GymnasiumBatch.build(self.envs, self._arrays) if batchable else None

    def reset(self, seeds: Sequence[int | None]) -> InfoPairs:
        """Reset env ``i`` of the group with ``seeds[i]``; return the non-empty reset infos."""
        pairs: InfoPairs = []
        a = self.agents_per_env
        # Step one by one until every env is reset (an env that fails to reset leaves the others checked).
        if self._batch is not None:
            self._batch.flush()
        self._batch = None
        for i, (env, seed) in enumerate(zip(self.envs, seeds, strict=True)):
            for j, info in enumerate(env.reset(seed=seed)[1]):
                if info:
                    pairs.append((i * a + j, info))
        self._link_batch()
        return pairs

    def step(self) -> InfoPairs:
        """Step every env with its rows of ``arrays["actions"]``; return the non-empty step infos."""
        if self._batch is not None:
            return self._batch.step(self._flat_actions)
        pairs: InfoPairs = []
        if self.agents_per_env == 1:
            for i, (env, actions) in enumerate(zip(self.envs, self._actions, strict=True)):
                info = env.step(actions)[4][0]
                if info:
                    pairs.append((i, info))
            return pairs
        a = self.agents_per_env
        for i, (env, actions) in enumerate(zip(self.envs, self._actions, strict=True)):
            for j, info in enumerate(env.step(actions)[4]):
                if info:
                    pairs.append((i * a + j, info))
        return pairs

    def snapshot(self) -> list[bytes]:
        """Every env of the group pickled with its running state (see :func:`~shoal.vector.snapshot.dumps_env`).

        Raises what pickling raises when an env cannot be pickled.
        """
        if self._batch is not None:
            self._batch.flush()
        return [dumps_env(env) for env in self.envs]

    def replace_envs(self, envs: Sequence[Emulator]) -> None:
        """Use ``envs`` (e.g. unpickled from :meth:`snapshot`) in place of the group's envs, closing the old ones.

        Each new env is attached to its rows of the group's buffers; the buffers' contents are not touched.
        """
        if len(envs) != len(self.envs):
            raise APIUsageError(f"{len(envs)} envs to replace a group of {len(self.envs)} envs")
        for i, env in enumerate(envs):
            env.attach(env_buffers(self._arrays, i, self.agents_per_env))
        old, self.envs = self.envs, list(envs)
        self._link_batch()
        for env in old:
            try:
                env.close()
            except Exception:  # the replaced env is discarded either way
                log.debug("closing a replaced env failed", exc_info=True)

    def close(self) -> None:
        """Close every env (each is tried even if another fails; the first error is raised afterwards)."""
        error: BaseException | None = None
        for env in self.envs:
            try:
                env.close()
            except Exception as exc:  # keep closing the others
                error = error or exc
        self.envs = []
        self._link_batch()
        if error is not None:
            raise error

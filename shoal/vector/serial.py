"""SerialVecEnv: every env in this process, all writing into one set of buffers.

Workers are in-process groups of consecutive envs, stepped lazily in submission order, so partial batches
(``batch_size < num_envs``) behave as on the other backends, deterministically.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from typing import Any

from shoal.emulation import Emulator
from shoal.errors import WorkerError
from shoal.vector.base import DEFAULT_TIMEOUT_S, VecConfig, VecEnv, buffer_layout, check_timeout
from shoal.vector.buffers import row_slice
from shoal.vector.group import EnvGroup, InfoPairs, make_emulator
from shoal.vector.snapshot import loads_env

__all__ = ["SerialVecEnv"]

log = logging.getLogger(__name__)


class SerialVecEnv(VecEnv):
    """Run ``num_envs`` emulated envs in this process (see :class:`~shoal.vector.base.VecEnv` for the API).

    Exceptions raised by an env are re-raised as :class:`~shoal.errors.WorkerError` (chained to the original)
    and close the vector env, as on the other backends.

    The only backend supporting :meth:`~shoal.vector.base.VecEnv.get_state` and
    :meth:`~shoal.vector.base.VecEnv.set_state` (synchronous batches, picklable envs).

    Args:
        config: validated arguments of :func:`shoal.vector.make`.
        timeout: taken (and checked) so that one configuration fits every backend, but not enforced: the envs step
            in the caller's own thread, and a call that hangs there cannot be interrupted safely (a signal would
            disturb the caller's own handlers and cannot stop native code). Use ``backend="multiprocessing"`` to
            bound hangs.
    """

    backend = "serial"
    KWARGS: tuple[str, ...] = ("timeout",)

    def __init__(self, config: VecConfig, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        self.timeout = check_timeout(timeout)
        probe = make_emulator(config.env_fns[0], config.emulate_kwargs)
        self._groups: list[EnvGroup] = []
        try:
            arrays = buffer_layout(probe, config.num_envs).allocate()
            self._setup(config, probe, arrays)
            a = self.agents_per_env
            for worker in range(config.num_workers):
                envs = config.worker_envs(worker)
                self._groups.append(EnvGroup(
                    [config.env_fns[e] for e in envs], row_slice(arrays, envs.start * a, envs.stop * a), a,
                    config.emulate_kwargs, first=probe if worker == 0 else None, first_env=envs.start))
        except BaseException:
            if not self._groups:
                probe.close()
            self._close_groups()
            raise
        self._pending: dict[int, list[int | None] | None] = {}

    @property
    def emulators(self) -> list[Emulator]:
        """Every env's emulator, in env order (``emulators[e].env`` is env ``e`` itself); read-only access to the
        envs, e.g. to render them or read their attributes. Stepping them directly would desynchronize the
        buffers."""
        return [env for group in self._groups for env in group.envs]

    def _submit(self, worker: int, seeds: list[int | None] | None) -> None:
        self._pending[worker] = seeds

    def _collect(self, k: int) -> list[tuple[int, InfoPairs]]:
        done = []
        for worker in list(self._in_flight)[:k]:
            seeds = self._pending.pop(worker)
            group = self._groups[worker]
            try:
                pairs = group.step() if seeds is None else group.reset(seeds)
            except Exception as exc:
                envs = self.config.worker_envs(worker)
                raise WorkerError(f"an env of serial group {worker} (envs {envs.start}..{envs.stop - 1}) raised "
                                  f"during {'step' if seeds is None else 'reset'}:\n{traceback.format_exc()}"
                                  ) from exc
            done.append((worker, pairs))
        return done

    def _snapshot_envs(self) -> list[list[bytes]] | None:
        try:
            return [group.snapshot() for group in self._groups]
        except Exception as exc:  # an unpicklable env: no snapshot
            log.debug("env snapshot impossible: %s: %s", type(exc).__name__, exc)
            return None

    def _restore_envs(self, snapshots: list[list[bytes]]) -> bool:
        if [len(group.envs) for group in self._groups] != [len(blobs) for blobs in snapshots]:
            return False
        envs: list[list[Any]] = []
        try:  # every env loads before any is replaced
            for blobs in snapshots:
                envs.append([])
                for raw in blobs:
                    envs[-1].append(loads_env(raw))
        except Exception as exc:  # e.g. an env class renamed or moved since the snapshot: the caller restarts them
            log.warning("cannot load the envs of this snapshot (%s: %s); the running envs are left as they are",
                        type(exc).__name__, exc)
            for env in (env for group in envs for env in group):
                with contextlib.suppress(Exception):  # closing a half-restored copy must not hide why it failed
                    env.close()
            return False
        for group, group_envs in zip(self._groups, envs, strict=True):
            group.replace_envs(group_envs)
        return True

    def _close_groups(self) -> None:
        groups, self._groups = self._groups, []
        for worker, group in enumerate(groups):
            try:
                group.close()
            except Exception:  # said, not raised, as on the other backends; the other groups are closed anyway
                envs = self.config.worker_envs(worker)
                log.warning("an env of serial group %d (envs %d..%d) raised during close:\n%s", worker, envs.start,
                            envs.stop - 1, traceback.format_exc())

    def _shutdown(self) -> None:
        self._pending.clear()
        self._close_groups()

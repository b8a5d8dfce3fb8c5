"""RayVecEnv: each worker a Ray actor hosting one group of envs, so rollouts can span the machines of a cluster.

Connect first with ``ray.init(address=...)`` (or pass ``address=`` to :func:`shoal.vector.make`); without a running
Ray, a local instance is started and left running for later vector envs (``ray.shutdown()`` stops it). Every node
needs shoal and the env's packages installed, and ``env_fn`` must be picklable by cloudpickle. Ray is imported only
when this backend is used.

Same API and semantics as the other backends: an actor steps its envs into its own arrays and returns them with
the non-empty infos; the parent copies them into its buffers, so batches, seeds and infos are identical.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from shoal.errors import APIUsageError, WorkerError
from shoal.vector.base import DEFAULT_TIMEOUT_S, VecConfig, VecEnv, buffer_layout, check_timeout
from shoal.vector.buffers import BufferLayout
from shoal.vector.group import EnvGroup, InfoPairs, make_emulator
from shoal.vector.multiprocessing import available_cores

__all__ = ["RayVecEnv", "connect_ray", "default_ray_workers"]

_CLOSE_TIMEOUT_S = 5.0
_log = logging.getLogger(__name__)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

Result = tuple[dict[str, np.ndarray], InfoPairs]


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise APIUsageError("backend='ray' needs Ray: pip install 'shoal[ray]'") from exc
    return ray


def default_ray_workers(address: str | None = None) -> int:
    """The number of CPUs of the Ray cluster (connecting to it, or starting a local one, if needed)."""
    return max(1, int(connect_ray(address).cluster_resources().get("CPU", 1)))


class RayEnvGroup:
    """The Ray actor: one :class:`EnvGroup` over arrays of its own (``agents_per_env`` rows per env)."""

    def __init__(self, env_fns: Sequence[Callable[[], Any]], first_env: int, layout: BufferLayout,
                 emulate_kwargs: dict[str, Any]) -> None:
        self.arrays = layout.allocate()
        self.group = EnvGroup(env_fns, self.arrays, layout.agents_per_env, emulate_kwargs, first_env=first_env)
        self.outputs = {name: array for name, array in self.arrays.items() if name != "actions"}

    def ready(self) -> bool:
        return True

    def reset(self, seeds: list[int | None]) -> Result:
        return self.outputs, self.group.reset(seeds)

    def step(self, actions: np.ndarray) -> Result:
        self.arrays["actions"][...] = actions
        return self.outputs, self.group.step()

    def close(self) -> None:
        self.group.close()


_ACTOR_CLASS: Any = None


def _actor_class(ray: Any) -> Any:
    """``ray.remote(RayEnvGroup)``, defined once per process."""
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        _ACTOR_CLASS = ray.remote(RayEnvGroup)
    return _ACTOR_CLASS


class RayVecEnv(VecEnv):
    """Run ``num_envs`` emulated envs on ``num_workers`` Ray actors (see :class:`~shoal.vector.base.VecEnv`).

    Args:
        config: validated arguments of :func:`shoal.vector.make`.
        address: Ray cluster to connect to when Ray is not initialized yet (None: start a local instance).
        actor_options: passed to ``ActorClass.options`` (e.g. ``{"num_cpus": 1}``, ``{"resources": ...}``).
        timeout: seconds to wait for an actor's startup, reset or step before raising
            :class:`~shoal.errors.WorkerTimeoutError` (a :class:`WorkerError` naming the actors, their envs, the
            call and the limit) and closing the vector env: the hung actors are killed at once, so the error comes
            within about a second of the limit. Startup includes placing the actors: raise the limit on a cluster
            that must scale up first. Default :data:`~shoal.vector.base.DEFAULT_TIMEOUT_S` (60); None waits for
            ever. ``close()`` gives the other actors 5 s in all to close their envs, then kills them.

    The envs live in the actors: :meth:`~shoal.vector.base.VecEnv.get_state` returns None and
    :meth:`~shoal.vector.base.VecEnv.set_state` returns False (use the serial backend for env snapshots).
    """

    backend = "ray"
    KWARGS = ("address", "actor_options", "timeout")

    def __init__(self, config: VecConfig, address: str | None = None, actor_options: dict[str, Any] | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        if actor_options is not None and not isinstance(actor_options, dict):
            raise APIUsageError(f"actor_options must be a dict for ActorClass.options, got {actor_options!r}")
        timeout = check_timeout(timeout)
        ray = connect_ray(address)
        self._ray = ray
        self.timeout = timeout
        probe = make_emulator(config.env_fns[0], config.emulate_kwargs)
        try:
            self._setup(config, probe, buffer_layout(probe, config.num_envs).allocate())
            group_layout = buffer_layout(probe, config.envs_per_worker)
        finally:
            probe.close()
        actor_cls = _actor_class(ray).options(**(actor_options or {}))
        self._actors: list[Any] = []
        self._refs: dict[int, Any] = {}
        self._stuck: set[int] = set()  # actors that timed out: killed without waiting for them to close
        self._calls: dict[int, str] = {}  # each actor's call in flight, for error messages
        rows = self.envs_per_worker * self.agents_per_env
        self._rows = [slice(w * rows, (w + 1) * rows) for w in range(config.num_workers)]
        try:
            for worker in range(config.num_workers):
                envs = config.worker_envs(worker)
                self._actors.append(actor_cls.remote(config.env_fns[envs.start : envs.stop], envs.start,
                                                     group_layout, config.emulate_kwargs))
            for worker, actor in enumerate(self._actors):
                self._refs[worker] = actor.ready.remote()
                self._in_flight[worker] = "startup"
            self._collect(config.num_workers, startup=True)
            self._in_flight.clear()
        except BaseException:
            self.close()
            raise

    def _submit(self, worker: int, seeds: list[int | None] | None) -> None:
        actor = self._actors[worker]
        self._calls[worker] = "step" if seeds is None else "reset"
        if seeds is None:
            self._refs[worker] = actor.step.remote(self._arrays["actions"][self._rows[worker]])
        else:
            self._refs[worker] = actor.reset.remote(seeds)

    def _collect(self, k: int, startup: bool = False) -> list[tuple[int, InfoPairs]]:
        ray = self._ray
        order = list(self._in_flight)
        refs = [self._refs[w] for w in order]
        ready, _ = ray.wait(refs, num_returns=k, timeout=self.timeout)
        if len(ready) < k:
            done = set(ready)
            late = [w for w in order if self._refs[w] not in done]
            self._stuck.update(late)
            raise self._timeout_error(late, self.timeout, self._who)
        ready_set = set(ready)
        chosen = [w for w in order if self._refs[w] in ready_set][:k]
        done = []
        for worker in chosen:
            try:
                result = ray.get(self._refs.pop(worker))
            except Exception as exc:
                call = "startup" if startup else self._calls.get(worker, "step")
                raise WorkerError(f"{self._who(worker)} failed during {call}. Traceback of the actor (most recent "
                                  f"call last):\n{_ANSI.sub('', str(exc))}") from exc
            if startup:
                done.append((worker, []))
                continue
            outputs, pairs = result
            rows = self._rows[worker]
            for name, array in outputs.items():
                self._arrays[name][rows] = array
            done.append((worker, pairs))
        return done

    def _who(self, worker: int) -> str:
        envs = self.config.worker_envs(worker)
        return f"Ray actor {worker} (envs {envs.start}..{envs.stop - 1})"

    def _shutdown(self) -> None:
        ray = self._ray
        actors, self._actors = self._actors, []
        self._refs.clear()
        stuck, self._stuck = self._stuck, set()
        # A hung actor runs its calls one at a time and would never get to close(): kill it without waiting.
        for worker in sorted(stuck):
            with contextlib.suppress(Exception):  # already dead
                ray.kill(actors[worker], no_restart=True)
        closing = {}
        for worker, actor in enumerate(actors):
            if worker not in stuck:
                with contextlib.suppress(Exception):  # the actor is already gone
                    closing[actor.close.remote()] = worker
        # One deadline for all: the actors close their envs side by side, not one after another.
        ready, late = ray.wait(list(closing), num_returns=len(closing), timeout=_CLOSE_TIMEOUT_S) if closing \
            else ([], [])
        for ref in ready:
            try:
                ray.get(ref)
            except Exception as exc:  # best effort: the actors are killed below either way
                _log.warning("%s failed while closing its envs: %s", self._who(closing[ref]), _ANSI.sub("", str(exc)))
        if late:
            _log.warning("shoal.vector: Ray actors %s did not finish close() within %gs (an env's close() may "
                         "hang); killing them", sorted(closing[ref] for ref in late), _CLOSE_TIMEOUT_S)
        for worker, actor in enumerate(actors):
            if worker not in stuck:
                with contextlib.suppress(Exception):  # already dead
                    ray.kill(actor, no_restart=True)


def connect_ray(address: str | None = None, num_cpus: int | None = None, **init_kwargs: Any) -> Any:
    """Connect to Ray once: ``ray.init(address=address)``, or a local ``ray.init(num_cpus=...)`` without one.

    Does nothing when Ray is already initialized (a warning says so if ``address`` was given). When joining a
    cluster, this process's ``shoal`` package is shipped to it (``runtime_env={"py_modules": [shoal]}``, about
    0.6 MB) unless ``runtime_env`` is given, so the env actors run the driver's version of shoal; the nodes need
    Ray, torch and the env's own packages installed.

    Args:
        address: a cluster address (``"HEAD_IP:6379"``, ``"ray://HEAD_IP:10001"`` or ``"auto"``); None starts a
            local Ray instance.
        num_cpus: CPUs of the local instance (default: the CPUs this process may use); ignored with an address.
        **init_kwargs: more ``ray.init`` keywords (e.g. ``runtime_env``).

    Returns:
        The ``ray`` module.
    """
    ray = _ray()
    if ray.is_initialized():
        if address is not None:
            _log.warning("Ray is already initialized in this process; ray_address=%r is ignored", address)
        return ray
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    kwargs.update(init_kwargs)
    if address is not None:
        if "runtime_env" not in kwargs:
            import shoal

            kwargs["runtime_env"] = {"py_modules": [shoal]}
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or available_cores(), **kwargs)
    return ray

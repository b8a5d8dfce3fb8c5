"""Vector envs: many emulated envs behind one batched API, in-process, in worker processes or on Ray (numpy only).

    vecenv = shoal.vector.make(functools.partial(gymnasium.make, "CartPole-v1"), num_envs=256,
                               backend="multiprocessing", num_workers=2)
    obs, infos = vecenv.reset()                              # obs [256, 4]
    obs, rewards, terminals, truncations, infos = vecenv.step(actions)

See :class:`~shoal.vector.base.VecEnv` for the full API and :class:`Batch` for what ``recv()`` returns;
``vecenv.get_state()`` / ``set_state(state)`` snapshot and restore the envs of a serial vector env.
:class:`GymnasiumVectorEnv` and :func:`to_sb3` (Stable-Baselines3) put a vector env behind other libraries' APIs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from shoal.errors import APIUsageError
from shoal.vector.base import BACKENDS, Batch, VecEnv, VecState, check_kwargs, validate_config
from shoal.vector.gymnasium_api import GymnasiumVectorEnv
from shoal.vector.multiprocessing import MultiprocessingVecEnv, available_cores
from shoal.vector.ray import RayVecEnv
from shoal.vector.serial import SerialVecEnv

if TYPE_CHECKING:
    from shoal.vector.sb3 import SB3VecEnv

__all__ = [
    # entry point
    "make",
    # results and protocol
    "Batch",
    "VecEnv",
    "VecState",
    # backends
    "MultiprocessingVecEnv",
    "RayVecEnv",
    "SerialVecEnv",
    # adapters
    "GymnasiumVectorEnv",
    "to_sb3",
]

_COMMON_KWARGS = ("emulate_kwargs", "check_finite")


def make(env_fn: Callable[[], Any] | Sequence[Callable[[], Any]], num_envs: int, backend: str = "serial",
         num_workers: int | None = None, batch_size: int | None = None, seed: int | None = 0,
         **backend_kwargs: Any) -> VecEnv:
    """Create a vector env of ``num_envs`` emulated envs.

    Args:
        env_fn: a callable returning a ``gymnasium.Env``, a PettingZoo env or an emulated env (or a list of
            ``num_envs`` such callables). Every env is wrapped with :func:`shoal.emulate`. For the
            ``multiprocessing`` backend under ``context="spawn"``/``"forkserver"`` and for ``ray``, it must be
            picklable: a module-level function or a ``functools.partial`` of one, not a lambda.
        num_envs: number of envs.
        backend: ``"serial"`` (in-process), ``"multiprocessing"`` (worker processes over shared memory) or
            ``"ray"`` (Ray actors, possibly on other machines).
        num_workers: groups of envs stepped together (processes, actors); must divide ``num_envs``. Default: 1
            for serial; for multiprocessing the largest divisor of ``num_envs`` not above the cores this process
            may run on (its CPU affinity); for ray, not above the cluster's CPUs.
        batch_size: envs per :meth:`~VecEnv.recv` batch: a multiple of ``num_envs // num_workers`` up to
            ``num_envs`` (default, synchronous). Smaller batches return the workers that finish first.
        seed: env ``i`` is reset with ``seed + i`` on its first reset (None: unseeded).
        **backend_kwargs: on every backend ``emulate_kwargs`` (dict for :func:`shoal.emulate`, e.g.
            ``{"max_agents": 8}``), ``check_finite`` (default True: every batch's rewards, observations and final
            observations are checked for NaN and infinity, and the first found raises
            :class:`~shoal.errors.NonFiniteError` naming the env, its worker, the slot, the field and the step,
            and closes the vector env; one native scan per batch, well under 1% of a CartPole batch's time) and
            ``timeout`` (seconds, default 60, None for no limit: how long the
            multiprocessing and Ray backends wait for a worker's startup, reset or step before raising
            :class:`~shoal.errors.WorkerTimeoutError`; the serial backend takes it but cannot enforce it, its envs
            run in the caller's thread); multiprocessing: ``context``, ``spin_us``, ``worker_spin_us``; ray:
            ``address``, ``actor_options``.

    Raises:
        APIUsageError: invalid combination of arguments, naming the argument and the valid choices.
        WorkerTimeoutError: a worker did not finish building its envs within ``timeout``.
    """
    if backend not in BACKENDS:
        raise APIUsageError(f"backend={backend!r} is unknown; valid choices: {list(BACKENDS)}")
    if backend == "serial":
        cls: type[VecEnv] = SerialVecEnv
        default_workers: int | Callable[[], int] = 1
    elif backend == "multiprocessing":
        cls = MultiprocessingVecEnv
        default_workers = available_cores()
    else:
        from shoal.vector.ray import default_ray_workers

        cls = RayVecEnv
        address = backend_kwargs.get("address")
        default_workers = lambda: default_ray_workers(address)  # noqa: E731 - only called if needed
    check_kwargs(backend, backend_kwargs, (*_COMMON_KWARGS, *cls.KWARGS))
    emulate_kwargs = backend_kwargs.pop("emulate_kwargs", None)
    check_finite = backend_kwargs.pop("check_finite", True)
    config = validate_config(env_fn, num_envs, num_workers, batch_size, seed, emulate_kwargs, default_workers,
                             check_finite)
    return cls(config, **backend_kwargs)


def to_sb3(vec: VecEnv, observations: str = "flat") -> SB3VecEnv:
    """Wrap ``vec`` as a Stable-Baselines3 ``VecEnv``: one SB3 env index per agent slot.

    ``observations="flat"`` gives SB3 the flat row (``MlpPolicy``); ``"leaves"`` each leaf of the native space in
    its own space (an image ``Box`` for ``CnnPolicy``, a flat ``Dict`` of leaves for ``MultiInputPolicy``).

    Returns a :class:`shoal.vector.sb3.SB3VecEnv` (see its module for observations, padded slots, action masks and
    which calls need the serial backend). Needs ``pip install "shoal[sb3]"``; imported here on first use, so
    ``shoal.vector`` itself does not need Stable-Baselines3.
    """
    try:
        from shoal.vector.sb3 import SB3VecEnv
    except ImportError as exc:
        raise ImportError(f"shoal.vector.to_sb3 needs Stable-Baselines3 ({exc}); install it with "
                          "pip install 'shoal[sb3]'") from exc
    return SB3VecEnv(vec, observations)  # type: ignore[arg-type]

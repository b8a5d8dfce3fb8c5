"""What every vector backend shares: the Batch it returns, argument validation, and the send/recv state machine.

A vector env runs ``num_envs`` emulated envs in ``num_workers`` groups of ``envs_per_worker`` consecutive envs.
Rows are env-major: env ``e`` owns rows ``e * agents_per_env`` to ``(e + 1) * agents_per_env - 1`` of every array.
``recv()`` returns the ``batch_size // envs_per_worker`` groups that finished first (EnvPool-style); with
``batch_size == num_envs`` every call covers all envs, which is what ``reset()``/``step()`` need.

Backends implement three hooks: ``_submit(worker, seeds)`` (start a reset, or a step when ``seeds`` is None,
reading actions from the shared ``actions`` array), ``_collect(k)`` (wait for ``k`` of the in-flight workers,
oldest submissions first, and return their info pairs) and ``_shutdown()``. Backends that hold their envs in this
process may also implement ``_snapshot_envs()`` and ``_restore_envs(snapshots)`` to support
:meth:`VecEnv.get_state` / :meth:`VecEnv.set_state`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, TypedDict

import numpy as np
from gymnasium import spaces

from shoal.emulation import ActionLayout, Emulator, Layout
from shoal.emulation.finite import FiniteCheck, first_nonfinite, nonfinite_error
from shoal.errors import APIUsageError, WorkerError, WorkerTimeoutError
from shoal.vector.buffers import BufferLayout
from shoal.vector.group import InfoPairs

__all__ = [
    "BACKENDS",
    "DEFAULT_TIMEOUT_S",
    "EMPTY_INFO",
    "Batch",
    "VecConfig",
    "VecEnv",
    "VecState",
    "check_kwargs",
    "check_timeout",
    "validate_config",
]

BACKENDS = ("serial", "multiprocessing", "ray")

#: Seconds the multiprocessing and Ray backends wait for a worker's reset, step or startup before raising
#: :class:`~shoal.errors.WorkerTimeoutError` (``timeout=`` of :func:`shoal.vector.make`; None waits for ever).
DEFAULT_TIMEOUT_S = 60.0


class _EmptyInfo(dict):
    """The info of every row the env said nothing about: one shared, read-only empty dict.

    Sharing it keeps a batch of thousands of rows cheap to build; mutating it raises instead of leaking into
    other rows. Copy it (``dict(info)``) to add keys.
    """

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("rows without infos share one read-only empty dict; copy it first: info = dict(info)")

    __setitem__ = __delitem__ = __ior__ = _read_only  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def __reduce__(self) -> tuple:
        return dict, ()

    def __repr__(self) -> str:
        return "{}"


#: The shared read-only info of rows without infos (see :class:`_EmptyInfo`).
EMPTY_INFO: dict[str, Any] = _EmptyInfo()


class _BatchFields(NamedTuple):
    obs: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    truncations: np.ndarray
    infos: list[dict[str, Any]]
    env_ids: np.ndarray
    masks: np.ndarray


class Batch(_BatchFields):
    """One result of :meth:`VecEnv.recv`; unpacks into exactly these 7 fields, in order.

    For ``R = len(env_ids) * agents_per_env`` agent rows, env-major:

    Attributes:
        obs: ``[R, flat_size]`` of ``obs_layout.flat_dtype`` (unflatten with :func:`shoal.emulation.unflatten`).
        rewards: ``float32[R]``; terminals, truncations: ``bool[R]`` (of each slot's most recent action).
        infos: ``R`` dicts, one per agent row. Rows the env said nothing about share one read-only empty dict
            (``EMPTY_INFO``); the others hold what the emulator reported (e.g. ``"episode"``,
            ``"final_observation"``), numpy values kept.
        env_ids: ``int64[len(env_ids)]`` the envs of this batch, ascending; row ``k`` belongs to env
            ``env_ids[k // agents_per_env]``.
        masks: ``bool[R]`` True where the row holds a live agent that must act now.
        action_masks: ``bool[R, mask_width]`` legal actions, or None for continuous action spaces (attribute only).
        agent_types: ``int32[R]`` agent-type id per row, -1 for an empty slot (attribute only).

    Arrays may be views of the vector env's buffers: they are overwritten by the next ``send``/``step``; copy
    what you keep.
    """

    action_masks: np.ndarray | None
    agent_types: np.ndarray | None

    def __new__(cls, obs: np.ndarray, rewards: np.ndarray, terminals: np.ndarray, truncations: np.ndarray,
                infos: list[dict[str, Any]], env_ids: np.ndarray, masks: np.ndarray,
                action_masks: np.ndarray | None = None, agent_types: np.ndarray | None = None) -> Batch:
        self = super().__new__(cls, obs, rewards, terminals, truncations, infos, env_ids, masks)
        self.action_masks = action_masks
        self.agent_types = agent_types
        return self

    def _replace(self, **changes: Any) -> Batch:
        extras = {"action_masks": self.action_masks, "agent_types": self.agent_types}
        extras.update({k: changes.pop(k) for k in list(changes) if k in extras})
        return Batch(*super()._replace(**changes), **extras)


# --------------------------------------------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------------------------------------------


def _choices(values: Sequence[int], limit: int = 24) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def divisors(n: int) -> list[int]:
    """Every divisor of ``n``, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass(frozen=True)
class VecConfig:
    """Validated arguments of :func:`shoal.vector.make`.

    Attributes:
        env_fns: one env constructor per env.
        num_envs, num_workers, batch_size: as given (defaults resolved).
        seed: base seed; env ``i`` is reset with ``seed + i`` on its first reset (None: unseeded).
        emulate_kwargs: keywords for :func:`shoal.emulate`.
        check_finite: check every batch for NaN and infinity (see :func:`shoal.vector.make`).
    """

    env_fns: tuple[Callable[[], Any], ...]
    num_envs: int
    num_workers: int
    batch_size: int
    seed: int | None
    emulate_kwargs: dict[str, Any] = field(default_factory=dict)
    check_finite: bool = True

    @property
    def envs_per_worker(self) -> int:
        return self.num_envs // self.num_workers

    @property
    def workers_per_batch(self) -> int:
        return self.batch_size // self.envs_per_worker

    def worker_envs(self, worker: int) -> range:
        """Global indices of the envs ``worker`` steps."""
        return range(worker * self.envs_per_worker, (worker + 1) * self.envs_per_worker)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise APIUsageError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_seed(seed: Any, name: str = "seed") -> int | None:
    """``seed`` as an int (non-negative) or None; raise :class:`APIUsageError` otherwise."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise APIUsageError(f"{name} must be a non-negative int or None, got {seed!r}")
    return int(seed)


def validate_config(env_fn: Callable[[], Any] | Sequence[Callable[[], Any]], num_envs: int,
                    num_workers: int | None, batch_size: int | None, seed: int | None,
                    emulate_kwargs: dict[str, Any] | None, default_workers: int | Callable[[], int],
                    check_finite: bool = True) -> VecConfig:
    """Check the arguments of :func:`shoal.vector.make`; errors name the argument and the valid choices.

    Args:
        default_workers: upper bound for ``num_workers`` when it is None (the largest divisor of ``num_envs``
            not above it is used), or a callable computing it (called only then).
    """
    num_envs = _positive_int("num_envs", num_envs)
    if callable(env_fn):
        env_fns = (env_fn,) * num_envs
    elif isinstance(env_fn, Sequence) and env_fn and all(callable(fn) for fn in env_fn):
        if len(env_fn) != num_envs:
            raise APIUsageError(f"env_fn is a list of {len(env_fn)} callables but num_envs={num_envs}; "
                                "give one callable per env or a single callable")
        env_fns = tuple(env_fn)
    else:
        raise APIUsageError(f"env_fn must be a callable returning an env (or a list of them, one per env), got "
                            f"{type(env_fn).__name__}; e.g. functools.partial(gymnasium.make, 'CartPole-v1')")
    valid_workers = divisors(num_envs)
    if num_workers is None:
        bound = default_workers() if callable(default_workers) else default_workers
        num_workers = max(d for d in valid_workers if d <= max(1, bound))
    num_workers = _positive_int("num_workers", num_workers)
    if num_envs % num_workers:
        raise APIUsageError(f"num_workers={num_workers} does not divide num_envs={num_envs} (every worker steps "
                            f"the same number of envs); valid choices: {_choices(valid_workers)}")
    per_worker = num_envs // num_workers
    valid_batches = [k * per_worker for k in range(1, num_workers + 1)]
    if batch_size is None:
        batch_size = num_envs
    batch_size = _positive_int("batch_size", batch_size)
    if batch_size not in valid_batches:
        raise APIUsageError(f"batch_size={batch_size} does not tile the workers: num_envs={num_envs} over "
                            f"num_workers={num_workers} gives {per_worker} envs per worker, so batch_size must be "
                            f"a multiple of {per_worker} up to {num_envs}; valid choices: {_choices(valid_batches)}")
    if emulate_kwargs is not None and not isinstance(emulate_kwargs, dict):
        raise APIUsageError(f"emulate_kwargs must be a dict of keywords for shoal.emulate, got "
                            f"{type(emulate_kwargs).__name__}")
    if not isinstance(check_finite, bool | np.bool_):
        raise APIUsageError(f"check_finite must be True or False, got {check_finite!r}")
    return VecConfig(env_fns, num_envs, num_workers, batch_size, check_seed(seed), dict(emulate_kwargs or {}),
                     bool(check_finite))


def check_timeout(timeout: Any) -> float | None:
    """``timeout`` as positive seconds (float) or None; raise :class:`APIUsageError` otherwise."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float | np.integer | np.floating) or not (
            0 < timeout < float("inf")):
        raise APIUsageError(f"timeout must be a positive, finite number of seconds or None (no limit), got "
                            f"{timeout!r}; the default is {DEFAULT_TIMEOUT_S:g}")
    return float(timeout)


def check_kwargs(backend: str, given: dict[str, Any], valid: Sequence[str]) -> None:
    """Raise :class:`APIUsageError` naming any keyword of ``given`` that ``backend`` does not take."""
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise APIUsageError(f"unknown keyword argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for "
                            f"backend={backend!r}; valid choices: {sorted(valid)}")


# --------------------------------------------------------------------------------------------------------------
# The vector env
# --------------------------------------------------------------------------------------------------------------


class VecState(TypedDict):
    """A snapshot of every env of a vector env and of its buffers (see :meth:`VecEnv.get_state`); picklable.

    Attributes:
        emulators: per worker (group of envs), each env's emulator pickled with its running state, wrapped env
            included (:func:`shoal.vector.snapshot.dumps_env`).
        arrays: a copy of every buffer (``obs``, ``rewards``, ``terminals``, ``truncations``, ``masks``,
            ``agent_types``, ``actions`` and, when present, ``action_masks``), all ``num_agents`` rows.
    """

    emulators: list[list[bytes]]
    arrays: dict[str, np.ndarray]


#: How a timeout message names each call a worker can be waited on for.
_CALLS = {"startup": "building its envs (env_fn())", "reset": "reset()", "step": "step()"}


class _State(enum.Enum):
    NEEDS_RESET = "needs reset"  # nothing submitted yet
    WAITING = "waiting"  # work submitted; recv() next
    HAS_BATCH = "has batch"  # a batch was received; send() next
    CLOSED = "closed"


class VecEnv:
    """Many emulated envs behind one batched API (see the module docstring for rows and batches).

    Attributes:
        backend: ``"serial" | "multiprocessing" | "ray"``.
        num_envs, num_workers, envs_per_worker, batch_size: the configuration.
        agents_per_env: slots per env (the emulator's ``num_agents``; 1 for Gymnasium envs).
        num_agents: ``num_envs * agents_per_env`` rows when every env is in the batch.
        single_observation_space: flat ``Box`` of one row; single_action_space: flat action space of one row.
        obs_layout, action_layout: the emulator's layouts, to unflatten observations and actions.
        timeout: seconds the backend waits for a worker's reset or step (None: no limit; see
            :func:`shoal.vector.make`); may be changed between calls.
    """

    backend: ClassVar[str] = ""
    #: keyword arguments of :func:`shoal.vector.make` this backend takes (besides ``emulate_kwargs``)
    KWARGS: ClassVar[tuple[str, ...]] = ()

    def _setup(self, config: VecConfig, probe: Emulator, arrays: dict[str, np.ndarray]) -> None:
        """Record the configuration and the buffers (called by the backends' constructors)."""
        self.config = config
        self.num_envs = config.num_envs
        self.num_workers = config.num_workers
        self.envs_per_worker = config.envs_per_worker
        self.batch_size = config.batch_size
        self.agents_per_env = int(probe.num_agents)
        self.num_agents = self.num_envs * self.agents_per_env
        self.obs_layout: Layout = probe.obs_layout
        self.action_layout: ActionLayout = probe.action_layout
        self.single_observation_space: spaces.Box = probe.single_observation_space
        self.single_action_space: spaces.Space = probe.single_action_space
        self._arrays = arrays
        self._rows_per_worker = self.envs_per_worker * self.agents_per_env
        self._in_flight: dict[int, str] = {}  # worker -> "startup", "reset" or "step"; submission order
        self._steps = [0] * config.num_workers  # steps since each worker's last reset, for error messages
        self._finite = FiniteCheck(probe.obs_layout) if config.check_finite else None
        self._seeded = False
        self._last: Batch | None = None
        self._last_workers: list[int] = []
        self._last_rows: slice | np.ndarray = slice(0, 0)
        self._state = _State.NEEDS_RESET

    # ---- backend hooks -------------------------------------------------------------------------------------

    def _submit(self, worker: int, seeds: list[int | None] | None) -> None:
        """Start a reset of ``worker``'s envs (``seeds``, one per env) or a step (``seeds is None``)."""
        raise NotImplementedError

    def _collect(self, k: int) -> list[tuple[int, InfoPairs]]:
        """Wait until ``k`` in-flight workers are done; return ``(worker, info_pairs)``, oldest submissions first."""
        raise NotImplementedError

    def _shutdown(self) -> None:
        """Close every env and release every worker and buffer."""
        raise NotImplementedError

    def _snapshot_envs(self) -> list[list[bytes]] | None:
        """Every env pickled with its running state, per worker; None when this backend or its envs cannot."""
        return None

    def _restore_envs(self, snapshots: list[list[bytes]]) -> bool:
        """Replace every env by its snapshot (the buffers are restored by the caller); False when impossible."""
        return False

    # ---- state checks --------------------------------------------------------------------------------------

    def _require_open(self, what: str) -> None:
        if self._state is _State.CLOSED:
            raise APIUsageError(f"{what}() called after close(); create a new vector env with shoal.vector.make")

    def _require_sync(self, what: str) -> None:
        if self.batch_size != self.num_envs:
            raise APIUsageError(f"{what}() returns every env at once, so it needs batch_size == num_envs (got "
                                f"batch_size={self.batch_size}, num_envs={self.num_envs}); use async_reset(), "
                                "send() and recv() for partial batches")

    # ---- async API -----------------------------------------------------------------------------------------

    def async_reset(self, seed: int | None = None) -> None:
        """Start resetting every env; :meth:`recv` returns the first batch.

        Env ``i`` is reset with ``seed + i``. With ``seed=None`` the first reset uses the ``seed`` given to
        :func:`~shoal.vector.make` and later resets continue each env's RNG. Work still in flight is awaited
        and discarded first.
        """
        self._require_open("async_reset")
        seed = check_seed(seed)
        if seed is None and not self._seeded:
            seed = self.config.seed
        self._seeded = True
        if self._in_flight:
            self._guarded_collect(len(self._in_flight))
        for worker in range(self.num_workers):
            envs = self.config.worker_envs(worker)
            self._guarded_submit(worker, [None if seed is None else seed + e for e in envs])
        self._state = _State.WAITING

    def send(self, actions: Any) -> None:
        """Act in the envs of the last batch received.

        Args:
            actions: ``[R, *flat_action_shape]`` for exactly the ``R`` rows of the last batch (same ``env_ids``
                order), dtype castable to ``single_action_space.dtype``. Rows that are not live (``masks``
                False) are ignored.
        """
        self._require_open("send")
        if self._state is not _State.HAS_BATCH:
            hint = "call async_reset() (or reset()) first" if self._state is _State.NEEDS_RESET else \
                "call recv() to get the batch to act on first"
            raise APIUsageError(f"send() called without recv(): {hint}")
        actions = self._check_actions(actions)
        self._arrays["actions"][self._last_rows] = actions
        for worker in self._last_workers:
            self._guarded_submit(worker, None)
        self._state = _State.WAITING

    def recv(self) -> Batch:
        """Wait for the next ``batch_size`` envs to finish and return their :class:`Batch`.

        Raises:
            WorkerError: an env raised or a worker died; the vector env is closed, the message carries the
                worker's traceback.
            WorkerTimeoutError: a worker did not answer within :attr:`timeout`; the vector env is closed.
            NonFiniteError: a reward, observation or final observation of the batch is NaN or infinite (unless
                ``check_finite=False``); the vector env is closed.
        """
        self._require_open("recv")
        if self._state is not _State.WAITING:
            hint = "call async_reset() (or reset()) first" if self._state is _State.NEEDS_RESET else \
                "call send(actions) for the batch you already received first"
            raise APIUsageError(f"recv() called with nothing sent: {hint}")
        done = self._guarded_collect(self.config.workers_per_batch)
        batch = self._make_batch(done)
        if self._finite is not None:
            self._check_finite(batch, done)
        self._state = _State.HAS_BATCH
        return batch

    def _guarded_submit(self, worker: int, seeds: list[int | None] | None) -> None:
        try:
            self._submit(worker, seeds)
        except WorkerError:
            self.close()
            raise
        self._in_flight[worker] = "step" if seeds is None else "reset"
        self._steps[worker] = 0 if seeds is not None else self._steps[worker] + 1

    def _guarded_collect(self, k: int) -> list[tuple[int, InfoPairs]]:
        try:
            done = self._collect(k)
        except WorkerError:
            self.close()
            raise
        for worker, _ in done:
            del self._in_flight[worker]
        return done

    # ---- sync API ------------------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Reset every env (see :meth:`async_reset` for seeds).

        Returns:
            ``obs`` ``[num_agents, flat_size]`` and ``infos`` (one dict per agent row).
        """
        self._require_open("reset")
        self._require_sync("reset")
        self.async_reset(seed)
        batch = self.recv()
        return batch.obs, batch.infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Step every env with ``actions`` ``[num_agents, *flat_action_shape]``; envs auto-reset.

        Returns:
            ``(obs [num_agents, flat_size], rewards float32[num_agents], terminals bool[num_agents],
            truncations bool[num_agents], infos)``; :attr:`masks`, :attr:`action_masks` and :attr:`agent_types`
            describe the same result.
        """
        self._require_open("step")
        self._require_sync("step")
        if self._state is _State.NEEDS_RESET:
            raise APIUsageError("step() called before reset(); call reset(seed=...) first")
        if self._state is _State.WAITING:
            raise APIUsageError("step() called while a batch is pending (after async_reset() or send()): call "
                                "recv() first, or reset()")
        self.send(actions)
        batch = self.recv()
        return batch.obs, batch.rewards, batch.terminals, batch.truncations, batch.infos

    @property
    def masks(self) -> np.ndarray | None:
        """``bool[R]`` of the last result: True where the row holds a live agent that must act now."""
        return None if self._last is None else self._last.masks

    @property
    def action_masks(self) -> np.ndarray | None:
        """``bool[R, mask_width]`` legal actions of the last result (None for continuous action spaces)."""
        return None if self._last is None else self._last.action_masks

    @property
    def agent_types(self) -> np.ndarray | None:
        """``int32[R]`` agent-type ids of the last result (-1 for empty slots)."""
        return None if self._last is None else self._last.agent_types

    # ---- snapshots -----------------------------------------------------------------------------------------

    def get_state(self) -> VecState | None:
        """Snapshot every env where it is now, to continue later bit for bit with :meth:`set_state`.

        Captures each emulator with the env it wraps, pickled by state (RNGs, episode progress, agents, episode
        statistics), and a copy of every buffer: the observations, rewards, terminals, truncations, masks,
        action masks and agent types of the last result, and the last actions. Infos are not captured.

        Possible only on the ``serial`` backend (the others keep their envs in other processes), with
        ``batch_size == num_envs`` and when every env can be pickled (envs holding e.g. pygame surfaces, open
        files or locks cannot; lambdas and closures are pickled by value); otherwise returns None, so callers can
        fall back to a fresh reset.

        Returns:
            a picklable :class:`VecState`, or None when a snapshot is impossible (see above).

        Raises:
            APIUsageError: called after :meth:`close`, before the first :meth:`reset`/:meth:`async_reset`, or
                while a batch is pending (call :meth:`recv` first).
        """
        self._require_open("get_state")
        self._require_not_waiting("get_state")
        if self._state is _State.NEEDS_RESET:
            raise APIUsageError("get_state() called before reset(): there is no running env to snapshot yet; call "
                                "reset(seed=...) first")
        if self.batch_size != self.num_envs:
            return None
        emulators = self._snapshot_envs()
        if emulators is None:
            return None
        arrays = {name: np.array(array, copy=True) for name, array in self._arrays.items()}
        return VecState(emulators=emulators, arrays=arrays)

    def set_state(self, state: VecState) -> bool:
        """Put the envs and buffers of a :meth:`get_state` snapshot in place of this vector env's own.

        Meant for a fresh vector env made like the one snapshotted (same env constructors, ``num_envs`` and
        ``num_workers``): after it, :meth:`step` with the same actions gives bit-identical results to the
        snapshotted env's. It may be called before the first reset or after a batch was received; afterwards
        :attr:`masks`, :attr:`action_masks` and :attr:`agent_types` describe the snapshot's last result, a batch
        received before still views the (restored) buffers, and the next call is :meth:`step`/:meth:`send`.
        The replaced envs are closed. Nothing is changed when False is returned.

        Returns:
            True when restored; False when this vector env cannot take the snapshot: a backend other than
            ``serial``, ``batch_size < num_envs``, another number of envs per worker, buffer names, shapes
            or dtypes, or envs that cannot be unpickled here (e.g. their class was renamed since).

        Raises:
            APIUsageError: ``state`` is not a snapshot of :meth:`get_state`; called after :meth:`close` or while a
                batch is pending (call :meth:`recv` first).
        """
        self._require_open("set_state")
        self._require_not_waiting("set_state")
        if not (isinstance(state, dict) and isinstance(state.get("emulators"), list)
                and isinstance(state.get("arrays"), dict)):
            raise APIUsageError(f"set_state(state): state must be a dict returned by get_state() with keys "
                                f"'emulators' and 'arrays', got {type(state).__name__}")
        if self.batch_size != self.num_envs:
            return False
        for name, array in state["arrays"].items():
            ours = self._arrays.get(name)
            if ours is None or ours.shape != np.shape(array) or ours.dtype != np.asarray(array).dtype:
                return False
        if not self._restore_envs(state["emulators"]):
            return False
        for name, array in state["arrays"].items():
            self._arrays[name][...] = array
        self._seeded = True  # the restored envs carry their own RNGs
        self._make_batch([(worker, []) for worker in range(self.num_workers)])
        self._state = _State.HAS_BATCH
        return True

    def _require_not_waiting(self, what: str) -> None:
        if self._state is _State.WAITING:
            raise APIUsageError(f"{what}() called while a batch is pending (after async_reset() or send()): call "
                                "recv() first")

    # ---- errors --------------------------------------------------------------------------------------------

    def _timeout_error(self, late: list[int], timeout: float, who: Callable[[int], str]) -> WorkerTimeoutError:
        """The error for workers ``late`` (each named by ``who``, with its envs) that did not answer within
        ``timeout`` seconds."""
        calls = list(dict.fromkeys(self._in_flight.get(w, "startup") for w in late))
        call = "/".join(calls)
        what = " or ".join(_CALLS.get(c, c) for c in calls)
        envs = [e for w in late for e in self.config.worker_envs(w)]
        return WorkerTimeoutError(
            f"{'; '.join(who(w) for w in late)}: no answer to {what} within timeout={timeout:g}s: an env hangs or "
            "is slower than the limit. The vector env is closed. If the env is just slow, raise the limit with "
            "shoal.vector.make(..., timeout=SECONDS), or pass timeout=None for no limit.",
            workers=list(late), envs=envs, call=call, timeout=timeout)

    def _check_finite(self, batch: Batch, done: list[tuple[int, InfoPairs]]) -> None:
        """Raise :class:`NonFiniteError` (and close) if a reward, observation or final observation of ``batch``
        is NaN or infinite: one native scan of the rewards and one of the observations per batch (about 0.5 us
        for 256 CartPole rows), then the final observations of the episodes that just ended, one by one."""
        finite = self._finite
        if first_nonfinite(batch.rewards) >= 0 or finite.any_bad(batch.obs):
            row = first_nonfinite(batch.rewards)
            if row >= 0:
                self._nonfinite(batch, row, "reward", batch.rewards[row])
            self._nonfinite(batch, *finite.first_bad(batch.obs))
        for worker, pairs in done:
            for row, info in pairs:
                final = info.get("final_observation")
                if type(final) is np.ndarray and finite.any_bad(final):
                    position = sorted(w for w, _ in done).index(worker) * self._rows_per_worker
                    found = finite.first_bad(final)
                    self._nonfinite(batch, position + row, f"{found[1]} (the final observation)", found[2])

    def _nonfinite(self, batch: Batch, row: int, field: str, value: Any) -> None:
        """Close the vector env and raise the error for row ``row`` of ``batch``."""
        a = self.agents_per_env
        env = int(batch.env_ids[row // a])
        worker = env // self.envs_per_worker
        steps = self._steps[worker]
        when = "on reset" if steps == 0 else f"at step {steps} since the vector env's reset()"
        error = nonfinite_error(f"env {env} ({self.backend} worker {worker}), slot {row % a},", field, value, when,
                                "The vector env is closed. To let such values through, pass check_finite=False "
                                "to shoal.vector.make.")
        self.close()
        raise error

    # ---- batches -------------------------------------------------------------------------------------------

    def _check_actions(self, actions: Any) -> np.ndarray:
        last = self._last
        rows = len(last.masks)
        expected = (rows, *self.action_layout.flat_shape)
        array = actions if type(actions) is np.ndarray else np.asarray(actions)
        if array.shape != expected:
            nested = (rows // self.agents_per_env, self.agents_per_env, *self.action_layout.flat_shape)
            if array.shape != nested:
                ids = last.env_ids.tolist()
                raise APIUsageError(
                    f"send(actions): actions have shape {array.shape}; expected {expected}: one flat action for "
                    f"{self.single_action_space!r} per agent row of the last batch (env_ids {ids[:8]}"
                    f"{'...' if len(ids) > 8 else ''} times agents_per_env={self.agents_per_env})")
            array = array.reshape(expected)
        live = None if last.masks.all() else last.masks
        try:
            return self.action_layout.validate(array, rows, live=live)
        except APIUsageError as exc:
            raise APIUsageError(f"send(actions): {exc}") from None

    def _make_batch(self, done: list[tuple[int, InfoPairs]]) -> Batch:
        workers = sorted(worker for worker, _ in done)
        per_rows = self._rows_per_worker
        per_envs = self.envs_per_worker
        if workers[-1] - workers[0] + 1 == len(workers):
            rows: slice | np.ndarray = slice(workers[0] * per_rows, (workers[-1] + 1) * per_rows)
            env_ids = np.arange(workers[0] * per_envs, (workers[-1] + 1) * per_envs)
        else:
            rows = np.concatenate([np.arange(w * per_rows, (w + 1) * per_rows) for w in workers])
            env_ids = np.concatenate([np.arange(w * per_envs, (w + 1) * per_envs) for w in workers])
        infos: list[dict[str, Any]] = [EMPTY_INFO] * (len(workers) * per_rows)
        position = {worker: i * per_rows for i, worker in enumerate(workers)}
        for worker, pairs in done:
            base = position[worker]
            for row, info in pairs:
                infos[base + row] = info
        arrays = self._arrays
        action_masks = arrays.get("action_masks")
        batch = Batch(arrays["obs"][rows], arrays["rewards"][rows], arrays["terminals"][rows],
                      arrays["truncations"][rows], infos, env_ids, arrays["masks"][rows],
                      action_masks=None if action_masks is None else action_masks[rows],
                      agent_types=arrays["agent_types"][rows])
        self._last = batch
        self._last_workers = workers
        self._last_rows = rows
        return batch

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every env, stop every worker and release the buffers. Safe to call twice.

        An env that fails to close is logged as a warning naming its worker and envs, not raised, on every
        backend: closing is cleanup, often done while another error propagates or after a finished training.
        """
        if getattr(self, "_state", _State.CLOSED) is _State.CLOSED:
            return
        self._state = _State.CLOSED
        self._in_flight.clear()
        self._shutdown()

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    def __enter__(self) -> VecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_envs={self.num_envs}, agents_per_env={self.agents_per_env}, "
                f"num_workers={self.num_workers}, batch_size={self.batch_size}, state={self._state.value!r})")


def buffer_layout(probe: Emulator, num_envs: int) -> BufferLayout:
    """The :class:`BufferLayout` for ``num_envs`` copies of ``probe``."""
    return BufferLayout.build(probe.buffer_spec(), probe.action_layout, num_envs)

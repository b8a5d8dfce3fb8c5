"""MultiprocessingVecEnv: worker processes stepping groups of envs straight into shared memory.

The parent allocates one shared block for every buffer (observations, rewards, terminals, truncations, masks,
agent types, action masks, actions) before starting the workers; each worker's emulators write into their rows
of it, so nothing is copied on the worker side. A second shared array, shaped like the observations, carries the
final observations of episodes that ended (they reach ``infos`` as copies of its rows, not through the pipe).
See :mod:`shoal.vector.worker` for the wire protocol and the spin-then-block waiting scheme.

Failure handling: a worker that raises sends its traceback and exits; a worker that dies is noticed through its
process sentinel. Either way the parent raises :class:`~shoal.errors.WorkerError` and closes the vector env. If
the vector env is garbage-collected or the interpreter exits without ``close()``, the workers are still closed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import select
import time
import weakref
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from typing import Any

import numpy as np

from shoal.errors import APIUsageError, WorkerError
from shoal.vector.base import DEFAULT_TIMEOUT_S, VecConfig, VecEnv, buffer_layout, check_timeout
from shoal.vector.group import InfoPairs, make_emulator
from shoal.vector.worker import (
    CMD,
    CMD_CLOSE,
    CMD_RESET,
    CMD_STEP,
    DONE,
    FLAG_STRIDE,
    REPLY_ERROR,
    REPLY_INFOS,
    REPLY_OK,
    final_view,
    flag_view,
    restore_final_observations,
    worker_main,
    yield_core,
)

__all__ = ["CONTEXTS", "MultiprocessingVecEnv", "default_spin_us", "default_worker_spin_us", "force_stop"]

CONTEXTS = ("fork", "spawn", "forkserver")
_CLOSE_TIMEOUT_S = 5.0
_log = logging.getLogger(__name__)


def _default_context() -> str:
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_spin_us(num_workers: int) -> float:
    """The parent spins only when every worker and the parent can have a core of their own; otherwise it blocks
    at once (while the workers step, the cores are theirs)."""
    return 50.0 if num_workers + 1 <= available_cores() else 0.0


def default_worker_spin_us(num_workers: int) -> float:
    """Workers spin 2 ms, yielding their core between looks, unless they outnumber the cores more than twice.

    A worker that sleeps between steps wakes up through the kernel (tens of microseconds, more in a VM) and
    with colder caches; one that spins and yields is there at once and still gives its core to any process
    that needs it.
    """
    return 2000.0 if num_workers <= 2 * available_cores() else 0.0


def force_stop(proc: multiprocessing.process.BaseProcess) -> None:
    """Terminate ``proc`` if it still runs, kill it if that does not work within a second, and reap it."""
    if proc.is_alive():
        proc.terminate()
        proc.join(1.0)
    if proc.is_alive():
        proc.kill()
    proc.join()


class _Workers:
    """The processes, pipes and shared memory of one vector env; :meth:`shutdown` releases them all.

    Kept apart from the vector env so a ``weakref.finalize`` can shut the workers down without keeping the
    vector env alive.
    """

    def __init__(self) -> None:
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.conns: list[Connection] = []
        self.block: Any = None
        self.final_block: Any = None
        self.flags_block: Any = None
        self.grace_s = _CLOSE_TIMEOUT_S  # how long close() waits for workers to finish before terminating them
        self.stuck: set[int] = set()  # workers known to hang (a timeout): terminated without waiting
        self.names: list[str] = []  # each worker as error messages name it

    def shutdown(self) -> None:
        """Ask every worker to close its envs, wait up to ``grace_s`` seconds, then terminate stragglers.

        Workers in ``stuck`` are terminated at once; any other worker still running after the grace period is
        logged as a close that hung, then terminated.
        """
        for worker in sorted(self.stuck):
            if worker < len(self.procs):
                force_stop(self.procs[worker])
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send_bytes(CMD_CLOSE)
        deadline = time.monotonic() + self.grace_s
        open_conns = list(self.conns)
        running = {proc.sentinel: proc for proc in self.procs if proc.exitcode is None}
        while running and time.monotonic() < deadline:
            # Keep reading so no worker blocks on a full pipe while it finishes its last command.
            for obj in wait([*open_conns, *running], timeout=max(0.0, deadline - time.monotonic())):
                if obj in running:
                    running.pop(obj).join(1.0)  # the sentinel fires just before the exit status is ready
                    continue
                try:
                    message = obj.recv_bytes()
                except (EOFError, OSError):
                    open_conns.remove(obj)
                    continue
                if message[:1] == REPLY_ERROR:  # e.g. an env that failed to close: said, not raised (cleanup)
                    worker = self.conns.index(obj)
                    name = self.names[worker] if worker < len(self.names) else f"multiprocessing worker {worker}"
                    _log.warning("%s raised %s", name, message[1:].decode("utf-8", "replace"))
        hung = [w for w, proc in enumerate(self.procs) if proc.sentinel in running and w not in self.stuck]
        if hung:
            _log.warning("shoal.vector: multiprocessing worker%s %s did not finish close() within %gs (an env's "
                         "close() may hang); terminating %s", "s" if len(hung) > 1 else "",
                         ", ".join(str(w) for w in hung), self.grace_s, "them" if len(hung) > 1 else "it")
        for proc in self.procs:
            force_stop(proc)
        for conn in self.conns:
            conn.close()
        for proc in self.procs:
            proc.close()
        self.procs, self.conns = [], []
        self.block = self.final_block = self.flags_block = None


class _Poller:
    """Which workers' pipes and process sentinels are ready: one persistent ``select.poll`` where available.

    Registering the descriptors once saves building a selector on every wait (what
    ``multiprocessing.connection.wait`` does); elsewhere it falls back to that function.
    """

    def __init__(self, conns: list[Connection], sentinels: list[int]) -> None:
        self._poll = select.poll() if hasattr(select, "poll") else None
        self._index: dict[Any, tuple[bool, int]] = {}
        for worker, (conn, sentinel) in enumerate(zip(conns, sentinels, strict=True)):
            if self._poll is not None:
                self._index[conn.fileno()] = (False, worker)
                self._index[sentinel] = (True, worker)
            else:
                self._index[conn] = (False, worker)
                self._index[sentinel] = (True, worker)
        if self._poll is not None:
            for fd in self._index:
                self._poll.register(fd, select.POLLIN)

    def wait(self, timeout: float | None) -> list[tuple[bool, int]]:
        """``(is_sentinel, worker)`` of everything ready within ``timeout`` seconds (None: no limit)."""
        if self._poll is None:
            return [self._index[obj] for obj in wait(list(self._index), timeout)]
        ms = -1 if timeout is None else max(0, int(timeout * 1000 + 0.999))
        return [self._index[fd] for fd, _ in self._poll.poll(ms)]


class MultiprocessingVecEnv(VecEnv):
    """Run ``num_envs`` emulated envs in ``num_workers`` processes (see :class:`~shoal.vector.base.VecEnv`).

    Args:
        config: validated arguments of :func:`shoal.vector.make`.
        context: multiprocessing start method, ``"fork"`` (default on Linux), ``"spawn"`` or ``"forkserver"``.
            With spawn/forkserver the env constructors must be picklable (module-level functions or
            ``functools.partial`` of them; not lambdas or local functions).
        spin_us: microseconds the parent spins on the workers' done flags before blocking on a pipe. Default:
            50 when ``num_workers + 1`` processes fit on the machine's cores, else 0 (while the workers step,
            the cores are theirs). Once a worker has replied, the parent spins for ``worker_spin_us`` instead:
            set both to 0 for no spinning at all.
        worker_spin_us: microseconds a worker spins on its command flag after replying, yielding its core
            between looks, before blocking on its pipe; also how long the parent, once one worker has replied,
            spins on the others' done flags before sleeping. Default: 2000 unless the workers outnumber the
            cores more than twice (then 0).
        timeout: seconds to wait for a worker's startup, reset or step before raising
            :class:`~shoal.errors.WorkerTimeoutError` (a :class:`WorkerError` naming the workers, their envs, the
            call and the limit) and closing the vector env, whose hung workers are terminated at once. Default
            :data:`~shoal.vector.base.DEFAULT_TIMEOUT_S` (60); None waits for ever. Dead workers are detected
            either way. ``close()`` waits up to 5 s per call for workers to close their envs, then terminates them
            (logging a warning).

    The envs live in the worker processes: :meth:`~shoal.vector.base.VecEnv.get_state` returns None and
    :meth:`~shoal.vector.base.VecEnv.set_state` returns False (use the serial backend for env snapshots).
    """

    backend = "multiprocessing"
    KWARGS = ("context", "spin_us", "worker_spin_us", "timeout")

    def __init__(self, config: VecConfig, context: str | None = None, spin_us: float | None = None,
                 worker_spin_us: float | None = None, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        method = _default_context() if context is None else context
        if method not in multiprocessing.get_all_start_methods() or method not in CONTEXTS:
            valid = [m for m in CONTEXTS if m in multiprocessing.get_all_start_methods()]
            raise APIUsageError(f"context={context!r} is not a start method of this platform; valid choices: {valid}")
        for name, value in (("spin_us", spin_us), ("worker_spin_us", worker_spin_us)):
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise APIUsageError(f"{name} must be a non-negative number of microseconds, got {value!r}")
        timeout = check_timeout(timeout)
        if method != "fork":
            _check_picklable(config, method)
        self.context = method
        self.spin_us = default_spin_us(config.num_workers) if spin_us is None else float(spin_us)
        self.worker_spin_us = default_worker_spin_us(config.num_workers) if worker_spin_us is None else \
            float(worker_spin_us)
        self.timeout = timeout
        ctx = multiprocessing.get_context(method)

        probe = make_emulator(config.env_fns[0], config.emulate_kwargs)
        try:
            layout = buffer_layout(probe, config.num_envs)
            self._workers = _Workers()
            self._workers.block = ctx.RawArray(ctypes.c_uint8, layout.nbytes)
            obs = next(field for field in layout.fields if field[0] == "obs")
            self._workers.final_block = ctx.RawArray(ctypes.c_uint8, max(1, int(np.prod(obs[1])) * obs[2].itemsize))
            self._final = final_view(self._workers.final_block, layout)
            self._workers.flags_block = ctx.RawArray(ctypes.c_int64, config.num_workers * FLAG_STRIDE)
            self._setup(config, probe, layout.views(self._workers.block))
        finally:
            probe.close()
        self._finalizer = weakref.finalize(self, self._workers.shutdown)
        self._flags = flag_view(self._workers.flags_block)
        self._sent = [0] * config.num_workers  # commands submitted per worker (mirrors flags[w, CMD])
        self._replies: dict[int, InfoPairs] = {}  # replies read but not yet returned by recv()
        self._calls = ["startup"] * config.num_workers  # each worker's command in flight, for error messages
        self._procs = self._workers.procs
        self._conns = self._workers.conns
        try:
            self._start(ctx, layout)
        except BaseException:
            self.close()
            raise

    # ---- start ---------------------------------------------------------------------------------------------

    def _start(self, ctx: multiprocessing.context.BaseContext, layout: Any) -> None:
        config = self.config
        spin_s = self.worker_spin_us * 1e-6
        for worker in range(config.num_workers):
            parent_end, child_end = ctx.Pipe(duplex=True)
            self._conns.append(parent_end)
            envs = config.worker_envs(worker)
            inherited = list(self._conns) if self.context == "fork" else []
            proc = ctx.Process(
                target=worker_main, name=f"shoal-vector-worker-{worker}", daemon=True,
                args=(worker, config.env_fns[envs.start : envs.stop], envs.start, self._workers.block, layout,
                      self._workers.final_block, self._workers.flags_block, child_end, inherited,
                      config.emulate_kwargs, spin_s))
            try:
                proc.start()
            finally:
                child_end.close()
            self._procs.append(proc)
            self._workers.names.append(self._who(worker))
        self._poller = _Poller(self._conns, [proc.sentinel for proc in self._procs])
        # Each worker answers once when its envs are built (or sends the traceback of why they were not).
        for worker in range(config.num_workers):
            self._in_flight[worker] = "startup"
        try:
            self._collect(config.num_workers, startup=True)
        except WorkerError:
            self.close()
            raise
        self._in_flight.clear()

    # ---- hooks ---------------------------------------------------------------------------------------------

    def _submit(self, worker: int, seeds: list[int | None] | None) -> None:
        message = CMD_STEP if seeds is None else CMD_RESET + pickle.dumps(seeds)
        self._calls[worker] = "step" if seeds is None else "reset"
        self._sent[worker] += 1
        self._flags[worker * FLAG_STRIDE + CMD] = self._sent[worker]
        try:
            self._conns[worker].send_bytes(message)
        except OSError:
            self._raise_dead(worker, f"while receiving a {self._calls[worker]} command")

    def _collect(self, k: int, startup: bool = False) -> list[tuple[int, InfoPairs]]:
        replies = self._replies
        in_flight = self._in_flight
        pending = [w for w in in_flight if w not in replies]
        flags, sent = self._flags, self._sent
        spin_s = 0.0 if startup else self.spin_us * 1e-6
        # Once a worker of this wait has replied, its core is free: spin (yielding) on the others' flags as long
        # as a worker would, instead of sleeping until their replies wake this process.
        tail_s = 0.0 if startup else self.worker_spin_us * 1e-6
        waiting_for = len(pending)
        deadline = 0.0
        start = time.monotonic()
        while True:
            # The done flags say which replies are already in their pipes (a worker sets its flag after writing).
            if not startup:
                for w in [w for w in pending if flags[w * FLAG_STRIDE + DONE] == sent[w]]:
                    replies[w] = self._read(w)
                    pending.remove(w)
            if len(in_flight) - len(pending) >= k:
                break
            if tail_s and len(pending) < waiting_for:
                spin_s, tail_s, deadline = tail_s, 0.0, 0.0
            if spin_s:  # spin on the flags, yielding the core, before blocking
                now = time.perf_counter()
                deadline = deadline or now + spin_s
                if now < deadline:
                    yield_core()
                    continue
                spin_s = 0.0
            remaining = None if self.timeout is None else self.timeout - (time.monotonic() - start)
            if remaining is not None and remaining <= 0:
                raise self._timed_out(pending)
            dead = []
            for is_sentinel, w in self._poller.wait(remaining):
                if is_sentinel:
                    dead.append(w)
                elif w in pending:
                    replies[w] = self._read(w)
                    pending.remove(w)
                else:  # only a failing worker speaks out of turn
                    self._read(w)
                    raise WorkerError(f"{self._who(w)} sent a reply it owed no one")
            for w in dead:
                self._raise_dead(w, f"during {self._calls[w]}")
        chosen = [w for w in in_flight if w in replies][:k]
        return [(w, replies.pop(w)) for w in chosen]

    def _read(self, worker: int) -> InfoPairs:
        try:
            message = self._conns[worker].recv_bytes()
        except (EOFError, OSError):
            self._raise_dead(worker, f"during {self._calls[worker]}, before replying")
        tag = message[:1]
        if tag == REPLY_OK:
            return []
        if tag == REPLY_INFOS:
            pairs, moved = pickle.loads(message[1:])
            rows = self._rows_per_worker
            return restore_final_observations(pairs, moved, self._final[worker * rows : (worker + 1) * rows])
        if tag == REPLY_ERROR:
            text = message[1:].decode("utf-8", "replace")
            raise WorkerError(f"{self._who(worker)} raised during {self._calls[worker]}:\n{text}")
        raise WorkerError(f"{self._who(worker)} sent an unreadable reply {message[:16]!r}")

    # ---- errors --------------------------------------------------------------------------------------------

    def _who(self, worker: int) -> str:
        envs = self.config.worker_envs(worker)
        return f"multiprocessing worker {worker} (pid {self._procs[worker].pid}, envs {envs.start}..{envs.stop - 1})"

    def _raise_dead(self, worker: int, when: str) -> None:
        conn = self._conns[worker]
        try:  # a worker that raised sends its traceback before exiting: prefer that
            while conn.poll(0):
                message = conn.recv_bytes()
                if message[:1] == REPLY_ERROR:
                    raise WorkerError(f"{self._who(worker)} raised during {self._calls[worker]}:\n"
                                      f"{message[1:].decode('utf-8', 'replace')}")
        except (EOFError, OSError):
            pass
        proc = self._procs[worker]
        proc.join(1.0)
        code = proc.exitcode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        raise WorkerError(f"{self._who(worker)} died {when}: it {how} without sending a traceback (a native crash "
                          "prints one to the worker's stderr)")

    def _timed_out(self, pending: list[int]) -> WorkerError:
        """The timeout error for the ``pending`` workers, which are marked to be terminated without waiting."""
        self._workers.stuck.update(pending)  # terminated at once when the vector env closes
        self._workers.grace_s = 0.2  # and the others are not waited for long either: the caller is in a hurry
        return super()._timeout_error(pending, self.timeout, self._who)

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self._replies.clear()
        self._arrays = {}
        self._finalizer()


def _check_picklable(config: VecConfig, method: str) -> None:
    for what, value in (("env_fn", config.env_fns), ("emulate_kwargs", config.emulate_kwargs)):
        try:
            ForkingPickler.dumps(value)
        except Exception as exc:
            raise APIUsageError(
                f"{what} cannot be pickled, which context={method!r} needs to send it to the workers ({exc}). "
                "Use a module-level function or a functools.partial of one (not a lambda or a local function), "
                "or context='fork'.") from exc


"""A PPO/MAPPO learner in its own process, so updates run on one core while the next rollout is collected on another.

With ``TrainConfig(async_learner=True)`` the trainer hands each rollout to a :class:`LearnerProcess` and goes on
collecting at once. The learner holds its own copy of the policy, the Adam optimizer, the shuffling generator and
(MAPPO) the value normalizer; after each update it writes the weights and the normalizer's statistics into shared
memory, and the acting side takes both together. With ``L_j`` the learner's weights after ``j``
updates and ``h = TrainConfig.async_handover``, rollout ``k`` runs like this:

* while the first ``h`` of it is collected, the acting policy has weights ``L_{k-1}`` and the learner runs update
  ``k`` on rollout ``k - 1``;
* then the acting policy waits for that update (if it is still running) and acts with ``L_k`` for the rest;
* at the end, rollout ``k`` goes to the learner, which trains on it from ``L_k``.

So a fraction ``h`` of every rollout is one update stale; PPO's ratio is taken against the log-probabilities
recorded while acting, so the clipped objective (and V-trace, with ``advantage="vtrace"``) corrects for it as for
any stale data. ``h = 0`` is exactly the one-process computation (no overlap); ``h = 1`` overlaps the whole update
with the whole rollout. On CartPole with the general PPO defaults (measured before its preset), ``h = 0.5`` solves
the task as reliably as the one-process trainer while much of the learner's work hides behind the rollout; ``h = 1``
is faster still but learns less per step. Runs are deterministic for any ``h``: the hand-over points do not depend
on timing.

Rollouts travel through a pipe (pickled, one copy each way); weights through shared memory. A checkpoint waits
for the running update (it holds the learner's weights, optimizer and generator state, and the acting weights),
and the statistics the trainer logs after an update are those of the update before it.

A learner that raises or dies surfaces as :class:`~shoal.errors.WorkerError` with its traceback; nothing waits
for ever on a dead process.
"""

from __future__ import annotations

import contextlib
import pickle
import signal
import traceback
import weakref
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
from torch import nn

from shoal.errors import APIUsageError, WorkerError
from shoal.train.config import TrainConfig
from shoal.train.core.ppo import make_optimizer, ppo_update
from shoal.train.core.rollout import RolloutData
from shoal.train.speed.traced_loss import loss_fn_for
from shoal.vector.multiprocessing import force_stop

__all__ = ["LearnerProcess"]

_UPDATE = b"u"
_STATE = b"s"
_CLOSE = b"c"
_OK = b"k"
_ERROR = b"e"
_CLOSE_TIMEOUT_S = 5.0
_PARENT_CHECK_S = 1.0  # how often an idle learner checks that the trainer is still alive


def _learner_main(conn: Connection, models: tuple[nn.Module, nn.Module | None], shared: dict[str, torch.Tensor],
                  cfg: TrainConfig, device: str, optimizer_state: dict[str, Any] | None,
                  generator_state: torch.Tensor, inherited: Connection | None) -> None:
    """Serve updates until told to close or the trainer dies; report any exception with its traceback, then exit.

    ``inherited``: the trainer's end of the pipe, which a forked child holds a copy of; closed at once so the
    trainer's death shows up as end-of-file here.
    """
    import multiprocessing

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the trainer, which closes the learner
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the CLI's handler inherited by fork
    if inherited is not None:
        inherited.close()
    parent = multiprocessing.parent_process()
    try:
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        policy, value_norm = models  # copied together: PopArt keeps a reference to the policy's critic layer
        policy = policy.to(device)
        if value_norm is not None:
            value_norm = value_norm.to(device)
        optimizer = make_optimizer(policy, cfg)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        generator = torch.Generator().manual_seed(0)
        generator.set_state(generator_state)
        loss_fn = loss_fn_for(cfg)
        policy.train()
        while True:
            while not conn.poll(_PARENT_CHECK_S):
                if parent is not None and not parent.is_alive():
                    return
            message = conn.recv_bytes()
            command = message[:1]
            if command == _UPDATE:
                data, lr, progress = pickle.loads(message[1:])
                for group in optimizer.param_groups:
                    group["lr"] = lr
                stats = ppo_update(policy, optimizer, data.to_torch(device), cfg, generator, progress=progress,
                                   value_norm=value_norm, loss_fn=loss_fn)
                with torch.no_grad():
                    for name, value in _state(policy, value_norm).items():
                        shared[name].copy_(value)
                conn.send_bytes(_OK + pickle.dumps(stats))
            elif command == _STATE:
                state = {
                    "model": {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()},
                    "value_norm": None if value_norm is None else {
                        k: v.detach().cpu().clone() for k, v in value_norm.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                }
                conn.send_bytes(_OK + pickle.dumps(state))
            elif command == _CLOSE:
                return
            else:
                raise RuntimeError(f"unknown command {message[:16]!r}")
    except EOFError:
        return  # the trainer went away
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send_bytes(_ERROR + traceback.format_exc().encode("utf-8", "replace"))
    finally:
        conn.close()


class LearnerProcess:
    """Runs :func:`~shoal.train.core.ppo.ppo_update` on rollouts in a child process (see the module docstring).

    Args:
        policy: the policy to train (a copy is taken; the caller's module is not touched).
        weights: the learner's starting weights (a ``state_dict``), or None for ``policy``'s own.
        ahead: those weights are newer than the acting policy's (a run resumed between an update and its
            hand-over).
        value_norm: the critic's :class:`~shoal.train.core.normalize.ValueNormalizer` (MAPPO), copied with the policy
            (PopArt rescales the policy's critic layer), or None.
        value_norm_state: the learner's starting normalizer state, or None for ``value_norm``'s own.
        cfg: the training configuration (loss coefficients, epochs, minibatches, learning-rate settings).
        device: where the learner trains (``"cpu"``, ``"cuda:0"``, ...).
        optimizer_state: Adam state to continue from (a checkpoint's), or None for a fresh optimizer.
        generator_state: state of the CPU ``torch.Generator`` that shuffles minibatches.
        start_method: ``"fork"``, ``"spawn"`` or ``"forkserver"``; default: fork (fast start) when the learner
            trains on the CPU with one torch thread, else spawn. CUDA cannot be forked, and a forked child that uses
            torch's OpenMP threads can deadlock on the parent's thread pool. With spawn/forkserver the policy is
            pickled to the child, so its class must be importable (defined in a module, not in ``__main__`` of an
            interactive session), and the child needs a few seconds to import torch.
    """

    def __init__(self, policy: nn.Module, weights: dict[str, torch.Tensor] | None, cfg: TrainConfig,
                 device: torch.device | str, optimizer_state: dict[str, Any] | None,
                 generator_state: torch.Tensor, start_method: str | None = None,
                 value_norm: nn.Module | None = None, value_norm_state: dict[str, torch.Tensor] | None = None,
                 ahead: bool = False) -> None:
        import torch.multiprocessing as tmp

        device = str(device)
        methods = tmp.get_all_start_methods()
        forkable = device == "cpu" and cfg.torch_threads == 1 and "fork" in methods
        method = start_method or ("fork" if forkable else "spawn")
        if method not in methods:
            raise APIUsageError(f"start_method={method!r} is not available here; valid choices: {methods}")
        self.start_method = method
        ctx = tmp.get_context(method)
        learner, norm = _cpu_copy(policy, value_norm)
        if weights is not None:
            learner.load_state_dict(weights)
        if norm is not None and value_norm_state is not None:
            norm.load_state_dict(value_norm_state)
        self.shared = {k: v.detach().clone().share_memory_() for k, v in _state(learner, norm).items()}
        self._conn, child_end = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(
            target=_learner_main, name="shoal-learner", daemon=True,
            args=(child_end, (learner, norm), self.shared, cfg, device, optimizer_state, generator_state,
                  self._conn if method == "fork" else None))
        self._proc.start()
        child_end.close()
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, self._conn)
        self.busy = False  # an update was submitted and its result not read yet
        self._result: dict[str, float] | None = None
        #: the learner holds newer weights than the acting policy (a resumed run may start that way)
        self.ahead = ahead

    def update(self, data: RolloutData, learning_rate: float, progress: float) -> dict[str, float]:
        """Wait for the previous update, start one on ``data`` and return the previous one's statistics
        (``{}`` the first time): this one runs while the trainer collects the next rollout."""
        stats = dict(self.result())
        self.submit(data, learning_rate, progress)
        self.ahead = True
        return stats

    def submit(self, data: RolloutData, learning_rate: float, progress: float) -> None:
        """Start one update on ``data`` (the learner must be idle: call :meth:`result` first)."""
        if self.busy:
            raise RuntimeError("internal error: an update was submitted while the learner was busy")
        self._send(_UPDATE + pickle.dumps((data, learning_rate, progress), pickle.HIGHEST_PROTOCOL))
        self.busy = True
        self._result = None

    def result(self) -> dict[str, float]:
        """Wait for the submitted update and return its statistics (again on later calls, until the next
        :meth:`submit`); ``{}`` when nothing was submitted."""
        if self.busy:
            self._result = pickle.loads(self._receive())
            self.busy = False
        return self._result or {}

    def copy_weights_to(self, policy: nn.Module, value_norm: nn.Module | None = None) -> None:
        """Load the learner's latest weights into ``policy`` (and its normalizer statistics into ``value_norm``);
        waits for a running update first."""
        self.result()
        self.ahead = False
        policy.load_state_dict({k: v for k, v in self.shared.items() if not k.startswith(_NORM)})
        if value_norm is not None:
            value_norm.load_state_dict({k[len(_NORM):]: v for k, v in self.shared.items() if k.startswith(_NORM)})

    def state_dict(self) -> dict[str, Any]:
        """``{"model", "value_norm", "optimizer", "generator"}`` of the learner after its last update (waits for
        it); ``value_norm`` is None without a normalizer."""
        self.result()
        self._send(_STATE)
        return pickle.loads(self._receive())

    def close(self) -> None:
        """Stop the learner process (waits a few seconds for it, then terminates it). Safe to call twice."""
        self._finalizer()

    # ---- plumbing ------------------------------------------------------------------------------------------

    def _send(self, message: bytes) -> None:
        try:
            self._conn.send_bytes(message)
        except OSError:
            self._raise_dead()

    def _receive(self) -> bytes:
        while True:
            ready = wait([self._conn, self._proc.sentinel])
            if self._conn in ready:
                try:
                    message = self._conn.recv_bytes()
                except (EOFError, OSError):
                    self._raise_dead()
                if message[:1] == _ERROR:
                    self.close()
                    raise WorkerError("the learner process raised:\n" + message[1:].decode("utf-8", "replace"))
                return message[1:]
            if self._proc.sentinel in ready and not self._conn.poll(0):
                self._raise_dead()

    def _raise_dead(self) -> None:
        self._proc.join(1.0)
        code = self._proc.exitcode
        self.close()
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        raise WorkerError(f"the learner process {how} without a traceback (a native crash prints one to stderr)")


_NORM = "value_norm/"  # prefix of the normalizer's entries among the shared tensors


def _state(policy: nn.Module, value_norm: nn.Module | None) -> dict[str, torch.Tensor]:
    """The policy's ``state_dict`` and the normalizer's (prefixed), in one dict."""
    state = dict(policy.state_dict())
    if value_norm is not None:
        state.update({_NORM + k: v for k, v in value_norm.state_dict().items()})
    return state


def _cpu_copy(policy: nn.Module, value_norm: nn.Module | None) -> tuple[nn.Module, nn.Module | None]:
    """Deep copies of ``policy`` and ``value_norm`` on the CPU, made together so that references between them
    (PopArt's to the critic layer) point into the copies. The child moves them to its device."""
    import copy

    policy, value_norm = copy.deepcopy((policy, value_norm))
    return policy.to("cpu"), None if value_norm is None else value_norm.to("cpu")


def _shutdown(proc: Any, conn: Connection) -> None:
    with contextlib.suppress(OSError):
        conn.send_bytes(_CLOSE)
    proc.join(_CLOSE_TIMEOUT_S)
    force_stop(proc)
    conn.close()

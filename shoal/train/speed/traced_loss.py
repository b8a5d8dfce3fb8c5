"""The PPO minibatch loss of feed-forward policies, optionally replayed through verified TorchScript traces.

For a small network most of an update's time is Python and dispatch overhead: the policy's evaluation pass and
the loss are a few dozen tiny tensor operations per minibatch. Tracing them once per input signature (minibatch
shape, which optional inputs are given, loss coefficients, the train/eval mode of every submodule, the
parameter tensors) and replaying the trace removes the Python part of the forward pass; autograd runs the same
operations backwards.

A trace is used only after it matched the eager computation exactly (every output and every gradient) twice:
on the minibatch it was traced with and on the next minibatch of its signature, whose other data exposes
branches on tensor values. A policy that cannot be traced, or whose trace differs (control flow on values,
random numbers), keeps running eagerly. The checks leave no trace of their own: gradients, random generators and
module buffers (e.g. batch-norm statistics) are restored afterwards.

Traces share the policy's parameters, so optimizer steps and in-place ``load_state_dict`` are seen at once;
replacing a parameter or submodule changes the signature. Traces run without the TorchScript graph executor's
optimizations: after its profiling runs it would swap autograd for its own symbolic gradients, which differ
from eager ones.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from shoal.errors import APIUsageError
from shoal.train.config import TrainConfig
from shoal.train.core.minibatches import Minibatch
from shoal.train.core.ppo import LossFn, LossOutput, eager_loss, minibatch_loss
from shoal.train.speed.tracing import rng_state, set_rng_state, trace

__all__ = ["LossTracer", "loss_fn_for"]

log = logging.getLogger(__name__)


class _Minibatch(nn.Module):
    """:func:`~shoal.train.core.ppo.minibatch_loss` with positional tensor inputs and a tuple output (what
    ``torch.jit.trace`` needs)."""

    def __init__(self, policy: nn.Module, flags: tuple[bool, bool, bool], loss_kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.policy = policy
        self.has_masks, self.has_ids, self.has_critic = flags
        self.loss_kwargs = loss_kwargs

    def forward(self, obs: Tensor, actions: Tensor, columns: Tensor, *extra: Tensor) -> tuple[Tensor, ...]:
        items = list(extra)
        masks = items.pop(0) if self.has_masks else None
        ids = items.pop(0) if self.has_ids else None
        critic = items.pop(0) if self.has_critic else None
        old_log_probs, old_values, advantages, returns = columns.unbind(1)
        out = minibatch_loss(self.policy, obs, actions, masks, ids, critic, old_log_probs, old_values, advantages,
                             returns, self.loss_kwargs)
        # A trace does not record torch.no_grad(): detach the statistics explicitly, as the eager loss has them.
        return (out.loss, *(x.detach() for x in (out.policy_loss, out.value_loss, out.entropy, out.approx_kl,
                                                 out.old_approx_kl, out.clipfrac, out.ratio)))


class LossTracer:
    """Computes :func:`~shoal.train.core.ppo.minibatch_loss`, through a verified trace per input signature where one
    applies (see the module docs).

    Args:
        enabled: trace at all (False: always eager).
        max_traces: traces to build at most over the tracer's life; later signatures run eagerly (bounds the
            work when signatures keep changing, e.g. minibatch sizes that follow a varying number of live
            agents).
    """

    def __init__(self, enabled: bool = True, max_traces: int = 8) -> None:
        if isinstance(max_traces, bool) or not isinstance(max_traces, int) or max_traces < 0:
            raise APIUsageError(f"LossTracer(max_traces=) must be a non-negative int (0: never trace), got "
                                f"{max_traces!r}")
        self.enabled = enabled and hasattr(torch, "jit")
        self.max_traces = max_traces
        self._built = 0
        self._traces: dict[tuple, Any] = {}  # signature -> verified trace, or None: eager
        self._pending: dict[tuple, Any] = {}  # signature -> trace checked once, awaiting its second check
        self._signature: tuple[tuple[int, bool], tuple] | None = None  # ((policy id, mode), its signature)

    @property
    def num_traces(self) -> int:
        """Verified traces in use (signatures that run eagerly, or still await their second check, not counted)."""
        return sum(traced is not None for traced in self._traces.values())

    def status(self) -> dict[str, int]:
        """How the signatures seen so far run: ``verified`` (through a trace), ``eager`` (a trace differed or
        failed), ``pending`` (traced and checked once, awaiting the second check) and ``built`` (traces built, at
        most ``max_traces``)."""
        verified = self.num_traces
        return {"verified": verified, "eager": len(self._traces) - verified, "pending": len(self._pending),
                "built": self._built}

    def __call__(self, policy: nn.Module, minibatch: Minibatch, coefficients: dict[str, Any]) -> LossOutput:
        """The :data:`~shoal.train.core.ppo.LossFn` of :func:`~shoal.train.core.ppo.ppo_update`: flat minibatches
        through :meth:`loss`, whole segments (recurrent policies, prioritized sampling) eagerly."""
        if minibatch.segments:
            return eager_loss(policy, minibatch, coefficients)
        # The full signature walks every module and parameter (~30 us): take it once per policy and mode. A
        # submodule switched on its own or a parameter tensor replaced needs forget_signature().
        key = (id(policy), policy.training)
        if self._signature is None or self._signature[0] != key:
            self._signature = (key, self.policy_signature(policy))
        return self.loss(policy, minibatch.obs, minibatch.actions, minibatch.action_masks, minibatch.agent_ids,
                         minibatch.critic_obs, minibatch.columns, coefficients, self._signature[1])

    def forget_signature(self) -> None:
        """Recompute the policy's signature at the next call (after replacing a parameter tensor or a submodule,
        or switching one submodule's train/eval mode)."""
        self._signature = None

    @staticmethod
    def policy_signature(policy: nn.Module) -> tuple:
        """What of ``policy`` a trace depends on besides its inputs: the object, every submodule's train/eval
        mode and the identity of every parameter tensor (compute it once per update and pass it to
        :meth:`loss`)."""
        return (id(policy), tuple(module.training for module in policy.modules()),
                tuple(id(param) for param in policy.parameters()))

    def loss(self, policy: nn.Module, obs: Tensor, actions: Tensor, action_masks: Tensor | None,
             agent_ids: Tensor | None, critic_obs: Tensor | None, columns: Tensor, loss_kwargs: dict[str, Any],
             signature: tuple | None = None) -> LossOutput:
        """:func:`~shoal.train.core.ppo.minibatch_loss` with ``columns`` float ``[M, 4]``: old log-probs, old values,
        advantages and returns side by side. ``signature``: :meth:`policy_signature` of ``policy`` as it is now
        (computed when omitted)."""
        if self.enabled and not torch.compiler.is_compiling():
            extra = [x for x in (action_masks, agent_ids, critic_obs) if x is not None]
            inputs = (obs, actions, columns, *extra)
            flags = (action_masks is not None, agent_ids is not None, critic_obs is not None)
            key = (signature or self.policy_signature(policy), flags, tuple(sorted(loss_kwargs.items())),
                   *((tuple(x.shape), x.dtype, x.device) for x in inputs))
            if key in self._traces:
                traced = self._traces[key]
                if traced is not None:
                    with torch.jit.optimized_execution(False):
                        return LossOutput(*traced(*inputs))
            elif key in self._pending or self._built < self.max_traces:
                self._check(key, policy, flags, loss_kwargs, inputs)
        return minibatch_loss(policy, obs, actions, action_masks, agent_ids, critic_obs, *columns.unbind(1),
                              loss_kwargs)

    def _check(self, key: tuple, policy: nn.Module, flags: tuple[bool, bool, bool], loss_kwargs: dict[str, Any],
               inputs: tuple[Tensor, ...]) -> None:
        """Trace the computation for ``key`` (first call) or take its pending trace (second call) and check it,
        outputs and gradients, against the eager one on ``inputs``; then restore gradients, random generators
        and buffers."""
        traced = self._pending.pop(key, None)
        first = traced is None
        if first:
            self._built += 1
        module = _Minibatch(policy, flags, loss_kwargs)
        params = [p for p in policy.parameters() if p.requires_grad]
        grads = [p.grad for p in params]
        buffers = [(b, b.detach().clone()) for b in policy.buffers()]
        device = inputs[0].device
        devices = [device] if device.type == "cuda" else []
        same = False
        with torch.random.fork_rng(devices=devices):
            rng = rng_state(device)
            try:
                if first:
                    traced = trace(module, inputs)
                set_rng_state(device, rng)
                expected, expected_grads = _run(module, inputs, params)
                set_rng_state(device, rng)
                with torch.jit.optimized_execution(False):
                    got, got_grads = _run(traced, inputs, params)
                same = all(a.requires_grad == b.requires_grad and torch.equal(a, b)
                           for a, b in zip(expected, got, strict=True)) and all(
                    (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
                    for a, b in zip(expected_grads, got_grads, strict=True))
                if not same:
                    log.info("the traced PPO loss differs from the eager one; updating eagerly")
            except Exception as exc:  # any tracing problem: update eagerly
                log.info("cannot trace the PPO loss (%s: %s); updating eagerly", type(exc).__name__, exc)
            finally:
                for param, grad in zip(params, grads, strict=True):
                    param.grad = grad
                with torch.no_grad():
                    for buffer, value in buffers:
                        buffer.copy_(value)
        if same and first:
            self._pending[key] = traced
        else:
            self._traces[key] = traced if same else None


def _run(module: Any, inputs: tuple[Tensor, ...], params: list[Tensor]) -> tuple[tuple[Tensor, ...],
                                                                                  list[Tensor | None]]:
    """Outputs (the loss attached, the statistics as returned) and the gradients of the loss with respect to
    ``params``."""
    for param in params:
        param.grad = None
    out = module(*inputs)
    out[0].backward()
    return tuple(out), [None if p.grad is None else p.grad.clone() for p in params]


def loss_fn_for(cfg: TrainConfig) -> LossFn:
    """The :data:`~shoal.train.core.ppo.LossFn` ``cfg`` asks for: a fresh :class:`LossTracer` with
    ``trace_learner``, else :func:`~shoal.train.core.ppo.eager_loss`."""
    return LossTracer() if cfg.trace_learner else eager_loss

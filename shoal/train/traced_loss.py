"""The PPO minibatch loss of feed-forward policies, optionally replayed through verified TorchScript traces.

For a small network most of an update's time is Python and dispatch overhead: the policy's evaluation pass and
the loss are a few dozen tiny tensor operations per minibatch. Tracing them once per input signature (minibatch
shape, which optional inputs are given, loss coefficients) and replaying the trace removes the Python part of
the forward pass; autograd runs the same operations backwards. Every trace is checked on its first use against
the eager computation, loss statistics and every gradient, and must match them exactly; a policy that cannot be
traced, or whose trace differs (data-dependent control flow, random numbers), keeps running eagerly. Traces share
the policy's parameters, so optimizer steps and ``load_state_dict`` are seen at once. Traces run without the
TorchScript graph executor's optimizations: after its profiling runs it would swap autograd for its own symbolic
gradients, which differ from eager ones.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from shoal.train.ppo import LossOutput, minibatch_loss

__all__ = ["LossTracer"]

log = logging.getLogger(__name__)


class _Minibatch(nn.Module):
    """:func:`~shoal.train.ppo.minibatch_loss` with positional tensor inputs and a tuple output (what
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
        return _as_tuple(out)


def _as_tuple(out: LossOutput) -> tuple[Tensor, ...]:
    return (out.loss, out.policy_loss, out.value_loss, out.entropy, out.approx_kl, out.old_approx_kl, out.clipfrac,
            out.ratio)


class LossTracer:
    """Computes :func:`~shoal.train.ppo.minibatch_loss`, through a verified trace per input signature where one
    applies.

    A signature's trace is checked against the eager computation on the minibatch it was traced with and again
    on the next minibatch of that signature (other data, so a branch on tensor values shows up as a difference);
    only then is it used. Until then, and for good if a check fails, the minibatch runs eagerly.

    Args:
        enabled: trace at all (False: always eager).
        max_traces: signatures to trace at most; further signatures run eagerly.
    """

    def __init__(self, enabled: bool = True, max_traces: int = 8) -> None:
        self.enabled = enabled and hasattr(torch, "jit")
        self.max_traces = max_traces
        self._traces: dict[tuple, Any] = {}  # signature -> verified trace, or None: eager
        self._pending: dict[tuple, Any] = {}  # signature -> trace checked once, awaiting its second check

    def loss(self, policy: nn.Module, obs: Tensor, actions: Tensor, action_masks: Tensor | None,
             agent_ids: Tensor | None, critic_obs: Tensor | None, columns: Tensor,
             loss_kwargs: dict[str, Any]) -> LossOutput:
        """:func:`~shoal.train.ppo.minibatch_loss` with ``columns`` float ``[M, 4]``: old log-probs, old values,
        advantages and returns side by side."""
        if self.enabled and not torch.compiler.is_compiling():
            extra = [x for x in (action_masks, agent_ids, critic_obs) if x is not None]
            inputs = (obs, actions, columns, *extra)
            flags = (action_masks is not None, agent_ids is not None, critic_obs is not None)
            key = (id(policy), flags, tuple(sorted(loss_kwargs.items())),
                   *((tuple(x.shape), x.dtype, x.device) for x in inputs))
            traced = self._traces.get(key, False)
            if traced is False:
                self._check(key, policy, flags, loss_kwargs, inputs)
            elif traced is not None:
                with torch.jit.optimized_execution(False):
                    return LossOutput(*traced(*inputs))
        return minibatch_loss(policy, obs, actions, action_masks, agent_ids, critic_obs, *columns.unbind(1),
                              loss_kwargs)

    def _check(self, key: tuple, policy: nn.Module, flags: tuple[bool, bool, bool], loss_kwargs: dict[str, Any],
               inputs: tuple[Tensor, ...]) -> None:
        """Trace the computation for ``key`` (first call) or take its pending trace (second call) and check it,
        outputs and gradients, against the eager one on ``inputs``. Leaves the parameters' gradients and the
        random state as it found them."""
        traced = self._pending.pop(key, None)
        first = traced is None
        if first and len(self._traces) + len(self._pending) >= self.max_traces:
            self._traces[key] = None
            return
        module = _Minibatch(policy, flags, loss_kwargs)
        params = [p for p in policy.parameters() if p.requires_grad]
        saved = [p.grad for p in params]
        rng = torch.get_rng_state()
        same = False
        try:
            if first:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    traced = torch.jit.trace(module, inputs, check_trace=False)
                torch.set_rng_state(rng)
            expected, expected_grads = _run(module, inputs, params)
            torch.set_rng_state(rng)
            with torch.jit.optimized_execution(False):
                got, got_grads = _run(traced, inputs, params)
            same = all(torch.equal(a, b) for a, b in zip(expected, got, strict=True)) and all(
                (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
                for a, b in zip(expected_grads, got_grads, strict=True))
            if not same:
                log.info("the traced PPO loss differs from the eager one; updating eagerly")
        except Exception as exc:  # any tracing problem: update eagerly
            log.info("cannot trace the PPO loss (%s: %s); updating eagerly", type(exc).__name__, exc)
        finally:
            torch.set_rng_state(rng)
            for param, grad in zip(params, saved, strict=True):
                param.grad = grad
        if same and first:
            self._pending[key] = traced
        else:
            self._traces[key] = traced if same else None


def _run(module: Any, inputs: tuple[Tensor, ...], params: list[Tensor]) -> tuple[tuple[Tensor, ...],
                                                                                  list[Tensor | None]]:
    """Outputs (detached) and the gradients of the loss (the first output) with respect to ``params``."""
    for param in params:
        param.grad = None
    out = module(*inputs)
    out[0].backward()
    return tuple(x.detach() for x in out), [None if p.grad is None else p.grad.clone() for p in params]

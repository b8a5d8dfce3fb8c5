"""Acting for rollouts: the policy's forward pass, optionally replayed through cached TorchScript traces.

A small policy spends most of a rollout step in Python and dispatch overhead, not arithmetic: tracing the
acting call once per input signature (batch size and which optional inputs are given) and replaying the trace
cuts that overhead by about 3x. Every trace is verified against the eager call on its first use, with the same
random numbers, and must match it exactly; a policy whose trace differs (data-dependent control flow) or fails
to trace simply keeps running eagerly. Traces share the policy's parameters, so optimizer steps and
``load_state_dict`` are seen at once. Random numbers are drawn exactly as by the eager call.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from shoal.train.speed.tracing import rng_state, set_rng_state, trace

__all__ = ["Actor"]

log = logging.getLogger(__name__)

Output = tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor] | None]


class _Acting(nn.Module):
    """The acting call as a module with positional tensor inputs (what ``torch.jit.trace`` needs)."""

    def __init__(self, policy: nn.Module, flags: tuple[bool, bool, bool, bool, bool]) -> None:
        super().__init__()
        self.policy = policy
        self.has_state, self.has_done, self.has_masks, self.has_ids, self.has_critic = flags

    def forward(self, obs: Tensor, *extra: Tensor) -> tuple[Tensor, ...]:
        items = list(extra)
        state = (items.pop(0), items.pop(0)) if self.has_state else None
        done = items.pop(0) if self.has_done else None
        masks = items.pop(0) if self.has_masks else None
        ids = items.pop(0) if self.has_ids else None
        critic = items.pop(0) if self.has_critic else None
        # absent: exactly the call policies got before critic_obs existed (a custom policy need not take it)
        kwargs = {"critic_obs": critic} if critic is not None else {}
        out = self.policy(obs, state, done=done, action_masks=masks, agent_ids=ids, **kwargs)
        tail = (out.state[0], out.state[1]) if out.state is not None else ()
        # a policy without a state-value head (SAC) returns value None: an empty tensor stands for it in the trace
        value = out.value if out.value is not None else obs.new_zeros(0, dtype=torch.float32)
        return (out.action, out.log_prob, value, *tail)


def _value(traced_value: Tensor) -> Tensor | None:
    """A trace's value output: None where the policy has no value head (the empty stand-in of :class:`_Acting`)."""
    return None if traced_value.numel() == 0 else traced_value


class Actor:
    """Calls ``policy(obs, state, done=..., action_masks=..., agent_ids=...)`` for rollouts (and ``critic_obs=``
    when a centralized critic input is given).

    Args:
        policy: the policy (the :class:`~shoal.policies.Policy` forward contract).
        trace: replay verified TorchScript traces (falls back to eager calls where tracing does not apply).
        max_traces: signatures to trace at most; further signatures run eagerly.
    """

    def __init__(self, policy: nn.Module, trace: bool = True, max_traces: int = 8) -> None:
        self.policy = policy
        self.trace = trace and hasattr(torch, "jit")
        self.max_traces = max_traces
        self._traces: dict[tuple, Any] = {}

    @property
    def replays_traces(self) -> bool:
        """Calls may run a trace: tracing is on and not every signature tried so far fell back to eager calls."""
        return self.trace and (not self._traces or self.num_traces > 0)

    @property
    def num_traces(self) -> int:
        """Verified traces in use (signatures that act eagerly are not counted)."""
        return sum(traced is not None for traced in self._traces.values())

    def __call__(
        self,
        obs: Tensor,
        state: tuple[Tensor, Tensor] | None = None,
        done: Tensor | None = None,
        action_masks: Tensor | None = None,
        agent_ids: Tensor | None = None,
        critic_obs: Tensor | None = None,
    ) -> Output:
        """Sample actions: ``(action, log_prob, value, state)`` for a batch ``[B]`` (no gradients).

        ``critic_obs``: float32 ``[B, C]`` centralized critic inputs (MAPPO), or None."""
        with torch.inference_mode():
            if not self.trace:
                return self._eager(obs, state, done, action_masks, agent_ids, critic_obs)
            flags = (state is not None, done is not None, action_masks is not None, agent_ids is not None,
                     critic_obs is not None)
            inputs = [obs]
            if state is not None:
                inputs += [state[0], state[1]]
            inputs += [x for x in (done, action_masks, agent_ids, critic_obs) if x is not None]
            key = (flags, *((tuple(x.shape), x.dtype, x.device) for x in inputs))
            traced = self._traces.get(key, False)
            if traced is False:
                traced = self._build(key, flags, inputs, state, done, action_masks, agent_ids, critic_obs)
            if traced is None:
                return self._eager(obs, state, done, action_masks, agent_ids, critic_obs)
            out = traced(*inputs)
            return out[0], out[1], _value(out[2]), (out[3], out[4]) if len(out) == 5 else None

    def _eager(
        self,
        obs: Tensor,
        state: tuple[Tensor, Tensor] | None,
        done: Tensor | None,
        action_masks: Tensor | None,
        agent_ids: Tensor | None,
        critic_obs: Tensor | None = None,
    ) -> Output:
        kwargs = {"critic_obs": critic_obs} if critic_obs is not None else {}
        out = self.policy(obs, state, done=done, action_masks=action_masks, agent_ids=agent_ids, **kwargs)
        return out.action, out.log_prob, out.value, out.state

    def _build(self, key: tuple, flags: tuple[bool, ...], inputs: list[Tensor], *args: Any) -> Any:
        """Trace the call for ``key`` and check it against the eager call; None when it cannot be used."""
        if len(self._traces) >= self.max_traces:
            self._traces[key] = None
            return None
        device = inputs[0].device
        rng = rng_state(device)
        traced = None
        try:
            traced = trace(_Acting(self.policy, flags), tuple(inputs))
            set_rng_state(device, rng)
            expected = self._eager(inputs[0], *args)
            after_eager = rng_state(device)
            set_rng_state(device, rng)
            got = traced(*inputs)
            same = all(torch.equal(a, b) for a, b in zip(expected[:2], got[:2], strict=True))
            value = _value(got[2])
            same = same and (value is None if expected[2] is None else value is not None and torch.equal(
                expected[2], value))
            if expected[3] is not None:
                same = (
                    same
                    and len(got) == 5
                    and torch.equal(expected[3][0], got[3])
                    and torch.equal(expected[3][1], got[4])
                )
            same = same and torch.equal(rng_state(device), after_eager)
            if not same:
                log.info("the traced policy differs from the eager one; acting eagerly")
                traced = None
        except Exception as exc:  # any tracing problem: act eagerly
            log.info("cannot trace the policy (%s: %s); acting eagerly", type(exc).__name__, exc)
            traced = None
        set_rng_state(device, rng)
        self._traces[key] = traced
        return traced

"""Minibatches of one rollout for a PPO update: shuffled live transitions, whole segments, or prioritized segments.

Feed-forward policies learn from single transitions: the live ones are gathered once into flat ``[N, ...]``
tensors (padding never enters) and each epoch shuffles them into minibatches. Recurrent policies replay whole
segments from their stored initial LSTM state, so they (and prioritized sampling, which weighs segments) draw
``[B, H, ...]`` segments and carry the ``valid`` mask into the loss.

The per-transition numbers the loss needs besides the policy's inputs (old log-probs, old values, advantages,
value targets) travel as one ``columns`` tensor, ``[..., 4]`` in that order: one gather per minibatch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from shoal.train.core.rollout import RolloutTensors

__all__ = ["Minibatch", "MinibatchSource"]


@dataclass
class Minibatch:
    """The tensors of one minibatch.

    Flat (``segments`` False): ``M`` live transitions, every tensor ``[M, ...]``. Segments: ``B`` whole segments
    of ``H`` steps, every tensor ``[B, H, ...]``, with ``valid`` marking transitions, ``starts`` episode starts and
    ``states`` each segment's initial LSTM state (float32 ``[B, lstm_size]`` twice).

    Attributes:
        obs, actions: flat observations and actions.
        columns: float32 ``[..., 4]``: old log-probs, old values, advantages, value targets.
        action_masks: bool ``[..., W]`` legal actions, or None when every action is legal.
        agent_ids: int64 slot indices, or None when the policy has no agent-id embedding.
        critic_obs: float32 ``[..., C]`` centralized critic inputs, or None.
        index: int64 positions of the minibatch in its source (flat transitions or segments).
        valid, starts, states: segments only (None when flat).
        weights: float32 importance weights of prioritized sampling, or None.
    """

    obs: Tensor
    actions: Tensor
    columns: Tensor
    action_masks: Tensor | None
    agent_ids: Tensor | None
    critic_obs: Tensor | None
    index: Tensor
    valid: Tensor | None = None
    starts: Tensor | None = None
    states: tuple[Tensor, Tensor] | None = None
    weights: Tensor | None = None

    @property
    def segments(self) -> bool:
        """True for whole segments ``[B, H, ...]``, False for single transitions ``[M, ...]``."""
        return self.valid is not None

    def weight(self) -> Tensor:
        """The number of transitions in the minibatch, a float32 scalar on its device (no host sync)."""
        if self.valid is None:
            return torch.full((), float(len(self.index)), device=self.obs.device)
        return self.valid.sum().float()


class MinibatchSource:
    """The update's inputs in the shape minibatches are cut from, and the generator of one epoch's minibatches.

    Args:
        data: the rollout (``[S, H, ...]`` tensors on the learner's device).
        segments: cut whole segments (recurrent policies, prioritized sampling) instead of single transitions.
        action_masks: keep the legal-action masks (False when every action is legal: the policy skips masking).
        agent_ids: keep the slot indices (for policies with an agent-id embedding).
    """

    def __init__(self, data: RolloutTensors, *, segments: bool, action_masks: bool, agent_ids: bool) -> None:
        self.data = data
        self.segments = segments
        self.valid = data.valid
        num_segments = data.valid.shape[0]
        if segments:
            self.live: Tensor | None = None
            self.count = num_segments
        else:
            self.live = data.valid.reshape(-1).nonzero().squeeze(1)
            self.count = len(self.live)
        self.obs = self._shape(data.obs)
        self.actions = self._shape(data.actions)
        self.action_masks = self._shape(data.action_masks) if action_masks else None
        self.agent_ids = self._shape(data.agent_ids) if agent_ids else None
        self.critic_obs = self._shape(data.critic_obs) if data.critic_obs is not None else None
        self.columns = torch.empty(0)

    def _shape(self, x: Tensor) -> Tensor:
        """``[S, H, ...]`` as kept: unchanged for segments, the live transitions ``[N, ...]`` otherwise."""
        if self.live is None:
            return x
        return x.reshape(-1, *x.shape[2:])[self.live]

    def set_targets(self, old_values: Tensor, advantages: Tensor, returns: Tensor) -> None:
        """The loss's per-transition numbers (float ``[S, H]`` each, in the critic's units) for the minibatches
        cut from now on."""
        self.columns = self._shape(torch.stack([self.data.log_probs, old_values, advantages, returns], -1))
        self.advantages = advantages

    def take(self, index: Tensor, weights: Tensor | None = None) -> Minibatch:
        """The minibatch at ``index`` (int64 positions of transitions, or of segments)."""
        data = self.data
        return Minibatch(
            obs=self.obs[index],
            actions=self.actions[index],
            columns=self.columns[index],
            action_masks=None if self.action_masks is None else self.action_masks[index],
            agent_ids=None if self.agent_ids is None else self.agent_ids[index],
            critic_obs=None if self.critic_obs is None else self.critic_obs[index],
            index=index,
            valid=self.valid[index] if self.segments else None,
            starts=data.starts[index] if self.segments else None,
            states=None if not self.segments or data.states is None else
            (data.states[0][index], data.states[1][index]),
            weights=weights,
        )

    def epoch(self, num_minibatches: int, generator: torch.Generator, unit: int, *, prio_alpha: float = 0.0,
              prio_beta: float = 1.0) -> Iterator[Minibatch]:
        """One epoch: ``num_minibatches`` minibatches of a fresh shuffle, drawn lazily (each one sees the targets
        set before it is drawn).

        With ``prio_alpha > 0`` (segments only) every minibatch draws ``min(unit, S)`` segments with probability
        proportional to ``(sum |advantage| + 1e-8) ** prio_alpha``, without replacement, and weighs their loss by
        ``(S * p) ** -prio_beta`` (importance correction).
        """
        device = self.valid.device
        if prio_alpha > 0:
            per_batch = max(1, min(self.count, unit))
            for _ in range(num_minibatches):
                score = torch.where(self.valid, self.advantages.abs(), 0.0).sum(1).double().cpu()
                probs = (score + 1e-8) ** prio_alpha
                probs = probs / probs.sum()
                index = torch.multinomial(probs.float(), per_batch, False, generator=generator)
                weights = ((self.count * probs[index]) ** -prio_beta).float().to(device)[:, None]
                yield self.take(index.to(device), weights.expand(-1, self.valid.shape[1]))
            return
        order = torch.randperm(self.count, generator=generator).to(device)
        for index in torch.tensor_split(order, num_minibatches):
            yield self.take(index)

    def scatter(self, target: Tensor, minibatch: Minibatch, values: Tensor, fill: float) -> None:
        """Write a minibatch's per-transition ``values`` into ``target`` float ``[S, H]`` (``fill`` at padding)."""
        if self.segments:
            target[minibatch.index] = torch.where(self.valid[minibatch.index], values, fill)
        else:
            assert self.live is not None
            target.view(-1)[self.live[minibatch.index]] = values

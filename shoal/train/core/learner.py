"""Where PPO updates run. The trainer talks to one interface, :class:`Learner`, whichever implementation holds it:

* :class:`InProcessLearner` (the default) updates the trainer's own policy at once;
* :class:`~shoal.train.speed.learner_process.LearnerProcess` updates a copy in a child process while the trainer
  collects the next rollout, and hands its weights over when the trainer asks.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from shoal.train.config import TrainConfig
from shoal.train.core.normalize import ValueNormalizer
from shoal.train.core.ppo import SINGLE_LEARNER, LossFn, Reducer, eager_loss, ppo_update
from shoal.train.core.rollout import RolloutData

__all__ = ["InProcessLearner", "Learner"]


class Learner(Protocol):
    """What the trainer needs of a learner."""

    #: The learner holds newer weights than the acting policy (an update was submitted and not handed over).
    ahead: bool

    def update(self, data: RolloutData, learning_rate: float, progress: float) -> dict[str, float]:
        """Learn from one rollout; returns the statistics of the newest finished update (``{}`` when none has
        finished yet: a learner process is still running this one)."""
        ...

    def copy_weights_to(self, policy: nn.Module, value_norm: nn.Module | None = None) -> None:
        """Make ``policy`` (and ``value_norm``) act with the learner's newest weights; waits for a running update."""
        ...

    def result(self) -> dict[str, float]:
        """Wait for the running update, if any, and return the newest statistics (``{}`` when none)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """``{"model", "value_norm", "optimizer", "generator"}`` after the newest update (waits for it)."""
        ...

    def close(self) -> None:
        """Release what the learner holds (a process, pipes); safe to call twice."""
        ...


class InProcessLearner:
    """A :class:`Learner` that updates ``policy`` itself, in the calling process, before :meth:`update` returns.

    Args:
        policy, optimizer: the trainer's policy and its optimizer (updated in place).
        generator: the CPU generator that shuffles minibatches.
        config: loss coefficients, epochs, minibatches.
        device: where the update runs (the policy's device).
        value_norm: the critic's normalizer, or None.
        loss_fn, reducer: the update's seams (:func:`~shoal.train.core.ppo.ppo_update`).
    """

    ahead = False  # the acting policy is the learner's policy

    def __init__(self, policy: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                 config: TrainConfig, device: torch.device, *, value_norm: ValueNormalizer | None = None,
                 loss_fn: LossFn = eager_loss, reducer: Reducer = SINGLE_LEARNER) -> None:
        self.policy, self.optimizer, self.generator = policy, optimizer, generator
        self.config, self.device = config, device
        self.value_norm, self.loss_fn, self.reducer = value_norm, loss_fn, reducer
        self._stats: dict[str, float] = {}

    def update(self, data: RolloutData, learning_rate: float, progress: float) -> dict[str, float]:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.policy.train()
        self._stats = ppo_update(self.policy, self.optimizer, data.to_torch(self.device), self.config,
                                 self.generator, progress=progress, value_norm=self.value_norm,
                                 loss_fn=self.loss_fn, reducer=self.reducer)
        return dict(self._stats)

    def copy_weights_to(self, policy: nn.Module, value_norm: nn.Module | None = None) -> None:
        if policy is not self.policy:
            policy.load_state_dict(self.policy.state_dict())
        if value_norm is not None and value_norm is not self.value_norm and self.value_norm is not None:
            value_norm.load_state_dict(self.value_norm.state_dict())

    def result(self) -> dict[str, float]:
        return dict(self._stats)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(),
                "value_norm": None if self.value_norm is None else self.value_norm.state_dict()}

    def close(self) -> None:
        return None

"""Behaviour cloning: maximum likelihood of a dataset's actions under the default policy's action head.

    loss, stats = bc_loss(policy, sampler.sample(256, generator))

The policy's own action distribution (:class:`~shoal.policies.policy.ActionHead`: masked categoricals for discrete
and MultiDiscrete actions, the diagonal Gaussian for Box actions, both for hybrid ones) scores the recorded
action, so a cloned policy acts, evaluates and exports like one trained by PPO. Its value head is not trained.
"""

from __future__ import annotations

from torch import Tensor

from shoal.policies import Policy
from shoal.train.core.transitions import TransitionBatch

__all__ = ["bc_loss"]


def bc_loss(policy: Policy, batch: TransitionBatch) -> tuple[Tensor, dict[str, Tensor]]:
    """``-mean log pi(a|s)`` over the minibatch (a float32 scalar), and detached statistics: ``policy_loss`` (the
    same number) and ``entropy`` (the mean entropy of the action distributions)."""
    dist = policy.head(policy.encode(batch.obs, batch.agent_ids), batch.action_masks)
    loss = -dist.log_prob(batch.actions).mean()
    return loss, {"policy_loss": loss.detach(), "entropy": dist.entropy().mean().detach()}

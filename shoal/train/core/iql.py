"""Implicit Q-learning (Kostrikov, Nair and Levine, 2022): twin Q, expectile V, advantage-weighted actor.

    critics = IQLCritics(obs_layout, action_layout, hidden_size=256)
    optimizers = IQLOptimizers.for_networks(policy, critics, TrainConfig(algo="iql"))
    stats = iql_update(policy, critics, optimizers, sampler.sample(256, generator), gamma=0.99, tau=0.005,
                       expectile=0.7, beta=3.0, max_weight=100.0)

Per minibatch of dataset transitions ``(s, a, r, s')``, as CORL's single-file implementation orders it:

1. value: ``V(s)`` regresses onto ``min_i Q'_i(s, a)`` (the target critics) with the asymmetric squared loss
   ``|expectile - 1(u < 0)| u^2``, ``u = min Q' - V``: an expectile above 0.5 leans towards the best actions the
   data shows in ``s``, without ever asking Q about an action outside the data;
2. actor: ``-mean(w * log pi(a|s))`` with ``w = min(exp(beta * (min Q' - V)), max_weight)``: behaviour cloning
   weighted towards the actions that beat the state's value;
3. critics: ``Q_i(s, a)`` regress onto ``r + gamma (1 - terminal) V(s')`` (loss summed over both);
4. targets: Polyak averaging with ``tau``.

The policy is the default :class:`~shoal.policies.Policy`: its action head is the actor (the same distributions as
behaviour cloning and PPO) and its separate critic is ``V``, so a trained IQL policy acts, evaluates and exports
like any other. The twin Q networks (:class:`IQLCritics`, on :class:`~shoal.policies.sac.TwinCritic`) are training
state kept beside it.

Why IQL rather than CQL
    Both keep the learned Q from trusting actions the data never took, the failure of plain off-policy learning
    offline. CQL does it by pushing down a log-sum-exp of Q over all actions, which for Box actions means sampling
    many actions per state from the policy and a uniform proposal (several times the cost of a step), a
    conservatism weight (or a Lagrange threshold) tuned per dataset, and a SAC actor with its temperature. IQL never
    evaluates an action outside the dataset at all: the expectile turns the in-sample ``Q(s, a)`` into an estimate
    of the best in-distribution value, and the actor is weighted maximum likelihood of recorded actions. That makes
    it cheap (three small regressions per step), stable with one set of hyperparameters across the D4RL
    locomotion and AntMaze tasks (expectile 0.7-0.9, beta 3-10), and it reuses the default policy's action heads
    unchanged (masked discrete actions included), as behaviour cloning does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shoal.emulation.actions import ActionLayout
from shoal.emulation.base import action_mask_width
from shoal.emulation.layout import Layout, compile_layout
from shoal.errors import APIUsageError
from shoal.policies import Policy
from shoal.policies.encoders import encoder_kind
from shoal.policies.policy import float_features
from shoal.policies.sac import TwinCritic
from shoal.policies.unflatten import torch_dtype
from shoal.train.config import TrainConfig
from shoal.train.core.ppo import make_optimizer
from shoal.train.core.transitions import TransitionBatch

__all__ = ["IQLCritics", "IQLOptimizers", "expectile_loss", "iql_update"]


class IQLCritics(nn.Module):
    """Twin Q networks and their Polyak-averaged targets, over the scaled flat observation.

    Box actions: ``Q(s, a)`` reads the action scaled into ``[-1, 1]`` for finite bounds (as the default policy's
    Gaussian is parameterized); Discrete: one output per action, the recorded one gathered.

    Args:
        obs_layout, action_layout: the env's layouts (or spaces).
        hidden_size: width of each hidden layer; num_layers: hidden layers (>= 1).
        num_agent_ids: agent slots told apart by a one-hot id (0: none).

    Raises:
        APIUsageError: actions other than Box or Discrete, or an image observation (these are MLPs).
    """

    def __init__(self, obs_layout: Layout | Any, action_layout: ActionLayout | Any, *, hidden_size: int = 256,
                 num_layers: int = 2, num_agent_ids: int = 0) -> None:
        super().__init__()
        self.obs_layout = compile_layout(obs_layout)
        self.action_layout = action_layout if isinstance(action_layout, ActionLayout) else ActionLayout(action_layout)
        kind = self.action_layout.kind
        if kind not in ("continuous", "discrete"):
            raise APIUsageError(f"IQL needs Box or Discrete actions; this env's actions are {kind} "
                                f"({self.action_layout.space}). Train it with --algo bc")
        images = [leaf.path for leaf in self.obs_layout.leaves if encoder_kind(leaf) == "image"]
        if images:
            raise APIUsageError(f"IQL's Q networks are MLPs over the flat observation; the image leaf {images[0]!r} "
                                "needs a CNN. Train image observations with --algo bc")
        self.kind = kind
        self.num_agent_ids = num_agent_ids
        zero = torch.zeros((1, self.obs_layout.flat_size), dtype=torch_dtype(self.obs_layout.flat_dtype))
        features = int(float_features(self.obs_layout, zero, scaled=True).shape[-1]) + num_agent_ids
        if kind == "continuous":
            low = np.asarray(self.action_layout.low, np.float64)
            high = np.asarray(self.action_layout.high, np.float64)
            finite = np.isfinite(low) & np.isfinite(high) & (high - low <= 1e4) & (high > low)
            center, half = np.where(finite, (low + high) / 2, 0.0), np.where(finite, (high - low) / 2, 1.0)
            self.register_buffer("center", torch.as_tensor(center, dtype=torch.float32), persistent=False)
            self.register_buffer("half_range", torch.as_tensor(half, dtype=torch.float32), persistent=False)
            self.q = TwinCritic(features + int(self.action_layout.num_continuous), hidden_size, num_layers, 1)
        else:
            self.q = TwinCritic(features, hidden_size, num_layers, int(action_mask_width(self.action_layout)))
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)

    def features(self, obs: Tensor, agent_ids: Tensor | None = None) -> Tensor:
        """Flat rows ``[N, flat_size]`` (+ int64 ids ``[N]``) -> float32 ``[N, features]``."""
        x = float_features(self.obs_layout, obs, scaled=True)
        if self.num_agent_ids:
            if agent_ids is None:
                raise APIUsageError(f"these critics tell {self.num_agent_ids} agent slots apart: pass agent_ids")
            x = torch.cat([x, F.one_hot(agent_ids.long(), self.num_agent_ids).to(x.dtype)], -1)
        return x

    def forward(self, features: Tensor, actions: Tensor, *, target: bool = False) -> Tensor:
        """Both critics' ``Q(s, a)`` of the recorded actions: float32 ``[2, N]``."""
        net = self.q_target if target else self.q
        if self.kind == "continuous":
            unit = (actions.to(torch.float32) - self.center) / self.half_range
            return net(torch.cat([features, unit], -1)).squeeze(-1)
        index = actions.long().reshape(1, -1, 1).expand(2, -1, 1)
        return net(features).gather(-1, index).squeeze(-1)

    def soft_update_targets(self, tau: float) -> None:
        """``target <- (1 - tau) * target + tau * critic``."""
        with torch.no_grad():
            for target, source in zip(self.q_target.parameters(), self.q.parameters(), strict=True):
                target.lerp_(source, tau)


@dataclass
class IQLOptimizers:
    """Adam for the policy (actor and state value, one step on the sum of their losses) and Adam for the Q
    networks. Saved and restored together; ``param_groups`` lists both (for the learning rate).

    The actor and V have separate networks except for the policy's agent-id embedding (``num_agent_ids > 0``),
    which both read: it is trained by both losses, as PPO trains it by its actor and critic losses."""

    policy: torch.optim.Optimizer
    critics: torch.optim.Optimizer

    @classmethod
    def for_networks(cls, policy: nn.Module, critics: IQLCritics, config: TrainConfig) -> IQLOptimizers:
        """Adams with ``config``'s learning rate and epsilon (fused where torch supports it)."""
        return cls(make_optimizer(policy, config), make_optimizer(critics.q, config))

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [*self.policy.param_groups, *self.critics.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "critics": self.critics.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.critics.load_state_dict(state["critics"])


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """``mean(|expectile - 1(diff < 0)| * diff^2)`` of ``diff = target - prediction`` (float ``[N]``)."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def iql_update(policy: Policy, critics: IQLCritics, optimizers: IQLOptimizers, batch: TransitionBatch, *,
               gamma: float, tau: float, expectile: float, beta: float, max_weight: float) -> dict[str, Tensor]:
    """One IQL gradient step on ``batch`` (see the module docstring); returns detached scalars ``value_loss``,
    ``policy_loss``, ``q_loss``, ``entropy`` (of the actor) and ``q_mean``."""
    ids = batch.agent_ids
    features = critics.features(batch.obs, ids)
    with torch.no_grad():
        target_q = critics(features, batch.actions, target=True).min(0).values
        next_value = policy.value(batch.next_obs, agent_ids=ids)

    # 1. value (expectile regression) and 2. actor (advantage-weighted likelihood): one step on the summed losses
    # (only the agent-id embedding, when there is one, receives gradients from both)
    value = policy.value(batch.obs, agent_ids=ids)
    advantage = target_q - value
    value_loss = expectile_loss(advantage, expectile)
    weights = torch.exp(beta * advantage.detach()).clamp(max=max_weight)
    dist = policy.head(policy.encode(batch.obs, ids), batch.action_masks)
    policy_loss = -(weights * dist.log_prob(batch.actions)).mean()
    optimizers.policy.zero_grad(set_to_none=True)
    (value_loss + policy_loss).backward()
    optimizers.policy.step()

    # 3. critics
    target = batch.rewards + gamma * (1.0 - batch.terminals) * next_value
    q = critics(features, batch.actions)
    q_loss = (q - target).pow(2).mean(-1).sum()
    optimizers.critics.zero_grad(set_to_none=True)
    q_loss.backward()
    optimizers.critics.step()

    # 4. targets
    critics.soft_update_targets(tau)
    return {"value_loss": value_loss.detach(), "policy_loss": policy_loss.detach(), "q_loss": q_loss.detach(),
            "entropy": dist.entropy().mean().detach(), "q_mean": q.detach().mean()}

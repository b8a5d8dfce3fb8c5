"""The soft actor-critic update: critics, actor, temperature, targets, on one sampled minibatch.

    optimizers = SACOptimizers.for_policy(policy, learning_rate=3e-4)
    stats = sac_update(policy, optimizers, replay.sample(256, generator, device), tau=0.005, target_entropy=-1.0)

The critics read the batch's centralized inputs (``critic_obs``, ``next_critic_obs``) when the policy has
centralized critics, else the actor's features of ``obs`` / ``next_obs``. Per minibatch, in this order (Haarnoja
et al., 2018, with the temperature tuned as in their follow-up):

1. critics: ``y = r + discount * (1 - terminal) * (min_i Q'_i(s', a') - alpha * log pi(a'|s'))`` with
   ``a' ~ pi(s')`` (Discrete: the expectation over ``pi(.|s')`` exactly) and ``discount`` the transition's
   ``gamma^k`` (:class:`~shoal.train.core.replay.ReplayBatch`); loss ``0.5 * sum_i mean (Q_i(s, a) - y)^2``;
2. actor: ``mean(alpha * log pi(a|s) - min_i Q_i(s, a))`` with ``a ~ pi(s)`` reparameterized (Discrete: the
   expectation), the critics' weights frozen;
3. temperature (when tuned): ``log_alpha * mean(entropy - target_entropy)``, raising ``alpha`` while the policy's
   entropy is below the target;
4. targets: Polyak averaging with ``tau``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from shoal.errors import APIUsageError
from shoal.policies.sac import SACPolicy
from shoal.train.core.replay import ReplayBatch

__all__ = ["SACOptimizers", "discrete_target_entropy", "sac_update"]


@dataclass
class SACOptimizers:
    """The two Adams of SAC: the critics', and the actor's (with the temperature when it is tuned: its loss reads
    only ``log_alpha``, so one backward pass and one step serve both). Saved and restored together."""

    actor: torch.optim.Optimizer
    critic: torch.optim.Optimizer
    tune_alpha: bool

    @classmethod
    def for_policy(cls, policy: SACPolicy, learning_rate: float, *, tune_alpha: bool = True,
                   eps: float = 1e-8) -> SACOptimizers:
        # fused: one kernel per step for all parameters (3-5x faster than per-tensor steps on a CPU; the update
        # of a small network is overhead-bound)
        def adam(params: list[Tensor]) -> torch.optim.Optimizer:
            if policy.device.type in ("cpu", "cuda"):
                try:
                    return torch.optim.Adam(params, lr=learning_rate, eps=eps, fused=True)
                except (RuntimeError, TypeError):  # torch < 2.4 has no fused Adam on CPUs
                    pass
            return torch.optim.Adam(params, lr=learning_rate, eps=eps, foreach=True)

        actor = list(policy.actor_net.parameters()) + ([policy.log_alpha] if tune_alpha else [])
        return cls(adam(actor), adam(list(policy.critic.parameters())), tune_alpha)

    def set_learning_rate(self, learning_rate: float) -> None:
        for optimizer in (self.actor, self.critic):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate

    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])


def _policy(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(probs, log_probs)`` of masked logits, with the log-probability of an action of probability 0 (illegal)
    set to 0: it is weighted by 0 in every expectation, and its true value (about ``finfo.min``) would turn
    ``alpha * log_prob`` into infinities and the gradients into NaN."""
    log_probs = torch.log_softmax(logits, -1)
    probs = log_probs.exp()
    return probs, torch.where(probs > 0, log_probs, torch.zeros_like(log_probs))


def discrete_target_entropy(action_masks: Tensor | None, num_actions: int, ratio: float = 0.89) -> Tensor:
    """Per state, ``ratio * log(number of legal actions)``: float32 ``[N]`` (or a scalar without masks).

    A target over every action could never be met in states with fewer legal ones (tic-tac-toe: ``0.89 log 9``
    exceeds ``log 7``), so the tuned temperature would grow without bound.
    """
    if action_masks is None:
        return torch.tensor(ratio * math.log(num_actions))
    return ratio * action_masks.sum(-1).clamp(min=1).to(torch.float32).log()


def sac_update(policy: SACPolicy, optimizers: SACOptimizers, batch: ReplayBatch, *, tau: float,
               target_entropy: float | None) -> dict[str, Tensor]:
    """One gradient step of the critics, the actor and the temperature, then the target update.

    ``target_entropy``: the entropy the temperature aims for; None: ``-action_dim`` for Box actions,
    :func:`discrete_target_entropy` per state for Discrete ones.

    Returns detached scalar tensors (``q_loss``, ``actor_loss``, ``alpha``, ``entropy``, ``q_mean``): the caller
    averages them over many steps before reading them, so no step waits on a ``.item()``.
    """
    if (batch.critic_obs is None) != (policy.critic_input_size == 0):
        raise APIUsageError(
            f"the policy's critics read {policy.critic_input_size or 'no'} centralized inputs per row but the batch "
            f"holds {'none' if batch.critic_obs is None else batch.critic_obs.shape[-1]}: sample it from a "
            "ReplayBuffer whose critic_width is the policy's critic_input_size"
        )
    features = policy.features(batch.obs, batch.agent_ids)
    next_features = policy.features(batch.next_obs, batch.agent_ids)
    # a centralized critic reads the stored critic inputs; the actor always reads its own observation
    critic_in = features if batch.critic_obs is None else batch.critic_obs
    next_critic_in = next_features if batch.next_critic_obs is None else batch.next_critic_obs
    alpha = policy.log_alpha.detach().exp()
    not_done = 1.0 - batch.terminals
    continuous = policy.kind == "continuous"

    # 1. critics
    with torch.no_grad():
        if continuous:
            next_action, next_log_prob = policy.squashed_sample(next_features)
            next_q = policy.q_values(next_critic_in, next_action, target=True).min(0).values
            next_value = next_q - alpha * next_log_prob
        else:
            next_probs, next_log_probs = _policy(policy.logits(next_features, batch.next_action_masks))
            next_q = policy.q_values(next_critic_in, target=True).min(0).values
            next_value = (next_probs * (next_q - alpha * next_log_probs)).sum(-1)
        target = batch.rewards + batch.discounts * not_done * next_value
    if continuous:
        q = policy.q_values(critic_in, policy.to_unit_range(batch.actions))
    else:
        index = batch.actions.long().reshape(1, -1, 1).expand(2, -1, 1)
        q = policy.q_values(critic_in).gather(-1, index).squeeze(-1)
    q_loss = 0.5 * (q - target).pow(2).mean(-1).sum()
    optimizers.critic.zero_grad(set_to_none=True)
    q_loss.backward()
    optimizers.critic.step()

    # 2. actor (the critics' weights frozen: no gradient is computed for them)
    if continuous:
        action, log_prob = policy.squashed_sample(features)
        q_pi = policy.q_values(critic_in, action, frozen=True).min(0).values
        actor_loss = (alpha * log_prob - q_pi).mean()
        entropy = -log_prob.detach()
    else:
        probs, log_probs = _policy(policy.logits(features, batch.action_masks))
        q_pi = policy.q_values(critic_in, frozen=True).min(0).values
        actor_loss = (probs * (alpha * log_probs - q_pi)).sum(-1).mean()
        entropy = -(probs * log_probs).sum(-1).detach()
    # 3. temperature (its loss reads only log_alpha: one backward pass and one step with the actor's)
    loss = actor_loss
    if optimizers.tune_alpha:
        if target_entropy is not None:
            target = torch.tensor(float(target_entropy))
        elif continuous:
            target = torch.tensor(-float(policy.action_size))
        else:
            target = discrete_target_entropy(batch.action_masks, policy.action_size)
        loss = loss + policy.log_alpha * (entropy - target.to(entropy.device)).mean()
    optimizers.actor.zero_grad(set_to_none=True)
    loss.backward()
    optimizers.actor.step()

    # 4. targets
    policy.soft_update_targets(tau)
    return {"q_loss": q_loss.detach(), "actor_loss": actor_loss.detach(), "alpha": alpha,
            "entropy": entropy.mean(), "q_mean": q.detach().mean()}

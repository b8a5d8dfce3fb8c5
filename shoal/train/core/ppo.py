"""PPO: the clipped surrogate loss and one update over a rollout, readable top to bottom.

An update (:func:`ppo_update`), in phases:

1. **Advantages**: GAE (or V-trace-clipped GAE) over the ``[S, H]`` segments of the rollout; value targets are
   ``advantages + values``. Truncated episodes bootstrap from the value of their final observation (already in
   ``next_values``), terminated ones do not.
2. **Minibatches** (:mod:`shoal.train.core.minibatches`): feed-forward policies shuffle single live transitions;
   recurrent policies (and prioritized sampling) draw whole segments, replayed from each segment's stored
   initial LSTM state (BPTT over the segment, state zeroed where an episode starts).
3. **Loss** (:func:`ppo_loss`): clipped policy surrogate (optionally dual-clipped), clipped value loss, entropy
   bonus, over valid transitions only (padding is selected away with ``torch.where``, so its content cannot
   matter).
4. **Step**: backward, gradient reduction, global gradient-norm clipping, Adam step; early stop on
   ``target_kl``.
5. **Statistics**: losses, approximate KL, clip fraction, explained variance.
6. **Observation statistics**: a policy that normalizes its observations by running statistics (``obs_norm``)
   folds the rollout's observations into them, for the next rollout.

Speed and scale plug in behind three seams whose defaults are the plain computation: ``loss_fn`` (a
:data:`LossFn`; :class:`~shoal.train.speed.traced_loss.LossTracer` replays verified traces of the same loss),
``reducer`` (a :class:`Reducer`; one process: :data:`SINGLE_LEARNER`, data-parallel learners:
:class:`~shoal.train.speed.distributed.ProcessGroupReducer`) and ``value_norm`` (a
:class:`~shoal.train.core.normalize.ValueNormalizer` when the critic predicts normalized values).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from shoal.train.config import TrainConfig
from shoal.train.core.advantage import gae, vtrace_gae
from shoal.train.core.minibatches import Minibatch, MinibatchSource
from shoal.train.core.normalize import ValueNormalizer
from shoal.train.core.rollout import RolloutTensors

__all__ = [
    "SINGLE_LEARNER",
    "LossFn",
    "LossOutput",
    "Reducer",
    "advantages_and_returns",
    "clip_grad_norm",
    "eager_loss",
    "loss_coefficients",
    "make_optimizer",
    "masked_mean",
    "minibatch_loss",
    "ppo_loss",
    "ppo_update",
]


def masked_mean(x: Tensor, valid: Tensor | None, weights: Tensor | None = None) -> Tensor:
    """Mean of ``x`` over ``valid`` entries (all if None), optionally weighted; others never matter."""
    if valid is None:
        return x.mean() if weights is None else (x * weights).mean()
    x = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if weights is not None:
        x = x * torch.where(valid, weights, torch.zeros((), dtype=weights.dtype, device=weights.device))
    return x.sum() / valid.sum().clamp(min=1)


@dataclass
class LossOutput:
    """What :func:`ppo_loss` returns: the scalar ``loss`` to minimize and detached statistics."""

    loss: Tensor
    policy_loss: Tensor
    value_loss: Tensor
    entropy: Tensor
    approx_kl: Tensor
    old_approx_kl: Tensor
    clipfrac: Tensor
    ratio: Tensor


def ppo_loss(
    new_log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    new_values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    entropy: Tensor,
    valid: Tensor | None = None,
    *,
    clip_coef: float,
    dual_clip: float | None = None,
    clip_vloss: bool = True,
    vf_clip_coef: float = 0.2,
    vf_coef: float = 0.5,
    ent_coef: float = 0.0,
    norm_adv: bool = True,
    weights: Tensor | None = None,
) -> LossOutput:
    """The PPO loss over one minibatch.

    Args:
        new_log_probs, old_log_probs: float ``[M]`` (any shape, the same for every argument) log-probabilities
            of the taken actions under the current and the acting policy.
        advantages, returns: float ``[M]`` advantage estimates and value targets.
        new_values, old_values: float ``[M]`` current and acting-time values.
        entropy: float ``[M]`` entropy of the current action distribution.
        valid: bool ``[M]``: only these entries count; the others may hold anything (NaN included, except in
            the three inputs that carry gradients, which must be finite). None: every entry is valid.
        clip_coef: ratio clip ``epsilon``. dual_clip: constant ``c > 1`` bounding negative-advantage losses.
        clip_vloss, vf_clip_coef: clip the value update around ``old_values``. vf_coef, ent_coef: weights.
        norm_adv: normalize advantages over the valid entries of the minibatch.
        weights: float ``[M]`` prioritized-sampling importance weights of the policy loss (None: 1).

    Returns:
        :class:`LossOutput`; ``ratio`` is ``exp(new - old)`` (detached) for V-trace.
    """
    if valid is not None:  # select padding away first: nothing downstream can see it
        zero = torch.zeros((), dtype=new_log_probs.dtype, device=new_log_probs.device)
        new_log_probs, old_log_probs, advantages, new_values, old_values, returns, entropy = (
            torch.where(valid, x, zero)
            for x in (new_log_probs, old_log_probs, advantages, new_values, old_values, returns, entropy)
        )
    with torch.no_grad():
        adv = advantages
        if norm_adv:
            if valid is None:
                std, mean = torch.std_mean(adv)
                adv = (adv - mean) / (std + 1e-8)
            else:
                count = valid.sum().clamp(min=1)
                mean = adv.sum() / count
                var = torch.where(valid, (adv - mean) ** 2, 0.0).sum() / (count - 1).clamp(min=1)
                adv = torch.where(valid, (adv - mean) / (var.sqrt() + 1e-8), 0.0)
    logratio = new_log_probs - old_log_probs
    ratio = logratio.exp()
    # Policy: clipped surrogate (and dual clip for negative advantages).
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip_coef, 1 + clip_coef) * adv)
    if dual_clip is not None:
        surrogate = torch.where(adv < 0, torch.max(surrogate, dual_clip * adv), surrogate)
    policy_loss = -masked_mean(surrogate, valid, weights)
    # Value: squared error, optionally clipped around the old values.
    value_error = (new_values - returns) ** 2
    if clip_vloss:
        clipped = old_values + (new_values - old_values).clamp(-vf_clip_coef, vf_clip_coef)
        value_error = torch.max(value_error, (clipped - returns) ** 2)
    value_loss = 0.5 * masked_mean(value_error, valid)
    entropy_mean = masked_mean(entropy, valid)
    loss = policy_loss + vf_coef * value_loss
    if ent_coef:  # (a zero coefficient keeps the entropy out of the backward pass)
        loss = loss - ent_coef * entropy_mean
    with torch.no_grad():
        excess = ratio - 1.0
        approx_kl = masked_mean(excess - logratio, valid)
        old_approx_kl = -masked_mean(logratio, valid)
        clipfrac = masked_mean((excess.abs() > clip_coef).to(ratio.dtype), valid)
    return LossOutput(
        loss,
        policy_loss.detach(),
        value_loss.detach(),
        entropy_mean.detach(),
        approx_kl,
        old_approx_kl,
        clipfrac,
        ratio.detach(),
    )


def minibatch_loss(policy: nn.Module, obs: Tensor, actions: Tensor, action_masks: Tensor | None,
                   agent_ids: Tensor | None, critic_obs: Tensor | None, old_log_probs: Tensor, old_values: Tensor,
                   advantages: Tensor, returns: Tensor, loss_kwargs: dict[str, Any]) -> LossOutput:
    """Evaluate ``actions`` under ``policy`` and return :func:`~shoal.train.core.ppo.ppo_loss` over the minibatch.

    ``obs`` ``[M, flat_size]``, ``actions`` ``[M, *flat_action_shape]``, optional ``action_masks`` ``bool[M, W]``,
    ``agent_ids`` ``int64[M]``, ``critic_obs`` ``float[M, C]``; the other four float ``[M]``. Every entry counts.
    """
    out = policy(obs, action=actions, action_masks=action_masks, agent_ids=agent_ids, critic_obs=critic_obs)
    return ppo_loss(out.log_prob, old_log_probs, advantages, out.value, old_values, returns, out.entropy, None,
                    **loss_kwargs)


def eager_loss(policy: nn.Module, minibatch: Minibatch, coefficients: dict[str, Any]) -> LossOutput:
    """:func:`ppo_loss` of ``minibatch`` under ``policy``, computed eagerly (the default :data:`LossFn`).

    Flat minibatches go through :func:`minibatch_loss`; segments ``[B, H]`` are replayed as sequences ``[H, B]``
    from their initial LSTM states, and only their valid steps count (weighted by ``minibatch.weights``).
    """
    if not minibatch.segments:
        return minibatch_loss(policy, minibatch.obs, minibatch.actions, minibatch.action_masks, minibatch.agent_ids,
                              minibatch.critic_obs, *minibatch.columns.unbind(-1), coefficients)

    def steps_first(x: Tensor | None) -> Tensor | None:
        return None if x is None else x.transpose(0, 1)

    state = None if minibatch.states is None else (minibatch.states[0][None], minibatch.states[1][None])
    out = policy(steps_first(minibatch.obs), state, done=steps_first(minibatch.starts) if state is not None else None,
                 action=steps_first(minibatch.actions), action_masks=steps_first(minibatch.action_masks),
                 agent_ids=steps_first(minibatch.agent_ids), critic_obs=steps_first(minibatch.critic_obs))
    old_log_probs, old_values, advantages, returns = minibatch.columns.unbind(-1)
    return ppo_loss(out.log_prob.transpose(0, 1), old_log_probs, advantages, out.value.transpose(0, 1), old_values,
                    returns, out.entropy.transpose(0, 1), minibatch.valid, weights=minibatch.weights,
                    **coefficients)


#: How an update computes a minibatch's loss: ``loss_fn(policy, minibatch, coefficients) -> LossOutput``, with
#: ``coefficients`` from :func:`loss_coefficients`. :func:`eager_loss` is the reference; a replacement must return
#: the same numbers and gradients.
LossFn = Callable[[nn.Module, Minibatch, dict[str, Any]], LossOutput]


class Reducer(Protocol):
    """What data-parallel learners agree on during an update; every method is the identity for one learner.

    Every learner calls the methods in the same order with tensors of the same shapes.
    """

    def count(self, minibatches: int) -> int:
        """The number of minibatches every learner takes (the smallest learner's), from this learner's own."""
        ...

    def gradients(self, params: list[Tensor], weight: Tensor) -> None:
        """Replace each parameter's gradient with the mean over the learners weighted by ``weight`` (a scalar
        tensor: this learner's transitions in the minibatch; None gradients count as zeros)."""
        ...

    def mean(self, values: Tensor) -> Tensor:
        """The mean of ``values`` (any float shape) over the learners."""
        ...

    def gather(self, values: Tensor) -> Tensor:
        """Every learner's float ``[N_r]`` ``values`` concatenated in rank order."""
        ...


class _SingleLearner:
    """The :class:`Reducer` of one learner: nothing to agree on."""

    def count(self, minibatches: int) -> int:
        return minibatches

    def gradients(self, params: list[Tensor], weight: Tensor) -> None:
        return None

    def mean(self, values: Tensor) -> Tensor:
        return values

    def gather(self, values: Tensor) -> Tensor:
        return values


#: The :class:`Reducer` of a learner that holds the whole batch.
SINGLE_LEARNER: Reducer = _SingleLearner()


def loss_coefficients(cfg: TrainConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`ppo_loss` that ``cfg`` sets (a plain dict: traces key on it)."""
    return dict(clip_coef=cfg.clip_coef, dual_clip=cfg.dual_clip, clip_vloss=cfg.clip_vloss,
                vf_clip_coef=cfg.vf_clip_coef, vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef, norm_adv=cfg.norm_adv)


def advantages_and_returns(data: RolloutTensors, cfg: TrainConfig, ratios: Tensor | None = None
                           ) -> tuple[Tensor, Tensor]:
    """Advantages and value targets, float ``[S, H]`` each: GAE, or V-trace-clipped GAE given the current
    policy's importance ``ratios`` float ``[S, H]``. ``cfg`` is resolved (:meth:`TrainConfig.resolved`: its
    ``gamma`` and ``gae_lambda`` filled in)."""
    if ratios is None:
        advantages = gae(data.rewards, data.values, data.next_values, data.dones, gamma=cfg.gamma,
                         lam=cfg.gae_lambda)
    else:
        advantages = vtrace_gae(data.rewards, data.values, data.next_values, data.dones, ratios, gamma=cfg.gamma,
                                lam=cfg.gae_lambda, rho_clip=cfg.vtrace_rho_clip, c_clip=cfg.vtrace_c_clip)
    return advantages, advantages + data.values


def clip_grad_norm(params: list[Tensor], max_norm: float) -> Tensor:
    """Scale the gradients of ``params`` so their global L2 norm is at most ``max_norm`` (0: no clipping).

    The same as ``torch.nn.utils.clip_grad_norm_`` (coefficient ``max_norm / (norm + 1e-6)`` capped at 1) with
    fused operations. Returns the norm before clipping (NaN when ``max_norm`` is 0).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if max_norm <= 0 or not grads:
        return torch.full((), math.nan)
    first = grads[0]
    if any(g.device != first.device or g.dtype != first.dtype for g in grads):
        return nn.utils.clip_grad_norm_(params, max_norm)
    norm = torch.stack(torch._foreach_norm(grads)).norm()
    torch._foreach_mul_(grads, torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm


def make_optimizer(policy: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam over ``policy``'s parameters with ``cfg``'s learning rate and epsilon, fused into one kernel per step
    where torch supports it (the same math, less overhead)."""
    cfg = cfg.resolved()
    try:
        return torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps)


_STATS = ("policy_loss", "value_loss", "entropy", "approx_kl", "old_approx_kl", "clipfrac", "grad_norm")


def ppo_update(
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: RolloutTensors,
    cfg: TrainConfig,
    generator: torch.Generator,
    *,
    progress: float = 0.0,
    value_norm: ValueNormalizer | None = None,
    loss_fn: LossFn = eager_loss,
    reducer: Reducer = SINGLE_LEARNER,
) -> dict[str, float]:
    """One PPO update on a rollout (see the module docs for its phases).

    Args:
        policy: a :class:`~shoal.policies.Policy` (or any module with the same ``forward`` contract).
        optimizer: its optimizer (learning rate already set for this update).
        data: the rollout, ``[S, H, ...]`` tensors on the policy's device (:meth:`RolloutData.to_torch`).
        cfg: loss coefficients, epochs, minibatch size, advantage kind, prioritized sampling.
        generator: CPU ``torch.Generator`` for shuffling and prioritized sampling (part of the checkpoint).
        progress: fraction of training done, in ``[0, 1]`` (anneals the prioritized-sampling beta).
        value_norm: when the critic predicts normalized values: updated with this rollout's value targets (of
            every learner), and the loss compares the critic's outputs with normalized targets and old values.
        loss_fn: computes each minibatch's loss (:data:`LossFn`).
        reducer: what data-parallel learners agree on (:class:`Reducer`): the minibatch count, mean gradients,
            the KL of early stopping and the statistics. Each learner normalizes advantages over its own
            minibatch.

    Returns:
        Mean statistics: ``policy_loss``, ``value_loss``, ``entropy``, ``approx_kl``, ``old_approx_kl``,
        ``clipfrac``, ``grad_norm``, ``explained_variance``, ``advantage_mean``, ``epochs``, ``minibatches``.
    """
    cfg = cfg.resolved()  # (a no-op for the trainers' configs)
    valid = data.valid
    prioritized = cfg.prio_alpha > 0
    source = MinibatchSource(
        data,
        segments=bool(getattr(policy, "is_recurrent", False)) or prioritized,
        action_masks=data.action_masks is not None and not bool(data.action_masks.all()),
        agent_ids=bool(getattr(policy, "num_agent_ids", 0)),
    )
    coefficients = loss_coefficients(cfg)
    ratios = torch.ones_like(data.values) if cfg.advantage == "vtrace" else None

    # Phase 1: advantages and value targets (the critic learns them in value_norm's units).
    def set_targets(advantages: Tensor, returns: Tensor) -> None:
        if value_norm is None:
            source.set_targets(data.values, advantages, returns)
        else:
            source.set_targets(value_norm.normalize(data.values), advantages, value_norm.normalize(returns))

    advantages, returns = advantages_and_returns(data, cfg, ratios)
    if value_norm is not None:
        value_norm.update(reducer.gather(returns[valid]))
    set_targets(advantages, returns)

    # Phases 2-4: epochs of minibatches.
    unit = max(1, cfg.minibatch_size // valid.shape[1]) if source.segments else cfg.minibatch_size
    num_minibatches = reducer.count(max(1, round(source.count / unit)))
    beta = cfg.prio_beta0 + (1.0 - cfg.prio_beta0) * min(max(progress, 0.0), 1.0)
    params = [p for p in policy.parameters() if p.requires_grad]
    history: list[Tensor] = []
    epochs = 0
    for _ in range(cfg.update_epochs):
        epochs += 1
        epoch_kl = []
        for minibatch in source.epoch(num_minibatches, generator, unit, prio_alpha=cfg.prio_alpha, prio_beta=beta):
            out = loss_fn(policy, minibatch, coefficients)
            for param in params:
                param.grad = None
            out.loss.backward()
            reducer.gradients(params, minibatch.weight())
            grad_norm = clip_grad_norm(params, cfg.max_grad_norm)
            optimizer.step()
            if ratios is not None:  # V-trace: the next minibatch's advantages use the updated policy's ratios
                source.scatter(ratios, minibatch, out.ratio, 1.0)
                advantages, returns = advantages_and_returns(data, cfg, ratios)
                set_targets(advantages, returns)
            history.append(torch.stack([out.policy_loss, out.value_loss, out.entropy, out.approx_kl,
                                        out.old_approx_kl, out.clipfrac, grad_norm.to(out.loss.device).float()]))
            epoch_kl.append(out.approx_kl)
        if cfg.target_kl is not None and float(reducer.mean(torch.stack(epoch_kl).mean())) > cfg.target_kl:
            break

    # Phase 5: statistics (losses: the mean over the learners; the others pooled over their transitions).
    v, r = data.values[valid].double(), returns[valid].double()
    moments = torch.stack([r.new_tensor(float(r.numel())), r.sum(), (r * r).sum(), (r - v).sum(),
                           ((r - v) ** 2).sum(), advantages[valid].double().sum()])
    summary = reducer.mean(torch.cat([torch.stack(history).double().mean(0), moments])).tolist()
    stats = dict(zip(_STATS, summary[: len(_STATS)], strict=True))
    n, r_sum, r_sq, d_sum, d_sq, adv_sum = summary[len(_STATS):]
    var_r = r_sq / n - (r_sum / n) ** 2 if n else 0.0
    var_d = d_sq / n - (d_sum / n) ** 2 if n else 0.0
    stats["explained_variance"] = 1.0 - var_d / var_r if var_r > 0 else math.nan
    stats["advantage_mean"] = adv_sum / n if n else 0.0
    stats["epochs"] = float(epochs)
    stats["minibatches"] = float(len(history))

    # Phase 6: running observation statistics (obs_norm) take in this rollout, after the update, so that the
    # next rollout and the update on it see the same normalization (every learner's rows: moments add up).
    moments_of = getattr(policy, "observation_moments", None)
    if moments_of is not None:
        moments = moments_of(data.obs[valid])
        if moments.numel():
            policy.update_observation_stats(reducer.gather(moments).reshape(-1, moments.numel()).sum(0))
    return stats

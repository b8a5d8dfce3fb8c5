"""PPO: the clipped surrogate loss and one update over a rollout, readable top to bottom.

An update, in phases:

1. **Advantages**: GAE (or V-trace-clipped GAE) over the ``[S, H]`` segments of the rollout; value targets are
   ``advantages + values``. Truncated episodes bootstrap from the value of their final observation (already in
   ``next_values``), terminated ones do not.
2. **Minibatches**: feed-forward policies shuffle single transitions; recurrent policies (and prioritized
   sampling) draw whole segments, replayed from each segment's stored initial LSTM state (BPTT over the
   segment, state zeroed where an episode starts).
3. **Loss**: clipped policy surrogate (optionally dual-clipped), clipped value loss, entropy bonus, computed
   only over valid transitions (padding is selected away with ``torch.where``, so its content cannot matter).
4. **Step**: backward, global gradient-norm clipping, Adam step; early stop on ``target_kl``.
5. **Statistics**: losses, approximate KL, clip fraction, explained variance.

Data-parallel learners run the same update on their own parts of a batch, given an ``all_reduce`` (and, for
value normalization, an ``all_gather``) collective: :func:`ppo_update` then computes the update over the union of
every learner's part (see its docs and :func:`shoal.train.speed.distributed.distributed_ppo_update`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from shoal.errors import APIUsageError
from shoal.train.config import TrainConfig
from shoal.train.core.advantage import gae, vtrace_gae

if TYPE_CHECKING:
    from shoal.train.speed.traced_loss import LossTracer

__all__ = ["LossOutput", "masked_mean", "minibatch_loss", "ppo_loss", "ppo_update"]


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


def _advantages(data: dict[str, Any], ratios: Tensor | None, cfg: TrainConfig) -> Tensor:
    if ratios is None:
        return gae(
            data["rewards"],
            data["values"],
            data["next_values"],
            data["dones"],
            gamma=cfg.gamma,
            lam=cfg.gae_lambda,
        )
    return vtrace_gae(
        data["rewards"],
        data["values"],
        data["next_values"],
        data["dones"],
        ratios,
        gamma=cfg.gamma,
        lam=cfg.gae_lambda,
        rho_clip=cfg.vtrace_rho_clip,
        c_clip=cfg.vtrace_c_clip,
    )


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


def _sequence_forward(
    policy: nn.Module, data: dict[str, Any], index: Tensor, use_masks: bool, use_ids: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Replay whole segments ``index`` ``[B]`` as sequences ``[H, B]`` from their stored initial LSTM states.

    Returns ``(log_probs, entropy, values)``, each ``[B, H]``.
    """
    state = None
    if data["states"] is not None:
        state = (data["states"][0][index].unsqueeze(0), data["states"][1][index].unsqueeze(0))
    out = policy(
        data["obs"][index].transpose(0, 1),
        state,
        done=data["starts"][index].transpose(0, 1) if state is not None else None,
        action_masks=data["action_masks"][index].transpose(0, 1) if use_masks else None,
        action=data["actions"][index].transpose(0, 1),
        agent_ids=data["agent_ids"][index].transpose(0, 1) if use_ids else None,
        critic_obs=data["critic_obs"][index].transpose(0, 1) if data.get("critic_obs") is not None else None,
    )
    return out.log_prob.transpose(0, 1), out.entropy.transpose(0, 1), out.value.transpose(0, 1)


def _moments(adv: Tensor, valid: Tensor | None, empty: bool) -> Tensor:
    """float64 ``[3]``: ``[count, sum, sum of squares]`` of the valid entries of ``adv`` (zeros when ``empty``)."""
    if empty:
        return adv.new_zeros(3, dtype=torch.float64)
    a = adv.double() if valid is None else torch.where(valid, adv, 0.0).double()
    n = a.new_tensor(float(a.numel()) if valid is None else float(valid.sum()))
    return torch.stack([n, a.sum(), (a * a).sum()])


def _normalize(adv: Tensor, valid: Tensor | None, union: Sequence[float]) -> Tensor:
    """``adv`` normalized with the mean and unbiased std of the union's moments ``[count, sum, sum of squares]``
    (as in :func:`ppo_loss`: ``(adv - mean) / (std + 1e-8)``, zero where not valid)."""
    total, s1, s2 = union
    if total == 0:
        return adv
    mean = s1 / total
    std = math.sqrt(max(s2 - s1 * mean, 0.0) / max(total - 1.0, 1.0))
    out = (adv - mean) / (std + 1e-8)
    return out if valid is None else torch.where(valid, out, 0.0)


def ppo_update(
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: dict[str, Any],
    cfg: TrainConfig,
    generator: torch.Generator,
    progress: float = 0.0,
    value_norm: Any = None,
    *,
    all_reduce: Callable[[list[Tensor]], None] | None = None,
    all_gather: Callable[[Tensor], Tensor] | None = None,
    tracer: LossTracer | None = None,
) -> dict[str, float]:
    """One PPO update on a rollout.

    Args:
        policy: a :class:`~shoal.policies.Policy` (or any module with the same ``forward`` contract).
        optimizer: its optimizer (learning rate already set for this update).
        data: :meth:`RolloutData.to_torch` output on the policy's device: ``[S, H, ...]`` tensors.
        cfg: the training configuration (loss coefficients, epochs, minibatch size, advantage kind, ...).
        generator: CPU ``torch.Generator`` for shuffling and prioritized sampling (part of the checkpoint).
        progress: fraction of training done, in ``[0, 1]`` (anneals the prioritized-sampling beta).
        value_norm: a :class:`~shoal.train.core.normalize.ValueNormalizer` when the critic predicts normalized values
            (MAPPO): it is updated with this rollout's returns, and the loss compares the critic's outputs with
            normalized returns and old values. ``data["critic_obs"]`` (optional) feeds a centralized critic.
        all_reduce: for data-parallel learners (None: this process holds the whole batch). A collective that
            sums every tensor of the list over the learners, in place; every learner calls it with tensors of the
            same shapes in the same order: float64 ``[K]`` statistics, and the gradients (``[*param.shape]``
            each, in ``policy.parameters()`` order; zeros for parameters the loss did not reach). With it,
            ``data`` is this learner's part of a batch and the update is the one over the union of the ``W``
            learners' parts, minibatch ``k`` being the union of every learner's minibatch ``k``:

            * ``round(union count / (W * unit))`` minibatches, ``unit`` being ``minibatch_size`` transitions (or
              segments of ``minibatch_size // horizon`` for recurrent policies and prioritized sampling);
            * advantages normalized with the mean and unbiased std of the union's minibatch;
            * each learner's mean loss weighted by its share of the union's valid entries, and the gradients
              summed before clipping, so every learner takes the step of the mean loss over the union (a policy
              wrapped in ``DistributedDataParallel`` must be passed unwrapped, or gradients are reduced twice);
            * early stopping on the union's KL (every learner stops at the same epoch), statistics of the union.

            Advantages, V-trace ratios and prioritized sampling stay per learner (segments are independent).
        all_gather: with ``all_reduce`` and ``value_norm``: a collective returning the concatenation, in rank
            order, of a float ``[N_r]`` tensor of every learner (``[sum of N_r]``, on the input's device), so
            ``value_norm`` is updated with the value targets of every learner.
        tracer: computes each minibatch's :func:`minibatch_loss` of a feed-forward policy through verified
            TorchScript traces (:class:`~shoal.train.speed.traced_loss.LossTracer`; the same numbers and gradients with
            less overhead). None: eagerly. Recurrent policies, prioritized sampling and ``all_reduce`` always
            run eagerly.

    Returns:
        Mean statistics of the update: ``policy_loss``, ``value_loss``, ``entropy``, ``approx_kl``,
        ``old_approx_kl``, ``clipfrac``, ``grad_norm``, ``explained_variance``, ``advantage_mean``,
        ``epochs``, ``minibatches`` (with ``all_reduce``: of the union of every learner's batch, the same on
        every learner).

    Raises:
        APIUsageError: ``all_reduce`` and ``value_norm`` without ``all_gather``.
    """
    union = all_reduce is not None  # this learner's part of a batch shared by several learners
    if union and value_norm is not None and all_gather is None:
        raise APIUsageError("ppo_update with all_reduce and value_norm needs all_gather (the value targets of "
                            "every learner)")
    device = data["values"].device
    valid = data["valid"]
    num_segments, horizon = valid.shape
    prioritized = cfg.prio_alpha > 0
    sequences = bool(getattr(policy, "is_recurrent", False)) or prioritized
    use_masks = data["action_masks"] is not None and not bool(data["action_masks"].all())
    use_ids = bool(getattr(policy, "num_agent_ids", 0))
    loss_kwargs = dict(
        clip_coef=cfg.clip_coef,
        dual_clip=cfg.dual_clip,
        clip_vloss=cfg.clip_vloss,
        vf_clip_coef=cfg.vf_clip_coef,
        vf_coef=cfg.vf_coef,
        ent_coef=cfg.ent_coef,
        norm_adv=cfg.norm_adv and not union,  # union: normalized below, with the union's moments
    )

    # ---- Phase 1: advantages and value targets -------------------------------------------------------------
    vtrace = cfg.advantage == "vtrace"
    ratios = torch.ones_like(data["values"]) if vtrace else None
    advantages = _advantages(data, ratios, cfg)
    returns = advantages + data["values"]
    if value_norm is not None:  # the critic learns in units of these statistics (shoal.train.core.normalize)
        targets = returns[valid]
        if union:  # the targets of every learner
            assert all_gather is not None
            targets = all_gather(targets)
        value_norm.update(targets)

    # ---- Phase 2: minibatch plan ---------------------------------------------------------------------------
    # Feed-forward policies shuffle single live transitions (padding is dropped here, once); recurrent
    # policies and prioritized sampling draw whole segments and mask their padding in the loss.
    if sequences:
        per_batch = max(1, min(num_segments, cfg.minibatch_size // horizon))
        count, unit = num_segments, per_batch
    else:
        live = valid.reshape(-1).nonzero().squeeze(1)

        def flat(x: Tensor) -> Tensor:
            return x.reshape(num_segments * horizon, *x.shape[2:])[live]

        flat_data = {"obs": flat(data["obs"]), "actions": flat(data["actions"])}
        if use_masks:
            flat_data["action_masks"] = flat(data["action_masks"])
        if use_ids:
            flat_data["agent_ids"] = flat(data["agent_ids"])
        if data.get("critic_obs") is not None:
            flat_data["critic_obs"] = flat(data["critic_obs"])
        # log-probs, values, advantages, returns side by side: one gather per minibatch
        columns = torch.stack(
            [flat(data["log_probs"]), flat(data["values"]), flat(advantages), flat(returns)], 1
        )
        count, unit = len(live), cfg.minibatch_size
    if union:  # agreed by every learner: the single-process count for the union and W * minibatch_size
        totals = torch.tensor([float(count), 1.0], dtype=torch.float64, device=device)
        all_reduce([totals])
        total, world = totals.tolist()
        num_minibatches = max(1, round(total / (world * unit)))
    else:
        num_minibatches = max(1, round(count / unit))

    params = [p for p in policy.parameters() if p.requires_grad]
    signature = tracer.policy_signature(policy) if tracer is not None else None  # fixed during the update
    beta = cfg.prio_beta0 + (1.0 - cfg.prio_beta0) * min(max(progress, 0.0), 1.0)
    history: list[Tensor] = []
    epochs_done = 0
    for _epoch in range(cfg.update_epochs):
        epochs_done += 1
        order = torch.tensor_split(torch.randperm(count, generator=generator).to(device), num_minibatches)
        epoch_kl: list[Tensor] = []
        union_moments: list[list[float]] | None = None
        if union and not vtrace and not prioritized:  # advantages are fixed: one all-reduce per epoch
            local = [
                _moments(advantages[index], valid[index], False) if sequences else
                _moments(columns[index, 2], None, len(index) == 0)
                for index in order
            ]
            moments = torch.stack(local)
            all_reduce([moments])
            union_moments = moments.tolist()
        for mb in range(num_minibatches):
            # -- V-trace: advantages with the importance ratios of the current policy
            if vtrace and (history or mb):
                advantages = _advantages(data, ratios, cfg)
                returns = advantages + data["values"]
                if not sequences:
                    columns[:, 2], columns[:, 3] = flat(advantages), flat(returns)

            # -- choose the minibatch and run the current policy on it (union: an empty minibatch still joins the
            #    collectives, with weight 0)
            weights = None
            empty = False
            out_loss: LossOutput | None = None
            if sequences:
                if prioritized:  # draw segments by advantage magnitude; importance weights correct the bias
                    score = torch.where(valid, advantages.abs(), 0.0).sum(1).double().cpu()
                    probs = (score + 1e-8) ** cfg.prio_alpha
                    probs = probs / probs.sum()
                    index = torch.multinomial(probs.float(), per_batch, False, generator=generator)
                    weights = ((num_segments * probs[index]) ** -beta).float().to(device)[:, None]
                    weights = weights.expand(-1, horizon)
                    index = index.to(device)
                else:
                    index = order[mb]
                    if union and len(index) == 0:  # a stand-in segment, all of it masked out
                        empty, index = True, torch.zeros(1, dtype=torch.long, device=device)
                new_log_probs, entropy, new_values = _sequence_forward(
                    policy, data, index, use_masks, use_ids
                )
                mb_valid: Tensor | None = torch.zeros_like(valid[index]) if empty else valid[index]
                old_log_probs, old_values = data["log_probs"][index], data["values"][index]
                mb_adv, mb_ret = advantages[index], returns[index]
            else:
                index = order[mb]
                empty = union and len(index) == 0
                mb_inputs = (
                    flat_data["obs"][index],
                    flat_data["actions"][index],
                    flat_data["action_masks"][index] if use_masks else None,
                    flat_data["agent_ids"][index] if use_ids else None,
                    flat_data["critic_obs"][index] if "critic_obs" in flat_data else None,
                )
                if not union:  # the policy's pass and the loss in one call, replayed through a trace if given
                    mb_columns = columns[index]
                    if value_norm is not None:  # old values and returns in the critic's normalized units
                        olp, ov, adv, ret = mb_columns.unbind(1)
                        mb_columns = torch.stack([olp, value_norm.normalize(ov), adv, value_norm.normalize(ret)], 1)
                    out_loss = minibatch_loss(policy, *mb_inputs, *mb_columns.unbind(1), loss_kwargs) \
                        if tracer is None else tracer.loss(policy, *mb_inputs, mb_columns, loss_kwargs, signature)
                else:
                    out = policy(mb_inputs[0], action=mb_inputs[1], action_masks=mb_inputs[2],
                                 agent_ids=mb_inputs[3], critic_obs=mb_inputs[4])
                    new_log_probs, entropy, new_values = out.log_prob, out.entropy, out.value
                    mb_valid = torch.ones(0, dtype=torch.bool, device=device) if empty else None
                    old_log_probs, old_values, mb_adv, mb_ret = columns[index].unbind(1)

            # -- loss (union: advantages normalized over the union, the mean loss weighted by this learner's share)
            share = 1.0
            if out_loss is None:
                if union:
                    mine = _moments(mb_adv, mb_valid, empty)
                    if union_moments is not None:
                        moments_mb = union_moments[mb]
                    else:
                        summed = mine.clone()
                        all_reduce([summed])
                        moments_mb = summed.tolist()
                    if cfg.norm_adv:
                        mb_adv = _normalize(mb_adv, mb_valid, moments_mb)
                    share = float(mine[0]) / moments_mb[0] if moments_mb[0] else 0.0  # the shares sum to 1
                if value_norm is not None:  # old values and returns in the critic's normalized units
                    old_values, mb_ret = value_norm.normalize(old_values), value_norm.normalize(mb_ret)
                out_loss = ppo_loss(
                    new_log_probs,
                    old_log_probs,
                    mb_adv,
                    new_values,
                    old_values,
                    mb_ret,
                    entropy,
                    mb_valid,
                    weights=weights,
                    **loss_kwargs,
                )

            # -- step (union: the sum of the learners' share-weighted gradients is the gradient over the union)
            for param in params:
                param.grad = None
            (out_loss.loss * share if union else out_loss.loss).backward()
            if union:
                for param in params:  # every learner reduces the same list of gradients
                    if param.grad is None:
                        param.grad = torch.zeros_like(param)
                all_reduce([param.grad for param in params])
            grad_norm = clip_grad_norm(params, cfg.max_grad_norm)
            optimizer.step()
            if ratios is not None:
                if sequences:
                    ratios[index] = torch.where(valid[index], out_loss.ratio, 1.0)
                elif not empty:
                    ratios.view(-1)[live[index]] = out_loss.ratio

            row = torch.stack(
                [
                    out_loss.policy_loss,
                    out_loss.value_loss,
                    out_loss.entropy,
                    out_loss.approx_kl,
                    out_loss.old_approx_kl,
                    out_loss.clipfrac,
                    grad_norm.to(out_loss.loss.device).float(),
                ]
            )
            history.append(row * share if union else row)  # union: summed over the learners below
            epoch_kl.append(out_loss.approx_kl * share if union else out_loss.approx_kl)
        if cfg.target_kl is not None:
            kl = torch.stack(epoch_kl).mean()
            if union:
                kl = kl.double().reshape(1)
                all_reduce([kl])
            if float(kl) > cfg.target_kl:
                break

    # ---- Phase 3: statistics (union: of every learner's batch) ---------------------------------------------
    names = ("policy_loss", "value_loss", "entropy", "approx_kl", "old_approx_kl", "clipfrac", "grad_norm")
    v = data["values"][valid].double()
    r = returns[valid].double()
    if union:
        parts = [r.new_tensor(float(r.numel())), r.sum(), (r * r).sum(), (r - v).sum(), ((r - v) ** 2).sum(),
                 advantages[valid].double().sum()]
        moments = torch.cat([torch.stack(history).mean(0).double(), torch.stack(parts)])
        all_reduce([moments])
        means = moments.tolist()
        stats = dict(zip(names, means[:7], strict=True))
        n, r_sum, r_sq, d_sum, d_sq, adv_sum = means[7:]
        var_r = r_sq / n - (r_sum / n) ** 2 if n else 0.0
        var_d = d_sq / n - (d_sum / n) ** 2 if n else 0.0
        stats["explained_variance"] = math.nan if var_r <= 0 else 1.0 - var_d / var_r
        stats["advantage_mean"] = adv_sum / n if n else 0.0
    else:
        stats = dict(zip(names, torch.stack(history).mean(0).tolist(), strict=True))
        var_r = float(r.var(unbiased=False)) if r.numel() else 0.0
        stats["explained_variance"] = math.nan if var_r == 0 else 1.0 - float((r - v).var(unbiased=False)) / var_r
        stats["advantage_mean"] = float(advantages[valid].mean()) if bool(valid.any()) else 0.0
    stats["epochs"] = float(epochs_done)
    stats["minibatches"] = float(len(history))
    return stats

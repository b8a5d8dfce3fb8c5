"""Masked rows never influence learning: garbage in padding, dead or empty slots changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from shoal.train import TrainConfig, Trainer
from shoal.train.core.ppo import ppo_loss
from tests.train.rollouts import Garbage


def loss_and_grad(inputs: dict[str, torch.Tensor], valid: torch.Tensor, weight: torch.Tensor) -> tuple:
    """The PPO loss of a tiny linear 'policy' (inputs times a weight) and its gradient."""
    w = weight.clone().requires_grad_(True)
    out = ppo_loss(
        inputs["new_lp"] * w,
        inputs["old_lp"],
        inputs["adv"],
        inputs["new_v"] * w,
        inputs["old_v"],
        inputs["ret"],
        inputs["ent"] * w,
        valid,
        clip_coef=0.2,
        dual_clip=3.0,
        clip_vloss=True,
        vf_clip_coef=0.2,
        vf_coef=0.5,
        ent_coef=0.01,
        norm_adv=True,
    )
    out.loss.backward()
    return out.loss.detach(), w.grad, out.approx_kl, out.clipfrac


def test_loss_ignores_invalid_entries() -> None:
    g = torch.Generator().manual_seed(0)
    shape = (6, 5)
    inputs = {
        k: torch.randn(shape, generator=g)
        for k in ("new_lp", "old_lp", "adv", "new_v", "old_v", "ret", "ent")
    }
    valid = torch.rand(shape, generator=g) > 0.3
    weight = torch.tensor(1.3)
    base = loss_and_grad(inputs, valid, weight)
    # Huge junk everywhere, and NaN in every input that does not depend on the parameters: nothing changes.
    # (The trainer zeroes padded observations before the forward pass, so network outputs there are finite.)
    huge = torch.randn(shape, generator=g) * 1e6
    nan = torch.full(shape, float("nan"))
    for junk in (
        {k: huge for k in inputs},
        {k: nan if k in ("old_lp", "adv", "old_v", "ret") else huge for k in inputs},
    ):
        changed = {k: torch.where(valid, v, junk[k]) for k, v in inputs.items()}
        again = loss_and_grad(changed, valid, weight)
        for a, b in zip(base, again, strict=True):
            assert torch.equal(a, b)
    # The loss value itself ignores NaN anywhere.
    changed = {k: torch.where(valid, v, nan) for k, v in inputs.items()}
    assert torch.equal(loss_and_grad(changed, valid, weight)[0], base[0])


def run(junk_seed: int | None, **overrides: Any) -> tuple[dict[str, torch.Tensor], list[float]]:
    cfg = TrainConfig(
        env="squad",
        env_kwargs={"num_agents": 3, "max_steps": 6},
        max_agents=5,
        num_envs=2,
        horizon=8,
        batch_size=96,
        minibatch_size=32,
        update_epochs=2,
        total_steps=96 * 4,
        seed=3,
        log_interval=0.0,
        **overrides,
    )
    returns: list[float] = []
    trainer = Trainer(cfg, callbacks=[lambda r: returns.append(r.scalars.get("charts/episode_return", 0.0))])
    if junk_seed is not None:
        trainer.vecenv = Garbage(trainer.vecenv, junk_seed)
    result = trainer.train()
    return {k: v.clone() for k, v in result.policy.state_dict().items()}, returns


def test_dead_and_padded_slots_never_reach_the_learner() -> None:
    # squad: agents die on a wrong move; 5 slots for 3 agents, so slots 3 and 4 are always padding
    clean, clean_returns = run(None)
    dirty, dirty_returns = run(junk_seed=1)
    assert clean_returns == dirty_returns
    for name in clean:
        assert torch.equal(clean[name], dirty[name]), name


def test_masked_rows_ignored_with_a_recurrent_policy_and_prioritized_segments() -> None:
    clean, _ = run(None, recurrent=True, prio_alpha=0.6, advantage="vtrace")
    dirty, _ = run(junk_seed=2, recurrent=True, prio_alpha=0.6, advantage="vtrace")
    for name in clean:
        assert torch.equal(clean[name], dirty[name]), name


def test_clip_grad_norm_matches_torch() -> None:
    from shoal.train.core.ppo import clip_grad_norm

    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    for params in (a, b):
        (params[0].sum() * 3 + (params[1] ** 2).sum()).backward()
    norm_a = clip_grad_norm(a, 0.5)
    norm_b = torch.nn.utils.clip_grad_norm_(b, 0.5)
    assert torch.allclose(norm_a, norm_b)
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(x.grad, y.grad)


def test_dual_clip_bounds_negative_advantage_losses_and_value_clip() -> None:
    new_lp = torch.log(torch.tensor([10.0, 10.0]))  # ratio 10 against old log-prob 0
    old_lp = torch.zeros(2)
    adv = torch.tensor([-1.0, 1.0])
    zeros = torch.zeros(2)
    kwargs = dict(clip_coef=0.2, vf_coef=0.0, norm_adv=False)
    plain = ppo_loss(new_lp, old_lp, adv, zeros, zeros, zeros, zeros, **kwargs)
    dual = ppo_loss(new_lp, old_lp, adv, zeros, zeros, zeros, zeros, dual_clip=3.0, **kwargs)
    # plain: -(min(-10, -1.2) + min(10, 1.2)) / 2 = (10 - 1.2) / 2; dual clip caps the first term at 3
    assert plain.policy_loss.item() == pytest.approx((10 - 1.2) / 2)
    assert dual.policy_loss.item() == pytest.approx((3 - 1.2) / 2)
    # value clipping keeps the larger of the clipped and unclipped errors
    new_values = torch.tensor([1.0, 0.0])  # already equal to the returns, but 1.0 away from the old values
    returns = new_values.clone()
    out = ppo_loss(
        zeros,
        zeros,
        zeros,
        new_values,
        zeros,
        returns,
        zeros,
        clip_coef=0.2,
        clip_vloss=True,
        vf_clip_coef=0.1,
        norm_adv=False,
    )
    assert out.value_loss.item() == pytest.approx(0.5 * ((1 - 0.1) ** 2) / 2)

"""The PPO loss equals the textbook clipped-surrogate formula (as CleanRL's ppo.py writes it), term by term."""

from __future__ import annotations

import pytest
import torch

from shoal.train.core.ppo import ppo_loss


def _reference(new_logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, new_v: torch.Tensor,
               old_v: torch.Tensor, ret: torch.Tensor, entropy: torch.Tensor, clip: float, vf_clip: float,
               vf_coef: float, ent_coef: float) -> dict[str, torch.Tensor]:
    """The loss of one minibatch written out plainly: normalized advantages, the pessimistic clipped surrogate,
    the clipped value loss, the entropy bonus, and the usual diagnostics."""
    logratio = new_logp - old_logp
    ratio = logratio.exp()
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg_loss = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
    v_unclipped = (new_v - ret) ** 2
    v_clipped = (old_v + torch.clamp(new_v - old_v, -vf_clip, vf_clip) - ret) ** 2
    v_loss = 0.5 * torch.max(v_unclipped, v_clipped).mean()
    ent = entropy.mean()
    return {
        "loss": pg_loss - ent_coef * ent + vf_coef * v_loss,
        "policy_loss": pg_loss,
        "value_loss": v_loss,
        "entropy": ent,
        "approx_kl": ((ratio - 1) - logratio).mean(),
        "old_approx_kl": (-logratio).mean(),
        "clipfrac": ((ratio - 1.0).abs() > clip).float().mean(),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppo_loss_matches_the_clipped_surrogate_formula(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 64
    old_logp = -torch.rand(n, generator=g) * 2
    new_logp = old_logp + torch.randn(n, generator=g) * 0.3  # ratios on both sides of the clip range
    adv = torch.randn(n, generator=g) * 5 + 1
    old_v, ret = torch.randn(n, generator=g) * 10, torch.randn(n, generator=g) * 10
    new_v = old_v + torch.randn(n, generator=g)  # some inside, some outside the value clip range
    entropy = torch.rand(n, generator=g)
    new_logp.requires_grad_(True)
    new_v.requires_grad_(True)
    coefs = dict(clip=0.2, vf_clip=0.2, vf_coef=0.5, ent_coef=0.01)
    expected = _reference(new_logp, old_logp, adv, new_v, old_v, ret, entropy, **coefs)
    got = ppo_loss(new_logp, old_logp, adv, new_v, old_v, ret, entropy, clip_coef=0.2, vf_clip_coef=0.2,
                   vf_coef=0.5, ent_coef=0.01, clip_vloss=True, norm_adv=True)
    for name, value in expected.items():
        torch.testing.assert_close(getattr(got, name), value.detach() if name != "loss" else value, msg=name)
    grads = torch.autograd.grad(got.loss, [new_logp, new_v])
    reference_grads = torch.autograd.grad(expected["loss"], [new_logp, new_v])
    for a, b in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(a, b)
    assert 0.0 < float(got.clipfrac) < 1.0  # the case exercises both sides of the clip


def test_padding_never_changes_the_loss() -> None:
    # valid selects the transitions; whatever the padding holds (NaN included), the loss is the one over the rest
    g = torch.Generator().manual_seed(3)
    n = 32
    tensors = [-torch.rand(n, generator=g), -torch.rand(n, generator=g), torch.randn(n, generator=g),
               torch.randn(n, generator=g), torch.randn(n, generator=g), torch.randn(n, generator=g),
               torch.rand(n, generator=g)]
    valid = torch.rand(n, generator=g) > 0.4
    kwargs = dict(clip_coef=0.2, vf_clip_coef=0.2, vf_coef=0.5, ent_coef=0.01, clip_vloss=True, norm_adv=True)
    clean = ppo_loss(*(t[valid] for t in tensors), **kwargs)
    dirty = [torch.where(valid, t, torch.full_like(t, float("nan"))) for t in tensors]
    padded = ppo_loss(*dirty, valid=valid, **kwargs)
    for name in ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"):
        torch.testing.assert_close(getattr(padded, name), getattr(clean, name), msg=name)

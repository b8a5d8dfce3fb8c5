"""Masked categorical, multi-categorical, Gaussian and hybrid distributions against torch.distributions."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical, Normal

from shoal.policies import DiagGaussian, HybridDistribution, MaskedCategorical, MultiCategorical
from tests.policies.helpers import block_masks, random_masks


def _reference(logits: torch.Tensor, mask: torch.Tensor | None = None) -> Categorical:
    return Categorical(logits=logits if mask is None else logits.masked_fill(~mask, float("-inf")))


def test_categorical_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    logits = torch.randn(64, 7)
    mask = random_masks(64, 7)
    for m in (None, mask):
        dist, ref = MaskedCategorical(logits, m), _reference(logits, m)
        action = dist.sample()
        torch.testing.assert_close(dist.log_prob(action), ref.log_prob(action))
        torch.testing.assert_close(dist.entropy(), ref.entropy())
        torch.testing.assert_close(dist.probs, ref.probs)


def test_masked_actions_have_exactly_zero_probability_and_no_nan() -> None:
    torch.manual_seed(1)
    logits = torch.randn(32, 6, requires_grad=True)
    mask = random_masks(32, 6, seed=1)
    dist = MaskedCategorical(logits, mask)
    assert (dist.probs[~mask] == 0).all()
    assert (dist.probs[mask] > 0).all()
    illegal = (~mask).float().argmax(-1)
    has_illegal = (~mask).any(-1)
    assert (dist.log_prob(illegal)[has_illegal] <= torch.finfo(torch.float32).min / 2).all()
    loss = dist.entropy().sum() + dist.log_prob(dist.sample()).sum()
    loss.backward()
    assert torch.isfinite(dist.entropy()).all()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[~mask] == 0).all()  # no gradient reaches illegal logits


def test_masked_actions_are_never_sampled_and_frequencies_match() -> None:
    torch.manual_seed(2)
    n, samples = 8, 20_000
    logits = torch.randn(n, 6) * 2
    mask = random_masks(n, 6, seed=2)
    dist = MaskedCategorical(logits.repeat(samples, 1), mask.repeat(samples, 1))
    actions = dist.sample().reshape(samples, n)
    legal = mask.gather(1, actions.T)  # [n, samples]
    assert legal.all(), "an illegal action was sampled"
    counts = torch.stack([torch.bincount(actions[:, i], minlength=6) for i in range(n)]).float() / samples
    probs = MaskedCategorical(logits, mask).probs
    assert (counts - probs).abs().max() < 0.015  # ~5 sigma at 20k samples


def test_a_row_without_legal_actions_is_treated_as_all_legal() -> None:
    logits = torch.randn(2, 4)
    mask = torch.tensor([[False] * 4, [True, False, False, False]])
    dist = MaskedCategorical(logits, mask)
    assert torch.isfinite(dist.entropy()).all() and torch.isfinite(dist.logp).all()
    torch.testing.assert_close(dist.probs[0], torch.softmax(logits[0], -1))
    assert dist.sample()[1] == 0


@pytest.mark.parametrize("nvec", [[3, 5, 2], [4, 4, 4]], ids=["ragged", "uniform"])
def test_multi_categorical_matches_independent_categoricals(nvec: list[int]) -> None:
    torch.manual_seed(3)
    logits = torch.randn(50, sum(nvec))
    mask = block_masks(50, nvec, seed=3)
    dist = MultiCategorical(logits, nvec, mask)
    action = dist.sample()
    assert action.shape == (50, len(nvec)) and action.dtype == torch.int64
    refs = [_reference(lg, mk) for lg, mk in zip(logits.split(nvec, -1), mask.split(nvec, -1), strict=True)]
    torch.testing.assert_close(dist.log_prob(action), sum(r.log_prob(a) for r, a in zip(refs, action.T, strict=True)))
    torch.testing.assert_close(dist.entropy(), sum(r.entropy() for r in refs))
    assert dist.logits.shape == logits.shape
    assert (dist.logits[~mask] == torch.finfo(torch.float32).min).all()
    torch.testing.assert_close(dist.logits[mask], logits[mask])


def test_multi_categorical_never_samples_masked_sub_actions() -> None:
    torch.manual_seed(4)
    nvec = [3, 5, 2, 6]
    mask = block_masks(16, nvec, seed=4).repeat(1000, 1)
    dist = MultiCategorical(torch.randn(16, sum(nvec)).repeat(1000, 1), nvec, mask)
    action = dist.sample()
    offsets = torch.tensor([0, 3, 8, 10])
    assert mask.gather(1, action + offsets).all()


def test_gaussian_matches_normal() -> None:
    torch.manual_seed(5)
    mean, std = torch.randn(40, 3), torch.rand(3) + 0.1
    dist, ref = DiagGaussian(mean, std), Normal(mean, std)
    action = dist.sample()
    torch.testing.assert_close(dist.log_prob(action), ref.log_prob(action).sum(-1))
    torch.testing.assert_close(dist.entropy(), ref.entropy().sum(-1))
    assert torch.equal(dist.mode(), mean)


def test_hybrid_adds_both_parts() -> None:
    torch.manual_seed(6)
    nvec = [4, 2]
    logits, mean, std = torch.randn(30, 6), torch.randn(30, 2), torch.rand(30, 2) + 0.2
    mask = block_masks(30, nvec, seed=6)
    dist = HybridDistribution(MultiCategorical(logits, nvec, mask), DiagGaussian(mean, std))
    action = dist.sample()
    assert action.shape == (30, 4) and action.dtype == torch.float32
    assert torch.equal(action[:, :2], action[:, :2].round())
    choices = action[:, :2].long()
    expected = (
        _reference(logits[:, :4], mask[:, :4]).log_prob(choices[:, 0])
        + _reference(logits[:, 4:], mask[:, 4:]).log_prob(choices[:, 1])
        + Normal(mean, std).log_prob(action[:, 2:]).sum(-1)
    )
    torch.testing.assert_close(dist.log_prob(action), expected)
    assert dist.logits.shape == (30, 8)

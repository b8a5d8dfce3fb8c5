"""Advantage estimators: vectorized versions equal the plain-loop references (terminals, truncations)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shoal.train.core.advantage import gae, gae_reference, next_values_from, vtrace_gae, vtrace_gae_reference


def random_rollout(seed: int, n: int = 7, t: int = 33) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    terminals = rng.random((n, t)) < 0.08
    truncations = (rng.random((n, t)) < 0.08) & ~terminals
    truncations[0, -1] = True  # truncated on the last step: bootstraps from the final value, not `bootstrap`
    terminals[1, 3] = truncations[1, 3] = True  # both: a termination wins (no bootstrap)
    return {
        "rewards": rng.normal(size=(n, t)).astype(np.float32),
        "values": rng.normal(size=(n, t)).astype(np.float32),
        "bootstrap": rng.normal(size=n).astype(np.float32),
        "terminals": terminals,
        "truncations": truncations,
        "final_values": rng.normal(size=(n, t)).astype(np.float32),
        "ratios": np.exp(rng.normal(scale=0.5, size=(n, t))).astype(np.float32),
    }


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("gamma", "lam"), [(0.99, 0.95), (0.9, 1.0), (1.0, 0.0)])
def test_gae_equals_reference(seed: int, gamma: float, lam: float) -> None:
    d = random_rollout(seed)
    next_values = next_values_from(
        d["values"], d["bootstrap"], d["terminals"], d["truncations"], d["final_values"]
    )
    fast = gae(
        d["rewards"], d["values"], next_values, d["terminals"] | d["truncations"], gamma=gamma, lam=lam
    )
    ref = gae_reference(
        d["rewards"],
        d["values"],
        d["bootstrap"],
        d["terminals"],
        d["truncations"],
        d["final_values"],
        gamma=gamma,
        lam=lam,
    )
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("rho", "c"), [(1.0, 1.0), (2.0, 0.5), (np.inf, np.inf)])
def test_vtrace_equals_reference(seed: int, rho: float, c: float) -> None:
    d = random_rollout(seed)
    next_values = next_values_from(
        d["values"], d["bootstrap"], d["terminals"], d["truncations"], d["final_values"]
    )
    fast = vtrace_gae(
        d["rewards"],
        d["values"],
        next_values,
        d["terminals"] | d["truncations"],
        d["ratios"],
        gamma=0.99,
        lam=0.95,
        rho_clip=rho,
        c_clip=c,
    )
    ref = vtrace_gae_reference(
        d["rewards"],
        d["values"],
        d["bootstrap"],
        d["terminals"],
        d["truncations"],
        d["final_values"],
        d["ratios"],
        gamma=0.99,
        lam=0.95,
        rho_clip=rho,
        c_clip=c,
    )
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-4)


def test_vtrace_with_unit_ratios_is_gae_and_tensors_keep_their_device() -> None:
    d = random_rollout(11)
    nv = next_values_from(d["values"], d["bootstrap"], d["terminals"], d["truncations"], d["final_values"])
    dones = d["terminals"] | d["truncations"]
    a = gae(
        torch.from_numpy(d["rewards"]),
        torch.from_numpy(d["values"]),
        torch.from_numpy(nv),
        torch.from_numpy(dones),
        gamma=0.97,
        lam=0.9,
    )
    b = vtrace_gae(d["rewards"], d["values"], nv, dones, np.ones_like(d["ratios"]), gamma=0.97, lam=0.9)
    assert isinstance(a, torch.Tensor) and a.dtype == torch.float32 and a.shape == (7, 33)
    np.testing.assert_allclose(a.numpy(), b, rtol=1e-6, atol=1e-6)


def test_truncation_bootstraps_from_the_final_value_and_termination_does_not() -> None:
    rewards = np.array([[1.0, 1.0]], np.float32)
    values = np.zeros((1, 2), np.float32)
    final = np.full((1, 2), 10.0, np.float32)
    truncated = next_values_from(
        values, np.zeros(1), np.zeros((1, 2), bool), np.array([[True, False]]), final
    )
    terminated = next_values_from(
        values, np.zeros(1), np.array([[True, False]]), np.zeros((1, 2), bool), final
    )
    assert truncated[0, 0] == 10.0 and terminated[0, 0] == 0.0
    adv = gae(rewards, values, truncated, np.array([[True, False]]), gamma=0.5, lam=1.0)
    assert adv[0, 0] == pytest.approx(1.0 + 0.5 * 10.0)  # does not look past the episode end


def test_padding_has_zero_advantage_and_does_not_leak() -> None:
    d = random_rollout(3, n=2, t=6)
    valid = np.ones((2, 6), bool)
    valid[0, 4:] = False
    nv = next_values_from(d["values"], d["bootstrap"], d["terminals"], d["truncations"], d["final_values"])
    dones = d["terminals"] | d["truncations"]
    dones[0, 3] = True  # the last valid step bootstraps from next_values
    base = gae(d["rewards"], d["values"], nv, dones | ~valid, gamma=0.99, lam=0.95)
    junk = {k: v.copy() for k, v in d.items()}
    for key in ("rewards", "values"):
        junk[key][~valid] = 0.0
    nv2 = nv.copy()
    nv2[~valid] = 0.0
    padded = gae(junk["rewards"], junk["values"], nv2, dones | ~valid, gamma=0.99, lam=0.95)
    np.testing.assert_array_equal(padded[~valid], 0.0)
    np.testing.assert_allclose(padded[valid], base[valid], rtol=1e-6)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        gae(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((2, 3), bool), gamma=0.9, lam=0.9)

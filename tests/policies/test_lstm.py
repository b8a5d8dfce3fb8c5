"""The recurrent policy: one step at a time during rollouts equals whole sequences during training."""

from __future__ import annotations

import pytest
import torch

from shoal.emulation import compile_layout
from shoal.errors import APIUsageError
from shoal.policies import Policy
from tests.policies.helpers import action_layout, block_masks, sample_rows
from tests.zoo import SPACE_ZOO

T, B = 6, 4


def _policy(kind: str = "multi_discrete", name: str = "nested") -> Policy:
    torch.manual_seed(0)
    return Policy(compile_layout(SPACE_ZOO[name]), action_layout(kind), recurrent=True, hidden_size=32,
                  lstm_size=24, embedding_dim=4)


def _rollout(policy: Policy, obs: torch.Tensor, done: torch.Tensor, state, **kw):
    """Step through ``obs [T, B, flat]`` like a rollout; return per-step outputs stacked and the last state."""
    outs = []
    for t in range(obs.shape[0]):
        step_kw = {key: value[t] for key, value in kw.items()}
        out = policy(obs[t], state, done=done[t], **step_kw)
        state = out.state
        outs.append(out)
    return outs, state


@pytest.mark.parametrize("kind", ["multi_discrete", "hybrid"])
def test_sequence_forward_equals_step_by_step(kind: str) -> None:
    policy = _policy(kind)
    obs = sample_rows(SPACE_ZOO["nested"], T * B).reshape(T, B, -1)
    done = torch.zeros(T, B, dtype=torch.bool)
    done[0, :] = True
    done[2, 1] = done[4, 3] = done[5, 1] = True  # episodes start mid-sequence
    masks = block_masks(T * B, [int(n) for n in policy.action_layout.nvec]).reshape(T, B, -1)
    h0, c0 = (torch.randn(1, B, 24) for _ in range(2))
    with torch.no_grad():
        steps, (h, c) = _rollout(policy, obs, done, (h0, c0), action_masks=masks)
    actions = torch.stack([s.action for s in steps])
    seq = policy(obs, (h0, c0), done=done, action_masks=masks, action=actions)
    assert seq.action.shape == actions.shape and seq.log_prob.shape == (T, B)
    torch.testing.assert_close(seq.log_prob, torch.stack([s.log_prob for s in steps]))
    torch.testing.assert_close(seq.value, torch.stack([s.value for s in steps]))
    torch.testing.assert_close(seq.entropy, torch.stack([s.entropy for s in steps]))
    torch.testing.assert_close(seq.logits, torch.stack([s.logits for s in steps]))
    torch.testing.assert_close(seq.state[0], h)
    torch.testing.assert_close(seq.state[1], c)
    seq.log_prob.sum().backward()  # trains through the whole sequence
    assert policy.lstm.weight_hh_l0.grad.abs().sum() > 0


def test_sequence_without_resets_uses_the_fused_path_and_agrees() -> None:
    policy = _policy()
    obs = sample_rows(SPACE_ZOO["nested"], T * B).reshape(T, B, -1)
    done = torch.zeros(T, B, dtype=torch.bool)
    state = policy.initial_state(B)
    with torch.no_grad():
        steps, _ = _rollout(policy, obs, done, state)
        fused = policy(obs, state, done=done, action=torch.stack([s.action for s in steps]))
        no_done = policy(obs, state, action=fused.action)
    torch.testing.assert_close(fused.logits, torch.stack([s.logits for s in steps]))
    torch.testing.assert_close(no_done.logits, fused.logits)


def test_done_resets_the_state_to_zero() -> None:
    policy = _policy()
    obs = sample_rows(SPACE_ZOO["nested"], 2 * B).reshape(2, B, -1)
    with torch.no_grad():
        warm = policy(obs[0], policy.initial_state(B)).state
        reset = policy(obs[1], warm, done=torch.ones(B, dtype=torch.bool))
        fresh = policy(obs[1], policy.initial_state(B))
        carried = policy(obs[1], warm, done=torch.zeros(B, dtype=torch.bool))
    torch.testing.assert_close(reset.logits, fresh.logits)
    assert not torch.allclose(carried.logits, fresh.logits)


def test_unrolled_lstm_used_under_compile_matches_the_fused_kernel() -> None:
    policy = _policy()
    x = torch.randn(T, B, 32)
    h, c = torch.randn(1, B, 24), torch.randn(1, B, 24)
    keep = (torch.rand(T, B, 1) > 0.3).float()
    out, (h1, c1) = policy.lstm(x, (h, c), keep)
    ref, (h2, c2) = policy.lstm._unrolled(x, h, c, keep)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(h1, h2)
    torch.testing.assert_close(c1, c2)


def test_initial_state_and_shape_errors() -> None:
    policy = _policy()
    h, c = policy.initial_state(B, device="cpu")
    assert h.shape == c.shape == (1, B, 24) and not h.any() and policy.is_recurrent
    obs = sample_rows(SPACE_ZOO["nested"], B)
    with pytest.raises(APIUsageError, match="LSTM state"):
        policy(obs, policy.initial_state(B + 1))
    with pytest.raises(APIUsageError, match="done has shape"):
        policy(obs, done=torch.zeros(B + 1, dtype=torch.bool))
    with pytest.raises(APIUsageError, match="sequence"):
        policy(obs.reshape(1, 1, B, -1))

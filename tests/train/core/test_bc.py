"""The behaviour-cloning loss is the policy's own negative log-likelihood of the recorded actions, for every kind of
action head (masked discrete, Box, hybrid), and its gradient steps raise that likelihood."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from shoal.policies import Policy
from shoal.train.core.bc import bc_loss
from shoal.train.core.transitions import TransitionBatch

OBS = spaces.Box(-1.0, 1.0, (5,), np.float32)
HYBRID = spaces.Dict({"pick": spaces.Discrete(3), "force": spaces.Box(-2.0, 2.0, (2,), np.float32)})


def _batch(policy: Policy, n: int, masks: torch.Tensor | None) -> TransitionBatch:
    obs = torch.rand(n, 5) * 2 - 1
    with torch.no_grad():
        actions = policy(obs, action_masks=masks).action  # legal actions of the policy's own kind
    zeros = torch.zeros(n)
    return TransitionBatch(obs, actions, zeros, zeros, obs, masks, masks, None)


@pytest.mark.parametrize("action_space", [spaces.Discrete(4), spaces.Box(-1.0, 3.0, (2,), np.float32), HYBRID],
                         ids=["discrete_masked", "box", "hybrid"])
def test_bc_loss_is_the_negative_log_likelihood_the_policy_gives(action_space: spaces.Space) -> None:
    torch.manual_seed(0)
    policy = Policy(OBS, action_space, hidden_size=16)
    masks = None
    if isinstance(action_space, spaces.Discrete):
        masks = torch.rand(32, 4) > 0.3
        masks[:, 0] = True
    batch = _batch(policy, 32, masks)
    loss, stats = bc_loss(policy, batch)
    out = policy(batch.obs, action=batch.actions, action_masks=masks)
    torch.testing.assert_close(loss, -out.log_prob.mean())
    torch.testing.assert_close(stats["entropy"], out.entropy.mean())
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        bc_loss(policy, batch)[0].backward()
        optimizer.step()
    assert bc_loss(policy, batch)[0] < loss - 0.3  # the recorded actions became more likely

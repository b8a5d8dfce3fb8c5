"""The IQL update's parts do what the method says: the expectile loss, V leaning towards the best recorded actions,
Q fitting the rewards, and the actor moving towards the actions that beat the state's value (where behaviour
cloning stays at the behaviour's average)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from shoal.errors import APIUsageError
from shoal.policies import Policy
from shoal.train import TrainConfig
from shoal.train.core.bc import bc_loss
from shoal.train.core.iql import IQLCritics, IQLOptimizers, expectile_loss, iql_update
from shoal.train.core.transitions import TransitionBatch

OBS = spaces.Box(0.0, 1.0, (2,), np.float32)
BOX = spaces.Box(-1.0, 1.0, (1,), np.float32)


def test_expectile_loss_weighs_underestimates_by_the_expectile() -> None:
    diff = torch.tensor([2.0, -1.0, 0.5, -3.0])  # target - prediction
    expected = (0.7 * 4.0 + 0.3 * 1.0 + 0.7 * 0.25 + 0.3 * 9.0) / 4
    torch.testing.assert_close(expectile_loss(diff, 0.7), torch.tensor(expected))
    torch.testing.assert_close(expectile_loss(diff, 0.5), diff.pow(2).mean() / 2)


def _one_step_data(n: int, generator: torch.Generator) -> TransitionBatch:
    """One state, uniformly random Box actions in [-1, 1], reward -(a - 0.5)^2, every episode one step long."""
    actions = torch.rand(n, 1, generator=generator) * 2 - 1
    obs = torch.tensor([[1.0, 0.0]]).expand(n, 2).contiguous()
    rewards = -(actions[:, 0] - 0.5).pow(2)
    return TransitionBatch(obs, actions, rewards, torch.ones(n), obs, None, None, None)


def test_on_uniform_actions_iql_acts_near_the_best_one_where_bc_takes_the_average() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    config = TrainConfig(algo="iql", learning_rate=3e-3, hidden_size=32).resolved()
    policy, cloned = Policy(OBS, BOX, hidden_size=32), Policy(OBS, BOX, hidden_size=32)
    critics = IQLCritics(OBS, BOX, hidden_size=32)
    optimizers = IQLOptimizers.for_networks(policy, critics, config)
    bc_optimizer = torch.optim.Adam(cloned.parameters(), lr=3e-3)
    for _ in range(250):
        batch = _one_step_data(256, generator)
        stats = iql_update(policy, critics, optimizers, batch, gamma=0.99, tau=0.05, expectile=0.9, beta=10.0,
                           max_weight=100.0)
        bc_optimizer.zero_grad()
        bc_loss(cloned, batch)[0].backward()
        bc_optimizer.step()
    obs = torch.tensor([[1.0, 0.0]])
    with torch.no_grad():
        iql_action = policy(obs, deterministic=True).action.item()
        bc_action = cloned(obs, deterministic=True).action.item()
        value = policy.value(obs).item()
        q = critics(critics.features(obs.expand(3, 2)), torch.tensor([[-1.0], [0.0], [0.5]])).mean(0)
    assert abs(bc_action) < 0.15  # the behaviour's mean
    assert abs(iql_action - 0.5) < 0.2, iql_action  # the best recorded action
    torch.testing.assert_close(q, torch.tensor([-2.25, -0.25, 0.0]), atol=0.1, rtol=0)  # Q fits the rewards
    # the 0.9-expectile of -(a - 0.5)^2 over uniform a lies well above its mean (-0.58): near the best actions
    assert -0.35 < value < -0.05 and float(stats["q_loss"]) < 0.05


def test_iql_critics_refuse_actions_they_cannot_score() -> None:
    hybrid = spaces.Dict({"pick": spaces.Discrete(2), "force": BOX})
    with pytest.raises(APIUsageError, match="IQL needs Box or Discrete actions; this env's actions are hybrid"):
        IQLCritics(OBS, hybrid)
    with pytest.raises(APIUsageError, match="image leaf"):
        IQLCritics(spaces.Box(0, 255, (32, 32, 3), np.uint8), BOX)


@pytest.mark.parametrize("expectile", [0.5, 0.8])
def test_the_value_regresses_onto_the_smaller_target_twin(expectile: float) -> None:
    """V's regression target is min_i Q'_i(s, a) of the TARGET critics: not the online ones, not the larger twin."""
    torch.manual_seed(0)
    config = TrainConfig(algo="iql", hidden_size=16).resolved()
    policy, critics = Policy(OBS, BOX, hidden_size=16), IQLCritics(OBS, BOX, hidden_size=16)
    optimizers = IQLOptimizers.for_networks(policy, critics, config)
    with torch.no_grad():  # constant twins: target (1, 3), online (10, 20), told apart by the value loss
        for net, (low, high) in ((critics.q_target, (1.0, 3.0)), (critics.q, (10.0, 20.0))):
            net.out.weight.zero_()
            net.out.bias[0].fill_(low)
            net.out.bias[1].fill_(high)
    batch = _one_step_data(64, torch.Generator().manual_seed(1))
    with torch.no_grad():
        value = policy.value(batch.obs)
    stats = iql_update(policy, critics, optimizers, batch, gamma=0.99, tau=0.005, expectile=expectile, beta=3.0,
                       max_weight=100.0)
    for wrong in (3.0, 10.0, 20.0):
        assert not torch.allclose(stats["value_loss"], expectile_loss(wrong - value, expectile))
    torch.testing.assert_close(stats["value_loss"], expectile_loss(1.0 - value, expectile))

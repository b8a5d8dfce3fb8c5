"""sac_update: the critics' targets, the temperature's direction with masked actions, any Box dtype."""

from __future__ import annotations

import copy
import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from shoal.emulation import ActionLayout, compile_layout
from shoal.errors import APIUsageError
from shoal.policies.sac import SACPolicy
from shoal.train.core.replay import ReplayBatch
from shoal.train.core.sac import SACOptimizers, discrete_target_entropy, sac_update

OBS = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)


def _batch(n: int, actions: torch.Tensor, *, terminals: float, discounts: float,
           masks: torch.Tensor | None = None) -> ReplayBatch:
    gen = torch.Generator().manual_seed(0)
    return ReplayBatch(obs=torch.rand(n, 4, generator=gen) * 2 - 1, actions=actions,
                       rewards=torch.rand(n, generator=gen), next_obs=torch.rand(n, 4, generator=gen) * 2 - 1,
                       terminals=torch.full((n,), terminals), discounts=torch.full((n,), discounts),
                       action_masks=masks, next_action_masks=masks, agent_ids=torch.zeros(n, dtype=torch.long))


def _expected_q_loss(policy: SACPolicy, batch: ReplayBatch) -> torch.Tensor:
    with torch.no_grad():
        q = policy.q_values(policy.features(batch.obs), policy.to_unit_range(batch.actions))
        return 0.5 * (q - batch.rewards).pow(2).mean(-1).sum()


def test_a_terminal_or_undiscounted_transition_regresses_the_critics_onto_the_reward_alone() -> None:
    torch.manual_seed(0)
    policy = SACPolicy(compile_layout(OBS), ActionLayout(gym.spaces.Box(-2.0, 2.0, (2,))), hidden_size=16)
    actions = torch.rand(32, 2) * 4 - 2
    for terminals, discounts in ((1.0, 0.99), (0.0, 0.0)):
        fresh = copy.deepcopy(policy)
        batch = _batch(32, actions, terminals=terminals, discounts=discounts)
        expected = _expected_q_loss(fresh, batch)
        stats = sac_update(fresh, SACOptimizers.for_policy(fresh, 1e-3), batch, tau=0.005, target_entropy=None)
        torch.testing.assert_close(stats["q_loss"], expected)
    # with a discount the bootstrapped value enters the target
    fresh = copy.deepcopy(policy)
    batch = _batch(32, actions, terminals=0.0, discounts=0.99)
    stats = sac_update(fresh, SACOptimizers.for_policy(fresh, 1e-3), batch, tau=0.005, target_entropy=None)
    assert not torch.allclose(stats["q_loss"], _expected_q_loss(policy, batch))


def test_targets_move_by_tau_towards_the_critics() -> None:
    torch.manual_seed(1)
    policy = SACPolicy(compile_layout(OBS), ActionLayout(gym.spaces.Discrete(3)), hidden_size=8)
    before = [p.detach().clone() for p in policy.critic_target.parameters()]
    sac_update(policy, SACOptimizers.for_policy(policy, 1e-2), _batch(16, torch.randint(0, 3, (16,)),
               terminals=0.0, discounts=0.9), tau=0.25, target_entropy=None)
    for old, target, critic in zip(before, policy.critic_target.parameters(), policy.critic.parameters(),
                                   strict=True):
        torch.testing.assert_close(target, 0.75 * old + 0.25 * critic.detach())


def test_with_few_legal_actions_a_near_uniform_policy_lowers_the_temperature() -> None:
    # 2 legal actions of 9: the policy's entropy is at most log 2, above the per-state target 0.89 log 2, so the
    # temperature must fall; a target over all 9 actions (0.89 log 9 > log 2) would raise it for ever
    torch.manual_seed(2)
    policy = SACPolicy(compile_layout(OBS), ActionLayout(gym.spaces.Discrete(9)), hidden_size=8)
    with torch.no_grad():
        policy.actor_net[-1].weight.zero_()
        policy.actor_net[-1].bias.zero_()
    masks = torch.zeros(64, 9, dtype=torch.bool)
    masks[:, :2] = True
    torch.testing.assert_close(discrete_target_entropy(masks, 9), torch.full((64,), 0.89 * np.log(2.0)).float())
    before = policy.log_alpha.item()
    sac_update(policy, SACOptimizers.for_policy(policy, 1e-2), _batch(64, torch.randint(0, 2, (64,)),
               terminals=0.0, discounts=0.99, masks=masks), tau=0.005, target_entropy=None)
    assert policy.log_alpha.item() < before


def test_float64_box_actions_update_in_float32() -> None:
    policy = SACPolicy(compile_layout(OBS), ActionLayout(gym.spaces.Box(-2.0, 2.0, (2,), np.float64)),
                       hidden_size=8)
    actions = torch.rand(8, 2, dtype=torch.float64) * 4 - 2
    stats = sac_update(policy, SACOptimizers.for_policy(policy, 1e-3), _batch(8, actions, terminals=0.0,
                                                                                discounts=0.99),
                       tau=0.005, target_entropy=None)
    assert torch.isfinite(stats["q_loss"]) and stats["q_loss"].dtype == torch.float32


def test_centralized_critics_learn_from_the_batchs_critic_inputs_and_a_mismatch_is_refused() -> None:
    torch.manual_seed(2)
    policy = SACPolicy(compile_layout(OBS), ActionLayout(gym.spaces.Box(-1.0, 1.0, (2,))), hidden_size=16,
                       critic_input_size=7)
    actions = torch.rand(32, 2) * 2 - 1
    local = _batch(32, actions, terminals=1.0, discounts=0.99)
    central = dataclasses.replace(local, critic_obs=torch.randn(32, 7), next_critic_obs=torch.randn(32, 7))
    with torch.no_grad():  # a terminal transition: the critics regress onto the reward from the critic inputs
        q = policy.q_values(central.critic_obs, policy.to_unit_range(actions))
        expected = 0.5 * (q - central.rewards).pow(2).mean(-1).sum()
    stats = sac_update(policy, SACOptimizers.for_policy(policy, 1e-3), central, tau=0.005, target_entropy=None)
    torch.testing.assert_close(stats["q_loss"], expected)
    with pytest.raises(APIUsageError, match="critic_input_size"):
        sac_update(policy, SACOptimizers.for_policy(policy, 1e-3), local, tau=0.005, target_entropy=None)

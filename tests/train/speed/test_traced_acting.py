"""The traced acting pass: the same actions, log-probs, values and LSTM states as the eager call, on every call."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from shoal.emulation import ActionLayout, compile_layout
from shoal.policies import Policy
from shoal.policies.sac import SACPolicy
from shoal.train.acting import RowActor
from shoal.train.speed.traced_acting import Actor

OBS = gym.spaces.Box(-1.0, 1.0, (6,))


@pytest.mark.parametrize("recurrent, masks, ids, critic", [(False, False, False, False), (True, True, True, False),
                                                          (False, True, True, True), (True, True, True, True),
                                                          (False, True, True, "residual")])
def test_traced_acting_equals_eager_on_every_call(recurrent: bool, masks: bool, ids: bool, critic: bool | str) -> None:
    # critic: MAPPO's centralized critic input (critic_obs) is a traced input too ("residual": MAPPO's default critic)
    torch.manual_seed(0)
    policy = Policy(compile_layout(OBS), ActionLayout(gym.spaces.Discrete(3)), hidden_size=16, recurrent=recurrent,
                    lstm_size=8, num_agent_ids=4 if ids else 0, critic_input_size=10 if critic else None,
                    critic_local_size=4 if critic == "residual" else None)
    if critic == "residual":
        with torch.no_grad():  # away from the zero start, so the values read the global columns too
            policy.critic.output.weight.normal_()
    traced, eager = Actor(policy, trace=True), Actor(policy, trace=False)
    gen = torch.Generator().manual_seed(1)
    n = 12
    state = policy.initial_state(n, "cpu") if recurrent else None
    for step in range(4):  # the first call checks the trace; the later ones replay it on new data
        obs = torch.rand(n, 6, generator=gen) * 2 - 1
        done = torch.rand(n, generator=gen) < 0.3 if recurrent else None
        action_masks = None
        if masks:
            action_masks = torch.rand(n, 3, generator=gen) > 0.4
            action_masks[:, step % 3] = True  # at least one legal action per row
        agent_ids = torch.randint(0, 4, (n,), generator=gen) if ids else None
        critic_obs = torch.randn(n, 10, generator=gen) if critic else None
        rng = torch.get_rng_state()
        expected = eager(obs, state, done, action_masks, agent_ids, critic_obs)
        after_eager = torch.get_rng_state()
        torch.set_rng_state(rng)
        got = traced(obs, state, done, action_masks, agent_ids, critic_obs)
        assert torch.equal(torch.get_rng_state(), after_eager)  # the same random numbers drawn
        for a, b in zip(got[:3], expected[:3], strict=True):
            assert torch.equal(a, b)
        if recurrent:
            assert torch.equal(got[3][0], expected[3][0]) and torch.equal(got[3][1], expected[3][1])
            state = got[3]
    assert traced.num_traces == 1 and eager.num_traces == 0  # the trace was used, not an eager fallback
    if critic:  # the values come from the centralized critic's input
        assert not torch.equal(traced(obs, None, None, action_masks, agent_ids, critic_obs + 1.0)[2], got[2])


def test_row_actor_acts_with_a_centralized_critic_input_through_one_trace() -> None:
    torch.manual_seed(3)
    policy = Policy(compile_layout(OBS), ActionLayout(gym.spaces.Discrete(3)), hidden_size=16, num_agent_ids=2,
                    critic_input_size=5)
    actor = RowActor(policy, 6, 2, "cpu", continuous=False, trace=True)
    rows = np.arange(6)
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        obs = (torch.rand(6, 6, generator=gen) * 2 - 1).numpy()
        critic_obs = torch.randn(6, 5, generator=gen)
        acted = actor.act(obs, rows, critic_obs=critic_obs)
        with torch.no_grad():
            expected = policy.value(None, critic_obs=critic_obs, agent_ids=torch.from_numpy(rows % 2))
        np.testing.assert_array_equal(acted.values, expected.numpy())
    assert actor.forward.num_traces == 1


def test_row_actor_keeps_each_rows_lstm_state_whatever_the_order_of_rows() -> None:
    torch.manual_seed(0)
    policy = Policy(compile_layout(OBS), ActionLayout(gym.spaces.Discrete(3)), hidden_size=8, recurrent=True,
                    lstm_size=8)
    in_order, permuted = (RowActor(policy, 3, 1, "cpu", continuous=False, deterministic=True) for _ in range(2))
    obs = torch.rand(3, 6).numpy()
    starts = np.ones(3, bool)
    rows = np.arange(3)
    for _ in range(2):
        in_order.act(obs, rows, starts=starts)
        permuted.act(obs[[2, 0, 1]], rows[[2, 0, 1]], starts=starts[[2, 0, 1]])
        starts = np.zeros(3, bool)
    assert in_order.state is not None and permuted.state is not None
    for a, b in zip(in_order.state, permuted.state, strict=True):  # (batch order may change the last bits)
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("action_space", [gym.spaces.Box(-2.0, 2.0, (2,)), gym.spaces.Discrete(3)])
def test_a_policy_without_a_value_head_is_traced_and_still_returns_no_value(action_space: gym.Space) -> None:
    torch.manual_seed(0)
    policy = SACPolicy(compile_layout(OBS), ActionLayout(action_space), hidden_size=16)
    traced, eager = Actor(policy, trace=True), Actor(policy, trace=False)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        obs = torch.rand(5, 6, generator=gen) * 2 - 1
        rng = torch.get_rng_state()
        expected = eager(obs)
        torch.set_rng_state(rng)
        got = traced(obs)
        assert got[2] is None and expected[2] is None
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert traced.num_traces == 1

"""The traced acting pass: the same actions, log-probs, values and LSTM states as the eager call, on every call."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from shoal.emulation import ActionLayout, compile_layout
from shoal.policies import Policy
from shoal.train.speed.traced_acting import Actor

OBS = gym.spaces.Box(-1.0, 1.0, (6,))


@pytest.mark.parametrize("recurrent, masks, ids", [(False, False, False), (True, True, True)])
def test_traced_acting_equals_eager_on_every_call(recurrent: bool, masks: bool, ids: bool) -> None:
    torch.manual_seed(0)
    policy = Policy(compile_layout(OBS), ActionLayout(gym.spaces.Discrete(3)), hidden_size=16, recurrent=recurrent,
                    lstm_size=8, num_agent_ids=4 if ids else 0)
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
        rng = torch.get_rng_state()
        expected = eager(obs, state, done, action_masks, agent_ids)
        after_eager = torch.get_rng_state()
        torch.set_rng_state(rng)
        got = traced(obs, state, done, action_masks, agent_ids)
        assert torch.equal(torch.get_rng_state(), after_eager)  # the same random numbers drawn
        for a, b in zip(got[:3], expected[:3], strict=True):
            assert torch.equal(a, b)
        if recurrent:
            assert torch.equal(got[3][0], expected[3][0]) and torch.equal(got[3][1], expected[3][1])
            state = got[3]
    assert traced.num_traces == 1 and eager.num_traces == 0  # the trace was used, not an eager fallback

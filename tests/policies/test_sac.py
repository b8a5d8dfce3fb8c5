"""SACPolicy: actions inside the bounds, legal discrete actions, the twin critics, and ONNX export of the actor."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from pettingzoo.classic import tictactoe_v3

import shoal
from shoal.policies import export_onnx, run_onnx
from shoal.policies.sac import SACPolicy
from shoal.train import evaluate


def test_the_deterministic_action_is_the_squashed_mean_inside_the_bounds() -> None:
    space = gym.make("Pendulum-v1").action_space
    with shoal.vector.make(lambda: gym.make("Pendulum-v1"), 3) as vec:
        policy = SACPolicy.from_env(vec, hidden_size=8)
        obs, _ = vec.reset(seed=0)
    with torch.no_grad():
        mean = policy(torch.from_numpy(obs), deterministic=True)
        sampled = policy(torch.from_numpy(obs).repeat(200, 1))
    assert mean.action.shape == (3, 1) and mean.value is None
    torch.testing.assert_close(mean.action, mean.logits)
    actions = sampled.action.numpy()
    assert (actions >= space.low).all() and (actions <= space.high).all() and actions.std() > 0.1
    assert evaluate(policy, lambda: gym.make("Pendulum-v1"), 2)["episodes"] == 2


def test_discrete_actions_are_legal_and_the_critics_give_one_value_per_action() -> None:
    with shoal.vector.make(tictactoe_v3.env, 2) as vec:
        policy = SACPolicy.from_env(vec, hidden_size=16)
        obs, _ = vec.reset(seed=0)
        masks = torch.from_numpy(vec.action_masks)
    obs_t = torch.from_numpy(obs)
    with torch.no_grad():
        for _ in range(20):
            out = policy(obs_t, action_masks=masks)
            assert masks[torch.arange(len(obs_t)), out.action].all()
        features = policy.features(obs_t)
        assert policy.q_values(features).shape == (2, len(obs_t), 9)
        assert torch.equal(policy.q_values(features, target=True), policy.q_values(features))  # targets start equal


def test_the_exported_actor_gives_the_deterministic_action(tmp_path) -> None:
    with shoal.vector.make(lambda: gym.make("Pendulum-v1"), 2) as vec:
        policy = SACPolicy.from_env(vec, hidden_size=8)
        obs, _ = vec.reset(seed=0)
    path = export_onnx(policy, tmp_path / "sac.onnx")
    (exported,) = run_onnx(path, {"obs": obs})
    with torch.no_grad():
        expected = policy(torch.from_numpy(obs), deterministic=True).action.numpy()
    np.testing.assert_allclose(exported, expected, rtol=1e-5, atol=1e-5)


def test_save_policy_and_load_policy_round_trip_a_sac_policy(tmp_path) -> None:
    from shoal.policies import load_policy, save_policy

    with shoal.vector.make(lambda: gym.make("Pendulum-v1"), 1) as vec:
        policy = SACPolicy.from_env(vec, hidden_size=8)
        path = save_policy(policy, tmp_path / "sac.pt")
        loaded = load_policy(path, vec)
        obs, _ = vec.reset(seed=0)
    assert isinstance(loaded, SACPolicy)
    with torch.no_grad():
        torch.testing.assert_close(loaded(torch.from_numpy(obs), deterministic=True).action,
                                   policy(torch.from_numpy(obs), deterministic=True).action)


def test_centralized_critics_read_their_own_input_width_and_the_policy_round_trips(tmp_path) -> None:
    from mpe2 import simple_spread_v3

    from shoal.policies import load_policy, save_policy

    def env_fn() -> object:
        return simple_spread_v3.parallel_env(N=3, max_cycles=5, continuous_actions=True)

    with shoal.vector.make(env_fn, 2) as vec:
        policy = SACPolicy.from_env(vec, hidden_size=8, num_agent_ids=3, critic_input_size=40)
        loaded = load_policy(save_policy(policy, tmp_path / "central.pt"), vec)
        obs, _ = vec.reset(seed=0)
    assert isinstance(loaded, SACPolicy) and loaded.critic_input_size == 40
    central = torch.randn(6, 40)
    actions = torch.rand(6, 5) * 2 - 1
    with torch.no_grad():
        q = policy.q_values(central, actions)
        assert q.shape == (2, 6)
        torch.testing.assert_close(loaded.q_values(central, actions), q)
        # the actor is unchanged: its own observation and slot id
        ids = torch.arange(6) % 3
        assert policy(torch.from_numpy(obs), agent_ids=ids, deterministic=True).action.shape == (6, 5)
    assert policy.critic.layers[0].weight.shape[1] == 40 + 5  # the input row plus the slot's own action

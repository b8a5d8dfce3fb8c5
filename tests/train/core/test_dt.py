"""The Decision Transformer's windows and loss, and a model trained on mixed CartPole episodes that follows the
return it is asked for."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
import torch

from shoal import vector
from shoal.datasets import OfflineDataset
from shoal.policies.decision_transformer import DecisionTransformer
from shoal.train import evaluate
from shoal.train.core.dt import WindowSampler, conditioning_defaults, dt_loss, dt_update
from tests.train.offline.recorded import mixed_cartpole

#: CartPole with the time limit of the recorded episodes
CARTPOLE = functools.partial(gym.make, "CartPole-v1", max_episode_steps=200)


@pytest.fixture(scope="module")
def mixed() -> OfflineDataset:
    """Balancing (return 200), noisy (about 30-120), toppling (about 9) and random (about 20) episodes."""
    return mixed_cartpole()


def test_windows_end_at_a_step_and_are_left_padded_at_their_episode_start(mixed: OfflineDataset) -> None:
    k = 4
    sampler = WindowSampler(mixed, k)
    ends = torch.arange(mixed.num_steps)
    w = sampler.windows(ends)
    rtg = mixed.returns_to_go()
    episode = mixed.episode_of_step
    for end in [0, 1, 2, 3, 4, 250, int(mixed.episode_offsets[7]) + 1, mixed.num_steps - 1]:
        first = mixed.episode_offsets[episode[end]]
        real = np.arange(max(first, end - k + 1), end + 1)
        pad = k - len(real)
        assert w.valid[end].tolist() == [False] * pad + [True] * len(real)
        assert w.timesteps[end, pad:].tolist() == (real - first).tolist()
        assert w.actions[end, pad:].tolist() == mixed.actions[real].tolist()
        assert w.returns_to_go[end, pad:].tolist() == rtg[real].tolist()
        assert np.array_equal(w.obs[end, pad:].numpy(), mixed.observations[real + episode[end]])
    # every step is a window's last step once; the last return-to-go of an episode is its last reward
    assert w.valid[:, -1].all() and w.valid.sum() == sum(min(n - t, k) for n in mixed.episode_lengths
                                                           for t in range(n))
    last = mixed.episode_offsets[1:] - 1
    assert w.returns_to_go[last, -1].tolist() == mixed.rewards[last].tolist()
    sampled = sampler.sample(64, torch.Generator().manual_seed(0))
    assert sampled.obs.shape == (64, k, 4) and sampled.action_masks is None


def test_the_loss_reads_only_real_steps(mixed: OfflineDataset) -> None:
    torch.manual_seed(0)
    model = DecisionTransformer(mixed.obs_layout, mixed.action_layout, context_length=4, embed_dim=16,
                                num_layers=1, dropout=0.0, hidden_size=16, return_scale=200.0)
    windows = WindowSampler(mixed, 4).windows(torch.tensor([0, 1, 2, 100, 101]))
    loss, stats = dt_loss(model, windows)
    padded = ~windows.valid
    junk = windows._replace(obs=torch.where(padded[..., None], windows.obs + 5, windows.obs),
                            actions=torch.where(padded, 1 - windows.actions, windows.actions),
                            returns_to_go=torch.where(padded, 999.0, windows.returns_to_go))
    torch.testing.assert_close(dt_loss(model, junk)[0], loss, rtol=0, atol=1e-6)
    logits = model(windows.obs, windows.actions, windows.returns_to_go, windows.timesteps, windows.valid)
    expected = torch.nn.functional.cross_entropy(logits[windows.valid], windows.actions[windows.valid])
    torch.testing.assert_close(loss, expected)
    assert 0 <= stats["accuracy"] <= 1


def test_box_actions_are_fitted_in_unit_range() -> None:
    env = gym.make("Pendulum-v1")
    with vector.make(lambda: gym.make("Pendulum-v1"), 1) as vec:
        layouts = vec.obs_layout, vec.action_layout
    rng = np.random.default_rng(0)
    steps = 30
    data = OfflineDataset(
        observations=rng.normal(size=(steps + 2, 3)).astype(np.float32),
        actions=rng.uniform(-2, 2, (steps, 1)).astype(np.float32), rewards=rng.normal(size=steps).astype(np.float32),
        terminations=np.zeros(steps, bool), truncations=np.arange(steps) % 15 == 14,
        episode_offsets=np.array([0, 15, 30]), obs_layout=layouts[0], action_layout=layouts[1])
    torch.manual_seed(0)
    model = DecisionTransformer(*layouts, context_length=5, embed_dim=16, num_layers=1, dropout=0.0,
                                hidden_size=16)
    windows = WindowSampler(data, 5).windows(torch.arange(steps))
    loss, _ = dt_loss(model, windows)
    predicted = model(windows.obs, windows.actions, windows.returns_to_go, windows.timesteps, windows.valid)
    target = windows.actions / 2.0  # Pendulum's torque is in [-2, 2]
    torch.testing.assert_close(loss, (predicted - target).pow(2)[windows.valid].mean())
    env.close()


def test_conditioning_defaults_are_the_best_and_largest_returns(mixed: OfflineDataset) -> None:
    assert conditioning_defaults(mixed) == (200.0, 200.0)


def test_a_trained_transformer_follows_the_target_return_and_beats_random(mixed: OfflineDataset) -> None:
    target, scale = conditioning_defaults(mixed)
    torch.manual_seed(0)
    model = DecisionTransformer(mixed.obs_layout, mixed.action_layout, context_length=5, embed_dim=32,
                                num_layers=1, dropout=0.0, hidden_size=32, max_timestep=256,
                                return_scale=scale, target_return=target)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sampler, generator = WindowSampler(mixed, 5), torch.Generator().manual_seed(0)
    for _ in range(250):
        stats = dt_update(model, optimizer, sampler.sample(64, generator), max_grad_norm=1.0)
    assert stats["accuracy"] > 0.75
    low = evaluate(model, CARTPOLE, 8, seed=1, target_return=10.0)["mean_return"]
    high = evaluate(model, CARTPOLE, 8, seed=1)["mean_return"]  # the model's default: the best return, 200
    random_policy = np.mean(mixed.episode_returns()[-6:])
    assert high > 150 > 3 * random_policy and low < 30, (low, high)

"""Running observation normalization (``obs_norm``): exact statistics over any split of the data, applied to float
Box leaves only, saved with the policy, and folded in by a PPO update only after its minibatches."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces

from shoal.errors import APIUsageError, NonFiniteError
from shoal.policies import Policy
from shoal.policies.obs_stats import RunningObsStats
from shoal.train import TrainConfig
from shoal.train.core.ppo import eager_loss, make_optimizer, ppo_update
from tests.policies.helpers import sample_rows
from tests.train.rollouts import rollout_tensors

MIXED = spaces.Dict({
    "pos": spaces.Box(-np.inf, np.inf, (3,), np.float32),  # unbounded float: normalized
    "vel": spaces.Box(-0.07, 0.07, (2,), np.float64),  # bounded float: normalized
    "count": spaces.Box(0, 1000, (1,), np.int32),  # integer: keeps its affine scaling
    "flag": spaces.MultiBinary(2),
    "mode": spaces.Discrete(3),
})


def test_merged_batches_give_the_mean_and_variance_of_all_their_rows() -> None:
    rng = np.random.default_rng(0)
    rows = rng.normal([5.0, -3.0, 0.0], [2.0, 0.01, 100.0], size=(301, 3))
    stats = RunningObsStats(3)
    for part in np.split(rows, [1, 7, 200]):  # uneven batches, one of a single row
        stats.merge(stats.moments(torch.from_numpy(part)))
    assert int(stats.count) == 301
    np.testing.assert_allclose(stats.mean.numpy(), rows.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.var.numpy(), rows.var(0), rtol=1e-10)
    before = stats.state_dict()
    stats.merge(stats.moments(torch.zeros(0, 3)))  # an empty batch changes nothing
    assert all(torch.equal(before[k], v) for k, v in stats.state_dict().items())
    x = torch.from_numpy(rows[:4]).float()
    expected = ((rows[:4] - rows.mean(0)) / np.sqrt(rows.var(0) + 1e-8)).clip(-10, 10)
    np.testing.assert_allclose(stats(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert stats(torch.tensor([[1e6, 1e6, -1e6]])).tolist() == [[10.0, 10.0, -10.0]]  # clipped


def test_only_float_box_leaves_are_normalized_and_the_statistics_travel_with_the_policy() -> None:
    torch.manual_seed(0)
    policy = Policy(MIXED, spaces.Discrete(4), obs_norm=True)
    encoders = dict(zip([leaf.name for leaf in policy.obs_layout.leaves], policy.encoder.leaf_encoders, strict=True))
    modes = {name: getattr(enc, "mode", "embedding") for name, enc in encoders.items()}
    assert modes == {"pos": "running", "vel": "running", "count": "affine", "flag": "none", "mode": "embedding"}
    assert policy.config["obs_norm"] is True
    assert "obs_norm" not in Policy(MIXED, spaces.Discrete(4)).config  # saved only when set
    assert Policy(MIXED, spaces.Discrete(4)).observation_moments(sample_rows(MIXED, 4)).numel() == 0

    rows = sample_rows(MIXED, 64, seed=1)
    policy.update_observation_stats(policy.observation_moments(rows))
    pos = encoders["pos"].obs_stats
    assert pos is not None and int(pos.count) == 64
    index = list(encoders).index("pos")
    values = policy.encoder.reader.read(rows)[index].double()  # the rows' "pos" leaf, [64, 3]
    torch.testing.assert_close(pos.mean, values.mean(0))
    torch.testing.assert_close(pos.var, values.var(0, unbiased=False))
    critic = policy.critic_encoder.leaf_encoders[index].obs_stats
    assert torch.equal(critic.mean, pos.mean) and torch.equal(critic.var, pos.var)  # the separate critic's too

    rebuilt = Policy(MIXED, spaces.Discrete(4), **policy.config)
    rebuilt.load_state_dict(policy.state_dict())  # the statistics are persistent buffers
    assert torch.equal(rebuilt.encoder.leaf_encoders[index].obs_stats.var, pos.var)
    obs = sample_rows(MIXED, 8, seed=2)
    assert torch.equal(rebuilt(obs, action=torch.zeros(8, dtype=torch.long)).log_prob,
                       policy(obs, action=torch.zeros(8, dtype=torch.long)).log_prob)
    fresh = Policy(MIXED, spaces.Discrete(4), obs_norm=True)
    fresh.load_state_dict(policy.state_dict())
    assert not torch.equal(fresh(obs).value, Policy(MIXED, spaces.Discrete(4), obs_norm=True)(obs).value)


def test_a_ppo_update_folds_in_the_valid_observations_after_its_minibatches() -> None:
    """The minibatches see the statistics the rollout was acted with (the first minibatch's ratios are exactly 1);
    afterwards the statistics hold every row seen so far, padding excluded."""
    obs_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    torch.manual_seed(0)
    policy = Policy(obs_space, spaces.Discrete(2), obs_norm=True, hidden_size=16)
    gen = torch.Generator().manual_seed(0)
    earlier = torch.randn(50, 3, generator=gen) * 4.0 + 1.0
    policy.update_observation_stats(policy.observation_moments(earlier))  # statistics of a previous rollout
    s, h = 4, 8
    obs = torch.randn(s, h, 3, generator=gen) * torch.tensor([1.0, 50.0, 0.01]) + torch.tensor([3.0, 0.0, -1.0])
    valid = torch.ones(s, h, dtype=torch.bool)
    valid[0, 5:] = False
    obs[0, 5:] = 1e4  # padding: its values must not reach the statistics
    with torch.no_grad():
        out = policy(obs.reshape(-1, 3))
    data = rollout_tensors(obs=obs, actions=out.action.reshape(s, h), log_probs=out.log_prob.reshape(s, h),
                           values=out.value.reshape(s, h), rewards=torch.randn(s, h, generator=gen),
                           next_values=torch.zeros(s, h), dones=torch.zeros(s, h, dtype=torch.bool), valid=valid)
    ratios: list[torch.Tensor] = []

    def recording_loss(p: torch.nn.Module, minibatch: Any, coefficients: dict[str, Any]) -> Any:
        loss = eager_loss(p, minibatch, coefficients)
        ratios.append(loss.ratio.detach())
        return loss

    cfg = TrainConfig(update_epochs=2, minibatch_size=8, learning_rate=1e-2).resolved()
    ppo_update(policy, make_optimizer(policy, cfg), data, cfg, torch.Generator().manual_seed(0),
               loss_fn=recording_loss)
    torch.testing.assert_close(ratios[0], torch.ones_like(ratios[0]), rtol=0, atol=1e-6)
    seen = torch.cat([earlier, obs[valid]]).double()
    got = policy.encoder.leaf_encoders[0].obs_stats
    assert int(got.count) == 50 + int(valid.sum())
    torch.testing.assert_close(got.mean, seen.mean(0))
    torch.testing.assert_close(got.var, seen.var(0, unbiased=False))


def test_obs_norm_is_refused_where_it_cannot_apply() -> None:
    from shoal.train import Trainer, train
    from tests.train.offline.recorded import cartpole_expert, record

    with pytest.raises(APIUsageError, match=r"obs_norm.*algo='sac'"):
        TrainConfig(env="Pendulum-v1", algo="sac", obs_norm=True).validate()
    with pytest.raises(APIUsageError, match=r"normalizes no observation leaf.*connect_four.*drop --obs-norm"):
        Trainer(TrainConfig(env="pettingzoo.classic.connect_four_v3", obs_norm=True, total_steps=64))
    # MountainCar's preset turns it on: a policy of one's own without it is told how to turn it off
    plain = Policy(spaces.Box(-2.0, 2.0, (2,), np.float32), spaces.Discrete(3))
    with pytest.raises(APIUsageError, match=r"preset for MountainCar-v0 turns it on.*--no-obs-norm"):
        Trainer(TrainConfig(env="MountainCar-v0", total_steps=64), policy=plain)
    # behaviour cloning never updates running statistics: a policy that normalizes by them is refused
    normalizing = Policy(spaces.Box(-np.inf, np.inf, (4,), np.float32), spaces.Discrete(2), obs_norm=True)
    with pytest.raises(APIUsageError, match=r"algo='bc' never updates"):
        train(TrainConfig(env="CartPole-v1", algo="bc", total_steps=10, horizon=10, num_envs=1),
              policy=normalizing, dataset=record("CartPole-v1", cartpole_expert, 1))


def test_bad_moments_change_nothing_and_say_why() -> None:
    policy = Policy(MIXED, spaces.Discrete(4), obs_norm=True)
    rows = sample_rows(MIXED, 16, seed=3)
    policy.update_observation_stats(policy.observation_moments(rows))
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    moments = policy.observation_moments(rows)
    poisoned = moments.clone()
    poisoned[-1] = float("inf")  # the last leaf's: the leaves before it must not take theirs either
    with pytest.raises(NonFiniteError, match=r"obs_norm.*NaN or infinity"):
        policy.update_observation_stats(poisoned)
    with pytest.raises(APIUsageError, match=f"have {moments.numel() - 1} values.*take {moments.numel()}"):
        policy.update_observation_stats(moments[:-1])
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())


def test_the_statistics_keep_float64_through_casts_and_moments_add_up_over_blocks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from shoal.policies import obs_stats

    stats = RunningObsStats(3)
    rows = torch.randn(70_000, 3, dtype=torch.float64) * 1e3 + 5.0
    stats.merge(stats.moments(rows))
    stats.half()  # a float16 count would overflow (70,000 > 65,504)
    stats.float()
    assert {b.dtype for b in stats.buffers()} == {torch.float64} and int(stats.count) == 70_000
    torch.testing.assert_close(stats.mean, rows.mean(0), rtol=0, atol=1e-9)
    monkeypatch.setattr(obs_stats, "_CHUNK_ELEMENTS", 3 * 1000)  # blocks of 1,000 rows
    torch.testing.assert_close(stats.moments(rows), torch.cat([torch.tensor([70_000.0], dtype=torch.float64),
                                                               rows.sum(0), (rows * rows).sum(0)]))


@pytest.mark.parametrize(("kwargs", "name"), [({"size": 0}, "size"), ({"size": 2, "clip": 0.0}, "clip"),
                                              ({"size": 2, "epsilon": float("nan")}, "epsilon")])
def test_bad_statistics_arguments_are_named(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(APIUsageError, match=f"RunningObsStats {name} must be"):
        RunningObsStats(**kwargs)

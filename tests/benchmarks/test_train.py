"""benchmarks/train.py: the CleanRL-style timing loop is the reference script's own loop on shoal's network."""

from __future__ import annotations

import pytest

from benchmarks import train as train_benchmark
from shoal.train import TrainConfig


def test_the_cleanrl_style_loop_trains_whole_rollouts_of_the_config() -> None:
    cfg = TrainConfig(env="CartPole-v1", num_envs=4, horizon=64, minibatch_size=64, seed=3).resolved(agents_per_env=1)
    result = train_benchmark.cleanrl_ppo(cfg, 1024)
    assert result["steps"] == 1024 and result["sps"] > 0
    assert 8 <= result["train_return"] <= 500  # CartPole returns are episode lengths
    # the same seed trains the same way: the loop is seeded as the reference seeds it
    assert train_benchmark.cleanrl_ppo(cfg, 1024)["train_return"] == result["train_return"]


def test_configs_the_reference_loop_would_train_differently_are_refused() -> None:
    base = dict(env="CartPole-v1", num_envs=4, horizon=64, seed=3)
    with pytest.raises(SystemExit, match="vf_clip_coef"):
        train_benchmark.cleanrl_ppo(TrainConfig(**base, minibatch_size=64, vf_clip_coef=10.0).resolved(1), 256)
    with pytest.raises(SystemExit, match="does not divide"):
        train_benchmark.cleanrl_ppo(TrainConfig(**base, minibatch_size=100).resolved(1), 256)

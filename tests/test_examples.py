"""examples/ppo_single_file.py learns CartPole like the Trainer does with the same settings and seed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from shoal.train import TrainConfig, train

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ppo_single_file.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ppo_single_file", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def test_single_file_ppo_learns_like_the_trainer() -> None:
    example = _load_example()
    args = example.Args(total_timesteps=30_000, seed=1)
    _, returns = example.train(args)
    theirs = float(np.mean(returns[-20:]))
    result = train(TrainConfig(env="CartPole-v1", total_steps=30_000, seed=1, num_envs=args.num_envs,
                               horizon=args.num_steps, learning_rate=args.learning_rate,
                               update_epochs=args.update_epochs, minibatch_size=args.num_envs * args.num_steps // 4,
                               hidden_size=args.hidden_size, log_interval=60, tensorboard=False))
    ours = float(result.episode_return)
    # a random CartPole policy scores about 22; both learn to several times that in 30k steps
    assert theirs > 90 and ours > 90, (theirs, ours)
    assert 0.4 < theirs / ours < 2.5, (theirs, ours)

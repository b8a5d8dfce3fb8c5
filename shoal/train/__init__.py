"""Training (torch): PPO for single-agent and parameter-shared multi-agent envs.

    from shoal.train import TrainConfig, train
    result = train(TrainConfig(env="CartPole-v1", total_steps=150_000, run_dir="runs/cartpole"))
    result.evaluation, result.checkpoint

Modules: :mod:`~shoal.train.config` (the typed config), :mod:`~shoal.train.buffer` (segments x horizon per
slot), :mod:`~shoal.train.advantage` (GAE, V-trace-clipped GAE), :mod:`~shoal.train.ppo` (loss and update),
:mod:`~shoal.train.trainer` (the loop), :mod:`~shoal.train.checkpoint`, :mod:`~shoal.train.logger`,
:mod:`~shoal.train.resolve` (ENV names -> constructors), :mod:`~shoal.train.evaluate`,
:mod:`~shoal.train.plot`, :mod:`~shoal.train.mappo` (centralized critic, ``algo="mappo"``),
:mod:`~shoal.train.normalize` (value normalization), :mod:`~shoal.train.agent_stats` (per-agent/team returns).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from shoal.train.advantage import gae, next_values_from, vtrace_gae
from shoal.train.buffer import RolloutBuffer, RolloutData
from shoal.train.config import TrainConfig
from shoal.train.evaluate import evaluate, evaluate_checkpoint, load_policy_from_checkpoint
from shoal.train.mappo import MAPPOTrainer, mappo_config
from shoal.train.ppo import ppo_loss, ppo_update
from shoal.train.resolve import EnvFn, list_envs, resolve_env
from shoal.train.trainer import Trainer, TrainResult, train

__all__ = [
    # entry point
    "train",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "MAPPOTrainer",
    "mappo_config",
    # envs
    "EnvFn",
    "list_envs",
    "resolve_env",
    # evaluation
    "evaluate",
    "evaluate_checkpoint",
    "load_policy_from_checkpoint",
    # building blocks
    "RolloutBuffer",
    "RolloutData",
    "gae",
    "next_values_from",
    "ppo_loss",
    "ppo_update",
    "vtrace_gae",
]


class _CallableModule(types.ModuleType):
    """``shoal.train`` is both this package and the function :func:`shoal.train`: once the package is imported
    it shadows the function's attribute on ``shoal``, so the package itself is made callable as ``train``."""

    def __call__(self, *args: Any, **kwargs: Any) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

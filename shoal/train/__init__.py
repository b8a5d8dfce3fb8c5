"""Training (torch): PPO for single-agent and parameter-shared multi-agent envs, MAPPO, SAC, and offline behaviour
cloning and IQL from recorded datasets.

    from shoal.train import TrainConfig, train
    result = train(TrainConfig(env="CartPole-v1", total_steps=150_000, run_dir="runs/cartpole"))
    result.evaluation, result.checkpoint

Modules: :mod:`~shoal.train.config` (the typed config), :mod:`~shoal.train.core.rollout` (segments x horizon per
slot), :mod:`~shoal.train.core.advantage` (GAE, V-trace-clipped GAE), :mod:`~shoal.train.core.ppo` (loss and update),
:mod:`~shoal.train.loop.trainer` (the loop), :mod:`~shoal.train.runs.checkpoint`, :mod:`~shoal.train.runs.logger`,
:mod:`~shoal.train.runs.resolve` (ENV names -> constructors), :mod:`~shoal.train.runs.evaluate`,
:mod:`~shoal.train.runs.plot`, :mod:`~shoal.train.mappo.trainer` (centralized critic, ``algo="mappo"``),
:mod:`~shoal.train.core.normalize` (value normalization), :mod:`~shoal.train.runs.agent_stats` (per-agent/team returns),
:mod:`~shoal.train.record` (offline datasets recorded from runs and scripted players);
:mod:`~shoal.train.offline.trainer` (``algo="bc"``, ``"iql"``: gradient steps on a dataset).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from shoal.train.api import make_trainer, train
from shoal.train.config import TrainConfig
from shoal.train.core.advantage import gae, next_values_from, vtrace_gae
from shoal.train.core.ppo import ppo_loss, ppo_update
from shoal.train.core.rollout import RolloutBuffer, RolloutData
from shoal.train.loop.result import TrainResult
from shoal.train.loop.trainer import Trainer
from shoal.train.mappo.trainer import MAPPOTrainer
from shoal.train.record import record_dataset
from shoal.train.runs.evaluate import evaluate, evaluate_checkpoint, load_policy_from_checkpoint
from shoal.train.runs.resolve import EnvFn, list_envs, resolve_env

__all__ = [
    # entry point
    "train",
    "make_trainer",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "MAPPOTrainer",
    # envs
    "EnvFn",
    "list_envs",
    "resolve_env",
    # evaluation
    "evaluate",
    "evaluate_checkpoint",
    "load_policy_from_checkpoint",
    # offline datasets
    "record_dataset",
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

"""The composition root of :mod:`shoal.train`: which trainer a config asks for, and the one entry point.

    from shoal.train import TrainConfig, train
    result = train(TrainConfig(env="CartPole-v1", total_steps=150_000, run_dir="runs/cartpole"))

Everything below this module is assembled here and nowhere else: the algorithm's trainer (PPO, or MAPPO's for a
centralized critic or value normalization), made one of several data-parallel learners under ``torchrun``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from shoal.errors import APIUsageError
from shoal.train.config import TrainConfig
from shoal.train.loop.distributed_trainer import distributed_class
from shoal.train.loop.result import TrainResult
from shoal.train.loop.trainer import Trainer
from shoal.train.mappo.trainer import MAPPOTrainer, resolve_value_norm
from shoal.train.runs.logger import LogRecord
from shoal.train.speed.distributed import is_distributed

__all__ = ["make_trainer", "train", "trainer_class"]

Callback = Callable[[LogRecord], None]


def trainer_class(config: TrainConfig) -> type[Trainer]:
    """The trainer for ``config``: :class:`MAPPOTrainer` for MAPPO or value normalization, else :class:`Trainer`."""
    if config.algo == "mappo" or resolve_value_norm(config) != "none":
        return MAPPOTrainer
    return Trainer


def make_trainer(
    config: TrainConfig,
    env_fn: Callable[[], Any] | None = None,
    policy: nn.Module | None = None,
    callbacks: Sequence[Callback] = (),
) -> Trainer:
    """The trainer for ``config`` (:func:`trainer_class`), as one of several data-parallel learners
    (:class:`~shoal.train.loop.distributed_trainer.DistributedTrainer`) under ``torchrun`` with ``WORLD_SIZE > 1`` or in
    such a process group."""
    resolved = config.resolved()  # the trainer resolves ``config`` itself: MAPPO sees which fields were left unset
    cls = trainer_class(resolved)
    if is_distributed():
        if resolved.async_learner:
            raise APIUsageError("async_learner=True runs one learner process; it cannot be combined with several "
                                "data-parallel learners (torchrun): drop --async-learner")
        cls = distributed_class(cls)
    return cls(config, env_fn=env_fn, policy=policy, callbacks=callbacks)


def train(
    config: TrainConfig | None = None,
    env_fn: Callable[[], Any] | None = None,
    policy: nn.Module | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    **overrides: Any,
) -> TrainResult:
    """Train a policy; the one entry point of :mod:`shoal.train`.

    Args:
        config: the configuration (default :class:`TrainConfig`); ``overrides`` replace fields of it, e.g.
            ``train(env="memory", recurrent=True)``.
        env_fn: a callable returning a Gymnasium or PettingZoo env (default: resolved from ``config.env``).
        policy: the policy to train (default: built from the env and the config).
        callbacks: called with each :class:`~shoal.train.runs.logger.LogRecord`.

    Returns:
        A :class:`TrainResult` with the trained policy, final statistics and the last checkpoint.
    """
    config = config if config is not None else TrainConfig()
    if overrides:
        config = config.replace(**overrides)
    return make_trainer(config, env_fn=env_fn, policy=policy, callbacks=callbacks).train()

"""The composition root of :mod:`shoal.train`: which trainer a config asks for, and the one entry point.

    from shoal.train import TrainConfig, train
    result = train(TrainConfig(env="CartPole-v1", total_steps=150_000, run_dir="runs/cartpole"))

Everything below this module is assembled here and nowhere else: the algorithm's trainer (PPO, MAPPO's for a
centralized critic or value normalization, SAC's for off-policy learning, BC's and IQL's for learning from a recorded
dataset), made one of several data-parallel learners under ``torchrun`` (the online algorithms but SAC).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from shoal.datasets import OfflineDataset
from shoal.errors import APIUsageError
from shoal.train.config import OFFLINE_ALGOS, TrainConfig
from shoal.train.loop.distributed_trainer import distributed_class
from shoal.train.loop.result import TrainResult
from shoal.train.loop.trainer import Trainer
from shoal.train.mappo.trainer import MAPPOTrainer, resolve_value_norm
from shoal.train.offline.bc import BCTrainer
from shoal.train.offline.dt import DTTrainer
from shoal.train.offline.iql import IQLTrainer
from shoal.train.offline.trainer import OfflineTrainer
from shoal.train.runs.logger import LogRecord
from shoal.train.runs.resolve import resolve_env
from shoal.train.sac.trainer import SACTrainer
from shoal.train.speed.distributed import is_distributed
from shoal.wrappers import WrappedEnvFn

__all__ = ["make_trainer", "train", "trainer_class"]

Callback = Callable[[LogRecord], None]


def trainer_class(config: TrainConfig) -> type[Trainer]:
    """The trainer for ``config``: :class:`SACTrainer` for SAC, :class:`BCTrainer`, :class:`IQLTrainer` and
    :class:`DTTrainer` for the offline algorithms, :class:`MAPPOTrainer` for MAPPO or value normalization, else
    :class:`Trainer` (PPO)."""
    if config.algo == "sac":
        return SACTrainer
    if config.algo == "bc":
        return BCTrainer
    if config.algo == "iql":
        return IQLTrainer
    if config.algo == "dt":
        return DTTrainer
    if config.algo == "mappo" or resolve_value_norm(config) != "none":
        return MAPPOTrainer
    return Trainer


def make_trainer(
    config: TrainConfig,
    env_fn: Callable[[], Any] | None = None,
    policy: nn.Module | None = None,
    callbacks: Sequence[Callback] = (),
    dataset: OfflineDataset | None = None,
) -> Trainer:
    """The trainer for ``config`` (:func:`trainer_class`), as one of several data-parallel learners
    (:class:`~shoal.train.loop.distributed_trainer.DistributedTrainer`) under ``torchrun`` with ``WORLD_SIZE > 1`` or in
    such a process group. ``config.wrappers`` wrap the env: the one ``config.env`` names, or ``env_fn``'s.
    ``dataset``: the recorded data of an offline algorithm (else it reads the file ``config.dataset``)."""
    resolved = config.resolved()  # the trainer resolves ``config`` itself: MAPPO sees which fields were left unset
    if env_fn is None:
        env_fn = resolve_env(resolved.env, resolved.env_kwargs, wrappers=resolved.wrappers)
    elif resolved.wrappers:
        env_fn = WrappedEnvFn(env_fn, resolved.wrappers)
    cls = trainer_class(resolved)
    offline = issubclass(cls, OfflineTrainer)
    if dataset is not None and not offline:
        raise APIUsageError(f"dataset= is read by the offline algorithms {list(OFFLINE_ALGOS)} only; "
                            f"algo={resolved.algo!r} collects its own experience")
    if is_distributed():
        if resolved.algo == "sac" or offline:
            raise APIUsageError(f"algo={resolved.algo!r} runs one learner; several data-parallel learners (torchrun) "
                                "are not supported for it: run it as one process")
        if resolved.record_dataset is not None:
            raise APIUsageError("record_dataset records one learner's rollouts; several data-parallel learners "
                                "(torchrun) would each write it: run one process, or drop --record-dataset")
        if resolved.async_learner:
            raise APIUsageError("async_learner=True runs one learner process; it cannot be combined with several "
                                "data-parallel learners (torchrun): drop --async-learner")
        cls = distributed_class(cls)
    if offline:
        return cls(config, env_fn=env_fn, policy=policy, callbacks=callbacks, dataset=dataset)
    return cls(config, env_fn=env_fn, policy=policy, callbacks=callbacks)


def train(
    config: TrainConfig | None = None,
    env_fn: Callable[[], Any] | None = None,
    policy: nn.Module | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    dataset: OfflineDataset | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a policy; the one entry point of :mod:`shoal.train`.

    Args:
        config: the configuration (default :class:`TrainConfig`); ``overrides`` replace fields of it, e.g.
            ``train(env="memory", recurrent=True)``.
        env_fn: a callable returning a Gymnasium or PettingZoo env (default: resolved from ``config.env``).
        policy: the policy to train (default: built from the env and the config).
        callbacks: called with each :class:`~shoal.train.runs.logger.LogRecord`.
        dataset: offline algorithms (``algo="bc"``, ``"iql"``, ``"dt"``): the :class:`~shoal.datasets.OfflineDataset`
            to learn from (else the file ``config.dataset`` is read).

    Returns:
        A :class:`TrainResult` with the trained policy, final statistics and the last checkpoint.
    """
    config = config if config is not None else TrainConfig()
    if overrides:
        config = config.replace(**overrides)
    return make_trainer(config, env_fn=env_fn, policy=policy, callbacks=callbacks, dataset=dataset).train()

"""One learner among several data-parallel learners (``torchrun``): the trainer's side of
:mod:`shoal.train.speed.distributed` (see there for seeds, logging and checkpoints)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from shoal.errors import APIUsageError, CheckpointError
from shoal.train.config import TrainConfig
from shoal.train.loop.trainer import Callback, Trainer
from shoal.train.runs.checkpoint import checkpoint_path, load_checkpoint
from shoal.train.runs.logger import RunLogger
from shoal.train.speed.distributed import (
    ProcessGroupReducer,
    all_gather,
    broadcast,
    broadcast_parameters,
    env_seed,
    init_distributed,
    learner_device,
    raise_if_any_failed,
    rank_seed,
    torchrun_env,
)

__all__ = ["DistributedTrainer", "distributed_class"]

log = logging.getLogger(__name__)


def _fresh_rng(seed: int) -> dict[str, Any]:
    """RNG states seeded from ``seed``, in the layout of a checkpoint's ``rng`` entry."""
    return {
        "torch": torch.Generator().manual_seed(seed).get_state(),
        "cuda": None,
        "numpy": np.random.RandomState(seed % 2**32).get_state(),
        "python": random.Random(seed).getstate(),
        "generator": torch.Generator().manual_seed(seed + 1).get_state(),
    }


class DistributedTrainer(Trainer):
    """A :class:`~shoal.train.loop.trainer.Trainer` for one of several data-parallel learners (see the module docs).

    Joins the process group (from ``torchrun``'s environment) unless one exists, agrees with the other learners
    on the config (rank 0's ``run_dir`` wins, as its default holds a time stamp; any other difference is an
    error), builds its own vector env seeded from :func:`env_seed`, and starts from rank 0's weights.

    Args:
        config, env_fn, policy: as for :class:`Trainer` (the same on every learner).
        callbacks: run on rank 0 only.
        timeout: seconds a collective waits for the other learners when this call creates the group.
    """

    #: Writing a checkpoint is collective: learners interrupted at different points would wait for each other.
    saves_on_interrupt = False

    def __init__(
        self,
        config: TrainConfig,
        env_fn: Callable[[], Any] | None = None,
        policy: nn.Module | None = None,
        callbacks: Sequence[Callback] = (),
        *,
        timeout: float | None = None,
    ) -> None:
        given = config  # passed on unresolved: a subclass tells the fields its caller left unset from the defaults
        config = config.resolved()
        if getattr(config, "league", False):
            raise APIUsageError("self-play leagues are not supported with several learners yet; train the league "
                                "with one learner (it can still use --backend multiprocessing or ray)")
        info = torchrun_env()
        local_rank = info.local_rank if info is not None else 0
        self.dist = init_distributed(learner_device(config.device, local_rank), timeout)
        self.rank = self.dist.rank
        self.world_size = self.dist.world_size
        configs = all_gather(config.to_dict())
        differing = sorted({k for other in configs for k, v in other.items() if k != "run_dir" and
                            v != configs[0][k]})
        if differing:
            raise APIUsageError(f"the learners were started with different settings of {differing}; give every "
                                "rank the same command line")
        config = given.replace(run_dir=configs[0]["run_dir"])
        error: BaseException | None = None
        try:
            super().__init__(config, env_fn=env_fn, policy=policy, callbacks=callbacks if self.is_main else ())
        except BaseException as exc:  # every learner must learn of it, or the others wait for ever
            error = exc
        raise_if_any_failed(error, "to set up its trainer")
        if self.rank:  # own action sampling and shuffling (rank 0 keeps the plain run's streams)
            seed = rank_seed(self.config.seed, self.rank)
            self._seed_everything(seed)
            self.generator.manual_seed(seed + 1)
        self._resume_from = broadcast(self._resume_from)
        self._synced_episodes = 0
        broadcast_parameters(self.policy)  # rank 0's initial weights everywhere (value normalizers start empty)
        self.reducer = ProcessGroupReducer(self.device)

    @property
    def is_main(self) -> bool:
        """Rank 0: writes the run directory and runs the callbacks."""
        return self.rank == 0

    @property
    def env_seed(self) -> int:
        """Seed of this learner's env 0: :func:`env_seed` of the config's seed, the rank and ``num_envs``."""
        return env_seed(self.config.seed, self.rank, self.config.num_envs)

    # ---- learning ------------------------------------------------------------------------------------------

    def _steps_done(self, transitions: int) -> int:
        """Every learner's transitions of this update; finished episodes are shared too."""
        return self._gather_progress(transitions)

    def _gather_progress(self, transitions: int) -> int:
        """Share this update's transitions and finished episodes; returns the transitions of every learner.

        Afterwards every learner holds the same episode statistics: the last ``stats_window`` episodes of the
        whole run (in rank order within an update) and the total count.
        """
        new = self.episodes - self._synced_episodes
        keep = min(new, len(self.episode_returns))
        returns = [self.episode_returns.pop() for _ in range(keep)][::-1]
        lengths = [self.episode_lengths.pop() for _ in range(keep)][::-1]
        reports = all_gather((transitions, new, returns, lengths))
        for _, _, rank_returns, rank_lengths in reports:
            self.episode_returns.extend(rank_returns)
            self.episode_lengths.extend(rank_lengths)
        self.episodes = self._synced_episodes + sum(report[1] for report in reports)
        self._synced_episodes = self.episodes
        return sum(report[0] for report in reports)

    # ---- run directory, checkpoints ------------------------------------------------------------------------

    def _open_run_dir(self) -> None:
        error: BaseException | None = None
        if self.is_main:
            try:
                super()._open_run_dir()
            except BaseException as exc:
                error = exc
        else:
            self.logger = RunLogger([])  # rank 0 logs for the run
        raise_if_any_failed(error, "to open the run directory")

    def checkpoint_payload(self) -> dict[str, Any]:
        """Collective: the run's payload (model and optimizer once) with every rank's own part under
        ``"distributed"`` (on rank 0; the other ranks get only their part)."""
        payload = super().checkpoint_payload()
        part = {key: payload[key] for key in ("rng", "trainer", "env_state")}
        parts: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(part, parts, dst=0)
        payload["distributed"] = {"world_size": self.world_size, "ranks": parts,
                                  "env_seeds": [env_seed(self.config.seed, r, self.config.num_envs)
                                                for r in range(self.world_size)]}
        return payload

    def save(self) -> Path | None:
        """Collective: rank 0 writes the checkpoint of the current update; every rank returns its path."""
        if self.run_dir is None:
            return None
        error: BaseException | None = None
        try:
            if self.is_main:
                super().save()
            else:
                self.checkpoint_payload()  # this rank's part, gathered by rank 0
        except BaseException as exc:
            error = exc
        raise_if_any_failed(error, "to write a checkpoint")
        self.last_checkpoint = checkpoint_path(self.run_dir, self.update)
        return self.last_checkpoint

    def _load_payload(self, path: Path) -> dict[str, Any]:
        """Rank 0 reads the checkpoint and broadcasts it; each rank takes its own part of it."""
        payload: dict[str, Any] | str | None = None
        if self.is_main:
            try:
                payload = load_checkpoint(path, map_location="cpu")
            except CheckpointError as exc:
                payload = str(exc)
        payload = broadcast(payload)
        if isinstance(payload, str):
            raise CheckpointError(payload)
        assert payload is not None
        part = payload.get("distributed") or {}
        ranks = part.get("ranks")
        if ranks is not None and len(ranks) == self.world_size:
            payload.update(ranks[self.rank])
        elif self.rank:
            log.warning("resume from %s: it was written by %s learner(s), now there are %d; learner %d restarts "
                        "its envs from a fresh reset", path, part.get("world_size", 1), self.world_size, self.rank)
            payload["rng"] = _fresh_rng(rank_seed(self.config.seed, self.rank) + int(payload["update"]))
            payload["trainer"] = {**payload["trainer"], "carry": None, "rnn_state": None}
            payload["env_state"] = None
        return payload

    def restore(self, path: Path) -> None:
        """Continue from ``path`` (collective: rank 0 reads it); see :meth:`Trainer.restore`."""
        super().restore(path)
        self._synced_episodes = self.episodes


def distributed_class(base: type[Trainer]) -> type[DistributedTrainer]:
    """:class:`DistributedTrainer` on top of ``base`` (a :class:`Trainer` subclass, e.g. MAPPO's trainer)."""
    if issubclass(base, DistributedTrainer):
        return base
    if base is Trainer:
        return DistributedTrainer
    return type(f"Distributed{base.__name__}", (DistributedTrainer, base), {"__module__": __name__})

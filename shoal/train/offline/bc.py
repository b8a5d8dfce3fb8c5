"""Behaviour cloning on the offline loop (``algo="bc"``).

    result = shoal.train.train(TrainConfig(env="CartPole-v1", algo="bc", total_steps=5_000), dataset=dataset)

The default :class:`~shoal.policies.Policy` learns to give the recorded actions the highest likelihood
(:func:`~shoal.train.core.bc.bc_loss`): discrete actions (with their legal-action masks), Box actions, MultiDiscrete
and hybrid ones. It clones whatever behaviour recorded the data, good or bad: for mixed-quality data see IQL, or
filter it: with ``bc_min_return`` only the episodes whose return reaches that threshold are cloned
(return-filtered BC, e.g. the games a player won).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from torch import Tensor

from shoal.errors import DatasetError
from shoal.train.core.bc import bc_loss
from shoal.train.core.transitions import TransitionBatch, TransitionSampler
from shoal.train.offline.trainer import OfflineTrainer

__all__ = ["BCTrainer"]

log = logging.getLogger(__name__)


class BCTrainer(OfflineTrainer):
    """Behaviour cloning (see the module docstring); arguments as :class:`OfflineTrainer`'s."""

    algos = ("bc",)
    loss_names = ("policy_loss", "entropy")

    def kept_steps(self) -> np.ndarray | None:
        """int64 ``[S]``: the steps cloned under ``bc_min_return`` (those of the episodes whose return reaches it),
        or None (every step).

        Raises:
            DatasetError: no episode reaches ``bc_min_return``.
        """
        threshold = self.config.bc_min_return
        if threshold is None:
            return None
        returns = self.dataset.episode_returns()
        kept = returns >= threshold
        if not kept.any():
            raise DatasetError(f"{self.dataset_source}: no episode has a return of at least bc_min_return="
                               f"{threshold} (the best is {returns.max():.3f}); lower --bc-min-return or drop it")
        steps = np.flatnonzero(kept[self.dataset.episode_of_step])
        log.info("bc_min_return=%s: cloning %d of %d episodes (%d of %d steps)", threshold, int(kept.sum()),
                 len(kept), len(steps), self.dataset.num_steps)
        return steps

    def make_sampler(self) -> Any:
        return TransitionSampler(self.dataset, self.device, rewards=self._scaled_rewards(self.dataset.rewards),
                                 agent_ids=bool(self.num_agent_ids), steps=self.kept_steps())

    def setup_algorithm(self) -> None:
        self._require_policy("the action head")
        super().setup_algorithm()

    def gradient_step(self, batch: TransitionBatch) -> dict[str, Tensor]:
        loss, stats = bc_loss(self.policy, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return stats

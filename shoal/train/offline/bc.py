"""Behaviour cloning on the offline loop (``algo="bc"``).

    result = shoal.train.train(TrainConfig(env="CartPole-v1", algo="bc", total_steps=5_000), dataset=dataset)

The default :class:`~shoal.policies.Policy` learns to give the recorded actions the highest likelihood
(:func:`~shoal.train.core.bc.bc_loss`): discrete actions (with their legal-action masks), Box actions, MultiDiscrete
and hybrid ones. It clones whatever behaviour recorded the data, good or bad: for mixed-quality data see IQL.
"""

from __future__ import annotations

from torch import Tensor

from shoal.train.core.bc import bc_loss
from shoal.train.core.transitions import TransitionBatch
from shoal.train.offline.trainer import OfflineTrainer

__all__ = ["BCTrainer"]


class BCTrainer(OfflineTrainer):
    """Behaviour cloning (see the module docstring); arguments as :class:`OfflineTrainer`'s."""

    algos = ("bc",)
    loss_names = ("policy_loss", "entropy")

    def setup_algorithm(self) -> None:
        self._require_policy("the action head")
        super().setup_algorithm()

    def gradient_step(self, batch: TransitionBatch) -> dict[str, Tensor]:
        loss, stats = bc_loss(self.policy, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return stats

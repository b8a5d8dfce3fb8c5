"""Implicit Q-learning on the offline loop (``algo="iql"``; the update is :mod:`shoal.train.core.iql`).

    result = shoal.train.train(TrainConfig(env="Pendulum-v1", algo="iql", total_steps=20_000), dataset=dataset)

The default :class:`~shoal.policies.Policy` is the actor (its action head) and the state value ``V`` (its separate
critic); the twin Q networks and their targets (:class:`~shoal.train.core.iql.IQLCritics`) are saved in every
checkpoint beside them, so a resumed run continues exactly. Box and Discrete actions (with legal-action masks);
MultiDiscrete and hybrid actions and image observations are refused with what to use instead (``--algo bc``).
Hyperparameters: ``expectile``, ``iql_beta``, ``iql_max_weight``, ``tau``, ``gamma`` (:class:`TrainConfig`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from shoal.errors import APIUsageError
from shoal.train.core.iql import IQLCritics, IQLOptimizers, iql_update
from shoal.train.core.transitions import TransitionBatch
from shoal.train.offline.trainer import OfflineTrainer

__all__ = ["IQLTrainer"]


class IQLTrainer(OfflineTrainer):
    """Implicit Q-learning (see the module docstring); arguments as :class:`OfflineTrainer`'s."""

    algos = ("iql",)
    loss_names = ("policy_loss", "value_loss", "q_loss", "entropy", "q_mean")

    def _default_policy(self, policy_cls: Any, **extra: Any) -> Any:
        # V lives on the separate critic, which board policies (sharing their CNN by default) would lack
        return super()._default_policy(policy_cls, **{"separate_critic": True, **extra})

    def setup_algorithm(self) -> None:
        cfg = self.config
        policy = self._require_policy("the actor and state value")
        if not policy.separate_critic:
            raise APIUsageError("IQL trains the state value on the policy's separate critic, but this policy shares "
                                "its trunk between actor and critic; build it with Policy.from_env(vecenv, "
                                "separate_critic=True) or leave policy=None")
        self.critics = IQLCritics(self.vecenv.obs_layout, self.vecenv.action_layout, hidden_size=cfg.hidden_size,
                                  num_agent_ids=self.num_agent_ids).to(self.device)
        self.optimizer = IQLOptimizers.for_networks(policy, self.critics, cfg)

    def gradient_step(self, batch: TransitionBatch) -> dict[str, Tensor]:
        cfg = self.config
        return iql_update(self.policy, self.critics, self.optimizer, batch, gamma=cfg.gamma, tau=cfg.tau,
                          expectile=cfg.expectile, beta=cfg.iql_beta, max_weight=cfg.iql_max_weight)

    def checkpoint_payload(self) -> dict[str, Any]:
        payload = super().checkpoint_payload()
        payload["iql"] = {"critics": self.critics.state_dict()}
        return payload

    def _restore_algorithm(self, payload: dict[str, Any]) -> None:
        super()._restore_algorithm(payload)
        self.critics.load_state_dict(payload["iql"]["critics"])

"""The Decision Transformer on the offline loop (``algo="dt"``).

    result = shoal.train.train(TrainConfig(env="CartPole-v1", algo="dt", total_steps=3_000), dataset=dataset)

A :class:`~shoal.policies.decision_transformer.DecisionTransformer` learns to predict each recorded action from the
``context_length`` steps up to it and their returns-to-go (:func:`~shoal.train.core.dt.dt_loss` on windows of
:class:`~shoal.train.core.dt.WindowSampler`; ``minibatch_size`` windows per gradient step, AdamW). Acting, it goes
for a target return: ``target_return`` (``--target-return``), else the dataset's best episode return; the model
keeps that value, so ``shoal eval`` uses it unless given another. Returns-to-go are divided by ``return_scale``
(default: the dataset's largest absolute episode return). ``hidden_size`` is the width of the tokens and of the
observation encoder; ``dt_layers`` and ``dt_heads`` shape the transformer; timesteps past the dataset's longest
episode share its last timestep embedding.

The online evaluations (every ``eval_interval`` updates) and the evaluation after training act through
:class:`~shoal.train.acting.RowActor`, which keeps each row's last ``context_length`` steps.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn, optim

from shoal.errors import APIUsageError
from shoal.policies.decision_transformer import DecisionTransformer
from shoal.train.core.dt import Windows, WindowSampler, conditioning_defaults, dt_update
from shoal.train.offline.trainer import OfflineTrainer

__all__ = ["DTTrainer"]


class DTTrainer(OfflineTrainer):
    """The Decision Transformer (see the module docstring); arguments as :class:`OfflineTrainer`'s."""

    algos = ("dt",)
    trains_sequences = True
    loss_names = ("action_loss", "accuracy", "grad_norm")

    def _default_policy(self, policy_cls: Any, **extra: Any) -> nn.Module:
        cfg = self.config
        best, scale = conditioning_defaults(self.dataset)
        return DecisionTransformer.from_env(
            self.vecenv, context_length=cfg.context_length, embed_dim=cfg.hidden_size, num_layers=cfg.dt_layers,
            num_heads=cfg.dt_heads, hidden_size=cfg.hidden_size,
            max_timestep=int(self.dataset.episode_lengths.max()),
            return_scale=cfg.return_scale if cfg.return_scale is not None else scale,
            target_return=cfg.target_return if cfg.target_return is not None else best,
        )

    def make_sampler(self) -> WindowSampler:
        """Windows of the policy's context length (the first part of the setup to need the policy: it is checked
        here)."""
        if not isinstance(self.policy, DecisionTransformer):
            raise APIUsageError(f"algo='dt' trains a shoal.policies.decision_transformer.DecisionTransformer, got "
                                f"{type(self.policy).__name__}; leave policy=None or build it with "
                                "DecisionTransformer.from_env(vecenv)")
        return WindowSampler(self.dataset, self.policy.context_length, self.device)

    def setup_algorithm(self) -> None:
        cfg = self.config
        self.optimizer = optim.AdamW(self.policy.parameters(), lr=cfg.learning_rate, eps=cfg.adam_eps,
                                     weight_decay=1e-4)

    def describe(self) -> list[str]:
        policy, cfg = self.policy, self.config
        if not isinstance(policy, DecisionTransformer):
            return super().describe()
        target = "none: give --target-return to evaluate" if policy.target_return is None else (
            f"{policy.target_return:g} ({'--target-return' if cfg.target_return is not None else 'the best episode'})")
        return [*super().describe(), f"decision transformer: {policy.context_length} steps of context, target return "
                f"{target}, returns-to-go divided by {policy.return_scale:g}"]

    def gradient_step(self, batch: Windows) -> dict[str, Tensor]:
        return dt_update(self.policy, self.optimizer, batch, self.config.max_grad_norm)

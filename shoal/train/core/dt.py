"""The Decision Transformer's data and loss: windows of ``K`` steps cut from the episodes of an offline dataset.

A window ends at a step drawn uniformly from every step of the dataset and holds that step and up to ``K - 1``
steps before it in the same episode. Near an episode's start there are fewer: the window is left-padded
(``valid`` False), as acting sees it while its context fills (:class:`~shoal.policies.decision_transformer.
TokenContext`). Every real step of a window is a prediction target.

    sampler = WindowSampler(dataset, context_length=20)
    stats = dt_update(model, optimizer, sampler.sample(64, generator))
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shoal.datasets import OfflineDataset
from shoal.errors import APIUsageError
from shoal.policies.decision_transformer import DecisionTransformer
from shoal.policies.distributions import masked_logits

__all__ = ["WindowSampler", "Windows", "conditioning_defaults", "dt_loss", "dt_update"]


class Windows(NamedTuple):
    """``B`` windows of ``K`` steps; padded steps hold copies of the episode's first step and ``valid`` False.

    Attributes:
        obs: flat observation rows ``[B, K, flat_size]`` (the layout's flat dtype).
        actions: int64 ``[B, K]`` (Discrete) or float32 ``[B, K, A]`` (Box, the space's units).
        returns_to_go: float32 ``[B, K]``: undiscounted rewards from the step to its episode's end.
        timesteps: int64 ``[B, K]``: the step's index in its episode.
        valid: bool ``[B, K]``: real steps.
        action_masks: bool ``[B, K, n]`` legal actions, or None.
    """

    obs: Tensor
    actions: Tensor
    returns_to_go: Tensor
    timesteps: Tensor
    valid: Tensor
    action_masks: Tensor | None


class WindowSampler:
    """Cuts :class:`Windows` from ``dataset``; its arrays are copied to ``device`` once.

    Args:
        dataset: the episodes.
        context_length: ``K``.
        device: where the windows are built.

    Raises:
        APIUsageError: ``context_length < 1``.
    """

    def __init__(self, dataset: OfflineDataset, context_length: int, device: torch.device | str = "cpu") -> None:
        if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1:
            raise APIUsageError(f"context_length must be a positive int, got {context_length!r}")
        self.dataset = dataset
        self.context_length = context_length
        self.device = torch.device(device)

        def put(array: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

        self.obs = put(dataset.observations)
        self.actions = put(dataset.actions)
        self.returns_to_go = put(dataset.returns_to_go())
        self.obs_index = put(dataset.obs_index)
        starts = dataset.episode_offsets[:-1]
        self.episode_start = put(np.repeat(starts, dataset.episode_lengths))
        self.action_masks = None if dataset.action_masks is None else put(dataset.action_masks)

    @property
    def num_steps(self) -> int:
        return self.dataset.num_steps

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Windows:
        """``batch_size`` windows ending at steps drawn uniformly (with replacement) by ``generator``."""
        ends = torch.randint(self.num_steps, (batch_size,), generator=generator).to(self.device)
        return self.windows(ends)

    def windows(self, ends: Tensor) -> Windows:
        """The windows ending at the dataset steps ``ends`` (int64 ``[B]``)."""
        k = self.context_length
        steps = ends[:, None] - (k - 1) + torch.arange(k, device=self.device)[None, :]  # [B, K]
        start = self.episode_start[ends][:, None]
        valid = steps >= start
        steps = torch.maximum(steps, start)  # padding repeats the first step: finite inputs, never attended
        obs_rows = self.obs_index[steps]
        masks = None if self.action_masks is None else self.action_masks[obs_rows]
        return Windows(self.obs[obs_rows], self.actions[steps], self.returns_to_go[steps], steps - start, valid,
                       masks)


def dt_loss(model: DecisionTransformer, windows: Windows) -> tuple[Tensor, dict[str, Tensor]]:
    """The action-prediction loss over the real steps of ``windows``: cross-entropy of the (legal-masked) logits
    (Discrete) or the mean squared error in ``[-1, 1]`` units (Box).

    Returns:
        ``(loss, stats)``: a scalar tensor, and detached ``{"action_loss", "accuracy"}`` (Discrete) or
        ``{"action_loss"}`` (Box).
    """
    prediction = model(windows.obs, windows.actions, windows.returns_to_go, windows.timesteps, windows.valid)
    valid = windows.valid
    if model.kind == "discrete":
        logits = masked_logits(prediction, windows.action_masks)[valid]
        target = windows.actions[valid].long()
        loss = F.cross_entropy(logits, target)
        accuracy = (logits.argmax(-1) == target).float().mean()
        return loss, {"action_loss": loss.detach(), "accuracy": accuracy.detach()}
    target = model.to_unit_range(windows.actions)
    loss = (prediction - target).pow(2)[valid].mean()
    return loss, {"action_loss": loss.detach()}


def dt_update(model: DecisionTransformer, optimizer: torch.optim.Optimizer, windows: Windows,
              max_grad_norm: float = 0.25) -> dict[str, Tensor]:
    """One gradient step of :func:`dt_loss` (gradients clipped to ``max_grad_norm``; 0 disables); its stats plus
    ``grad_norm``."""
    loss, stats = dt_loss(model, windows)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm > 0:
        stats["grad_norm"] = nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm).detach()
    optimizer.step()
    return stats


def conditioning_defaults(dataset: OfflineDataset) -> tuple[float, float]:
    """``(target_return, return_scale)`` for a model trained on ``dataset``: its best episode return (what acting
    goes for unless told otherwise), and its largest absolute episode return (1 when every return is 0), which
    brings returns-to-go to about ``[-1, 1]``."""
    returns = dataset.episode_returns()
    scale = float(np.abs(returns).max())
    return float(returns.max()), scale if scale > 0 else 1.0

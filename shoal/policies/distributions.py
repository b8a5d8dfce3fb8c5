"""Action distributions with legal-action masks: categorical, multi-categorical, diagonal Gaussian and hybrid.

All four share one small interface: ``sample()``, ``mode()``, ``log_prob(action)``, ``entropy()`` and ``logits``
(the masked logits, or the Gaussian mean), each for a whole batch ``[*batch]`` in one call.

Masking
    ``mask`` is bool and True where an action is legal. Illegal logits are replaced by the most negative finite
    float (``torch.finfo(dtype).min``) rather than ``-inf``: after ``log_softmax`` they stay at that value, so
    their probability ``exp(logp)`` is exactly 0, ``p * logp`` is ``-0.0`` (no NaN in the entropy) and no gradient
    reaches them. A row with no legal action at all (e.g. a dead agent's zero-filled mask) is treated as fully
    legal, so it produces finite numbers; such rows must not reach the loss anyway.

Sampling
    Categorical sampling uses the Gumbel-max trick (``argmax(logp + Gumbel noise)``): exact, batched over any
    number of sub-actions, free of data-dependent control flow (``torch.compile(fullgraph=True)`` friendly), and it
    never picks an entry of probability 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from shoal.errors import APIUsageError

__all__ = [
    "ActionDistribution",
    "DiagGaussian",
    "HybridDistribution",
    "MaskedCategorical",
    "MultiCategorical",
    "masked_logits",
    "register_squash_bounds",
]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def register_squash_bounds(module: nn.Module, action_layout: Any, who: str) -> None:
    """Give ``module`` the float32 buffers ``center`` and ``half_range`` ``[num_continuous]`` of the continuous
    entries' bounds of ``action_layout`` (an :class:`~shoal.emulation.actions.ActionLayout`), for a policy (``who``)
    that squashes actions into them with ``tanh``.

    Raises:
        APIUsageError: an infinite or empty bound, saying how to make the bounds finite.
    """
    low = np.asarray(action_layout.low, np.float64)
    high = np.asarray(action_layout.high, np.float64)
    if not (np.isfinite(low).all() and np.isfinite(high).all() and (high > low).all()):
        raise APIUsageError(
            f"{who} squashes Box actions into their bounds, but {action_layout.space} has infinite or empty bounds; "
            "wrap the env with gymnasium.wrappers.RescaleAction (or ClipAction to a finite range) first"
        )
    module.register_buffer("center", torch.as_tensor((low + high) / 2, dtype=torch.float32), persistent=False)
    module.register_buffer("half_range", torch.as_tensor((high - low) / 2, dtype=torch.float32), persistent=False)


def masked_logits(logits: Tensor, mask: Tensor | None, valid: Tensor | None = None) -> Tensor:
    """Replace illegal logits by ``finfo.min``.

    Args:
        logits: float ``[*, n]``.
        mask: bool ``[*, n]`` (True = legal) or None (all legal).
        valid: optional bool ``[n]`` of entries that exist at all (padding is False); padding stays illegal even in
            a row whose mask has no legal entry.

    Returns:
        float ``[*, n]``.
    """
    low = torch.finfo(logits.dtype).min
    if mask is None:
        return logits if valid is None else logits.masked_fill(~valid, low)
    mask = mask if mask.dtype == torch.bool else mask != 0
    if valid is not None:
        mask = mask & valid
    nothing_legal = ~mask.any(-1, keepdim=True)
    legal = mask | nothing_legal if valid is None else mask | (nothing_legal & valid)
    return logits.masked_fill(~legal, low)


def _gumbel_argmax(logp: Tensor) -> Tensor:
    """Sample indices along the last dim of ``logp`` (log-probabilities) by the Gumbel-max trick."""
    u = torch.rand_like(logp).clamp_min_(torch.finfo(logp.dtype).tiny)
    return torch.argmax(logp - torch.log(-torch.log(u)), dim=-1)


class ActionDistribution:
    """Interface of the distributions below (duck-typed; subclassing is optional)."""

    logits: Tensor

    def sample(self) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def mode(self) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def log_prob(self, action: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def entropy(self) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class MaskedCategorical(ActionDistribution):
    """A batch of categorical distributions over the last dim of ``logits``, with optional legal-action masks.

    Args:
        logits: float ``[*batch, n]`` unnormalised log-probabilities.
        mask: bool ``[*batch, n]``, True = legal (None: all legal).
        valid: bool ``[n]``, False for padding entries that never exist (used by :class:`MultiCategorical`).

    Attributes:
        logits: the masked logits ``[*batch, n]`` (illegal entries ``finfo.min``).
        logp: normalised log-probabilities ``[*batch, n]``.
    """

    def __init__(self, logits: Tensor, mask: Tensor | None = None, valid: Tensor | None = None) -> None:
        self.logits = masked_logits(logits, mask, valid)
        self.logp = torch.log_softmax(self.logits, dim=-1)

    @property
    def probs(self) -> Tensor:
        """``[*batch, n]`` probabilities; exactly 0 for illegal entries."""
        return self.logp.exp()

    def sample(self) -> Tensor:
        """int64 ``[*batch]`` indices drawn from the distribution (never an illegal one)."""
        return _gumbel_argmax(self.logp)

    def mode(self) -> Tensor:
        """int64 ``[*batch]`` most likely legal index."""
        return torch.argmax(self.logp, dim=-1)

    def log_prob(self, action: Tensor) -> Tensor:
        """float ``[*batch]`` log-probability of int ``action [*batch]`` (``finfo.min`` for an illegal one)."""
        return self.logp.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> Tensor:
        """float ``[*batch]`` entropy in nats; illegal entries contribute exactly 0."""
        return -(self.logp.exp() * self.logp).sum(-1)


class MultiCategorical(ActionDistribution):
    """Independent categoricals side by side, one per entry of ``nvec`` (a ``MultiDiscrete`` action).

    The flat logits are regrouped into a padded ``[*batch, k, max(nvec)]`` block (one gather; a plain reshape when
    all ``nvec`` are equal), so sampling, log-prob and entropy of every sub-action run in one batched call.

    Args:
        logits: float ``[*batch, sum(nvec)]``, the sub-actions' logits concatenated in order.
        nvec: number of choices of each of the ``k`` sub-actions.
        mask: bool ``[*batch, sum(nvec)]`` legal-action mask in the same layout (None: all legal).
        index: optional precomputed :meth:`gather_index` for ``nvec`` (saves rebuilding it every call).

    Attributes:
        logits: masked flat logits ``[*batch, sum(nvec)]``.
    """

    def __init__(self, logits: Tensor, nvec: Sequence[int] | Tensor, mask: Tensor | None = None,
                 index: tuple[Tensor, Tensor, Tensor] | None = None) -> None:
        nvec = [int(n) for n in (nvec.tolist() if isinstance(nvec, Tensor) else nvec)]
        self.nvec = nvec
        k, width = len(nvec), max(nvec)
        self._uniform = all(n == width for n in nvec)
        lead = logits.shape[:-1]
        if self._uniform:
            grouped = logits.reshape(*lead, k, width)
            grouped_mask = None if mask is None else mask.reshape(*lead, k, width)
            self.dist = MaskedCategorical(grouped, grouped_mask)
            self.logits = self.dist.logits.reshape(*lead, k * width)
            return
        gather, valid, inverse = index if index is not None else self.gather_index(nvec, logits.device)
        padded = torch.cat([logits, logits.new_zeros(*lead, 1)], -1)[..., gather]
        padded_mask = None
        if mask is not None:
            mask = mask if mask.dtype == torch.bool else mask != 0
            padded_mask = torch.cat([mask, mask.new_zeros(*lead, 1)], -1)[..., gather]
        self.dist = MaskedCategorical(padded, padded_mask, valid)
        self.logits = self.dist.logits.reshape(*lead, k * width)[..., inverse]

    @staticmethod
    def gather_index(nvec: Sequence[int], device: torch.device | str | None = None,
                     ) -> tuple[Tensor, Tensor, Tensor]:
        """``(index int64[k, max_n], valid bool[k, max_n], inverse int64[sum(nvec)])`` for ragged ``nvec``.

        ``index`` maps the padded block to flat logit positions (padding points at an extra column appended after
        the last logit, position ``sum(nvec)``); ``inverse`` maps each flat position to its place in the padded
        block flattened to ``[k * max_n]``.
        """
        nvec = [int(n) for n in nvec]
        total, width = sum(nvec), max(nvec)
        index = torch.full((len(nvec), width), total, dtype=torch.long)
        start = 0
        for i, n in enumerate(nvec):
            index[i, :n] = torch.arange(start, start + n)
            start += n
        valid = index < total
        inverse = torch.arange(index.numel())[valid.reshape(-1)]
        return index.to(device), valid.to(device), inverse.to(device)

    def sample(self) -> Tensor:
        """int64 ``[*batch, k]``."""
        return self.dist.sample()

    def mode(self) -> Tensor:
        """int64 ``[*batch, k]``."""
        return self.dist.mode()

    def log_prob(self, action: Tensor) -> Tensor:
        """float ``[*batch]``: sum of the sub-actions' log-probabilities for int ``action [*batch, k]``."""
        return self.dist.log_prob(action).sum(-1)

    def entropy(self) -> Tensor:
        """float ``[*batch]``: sum of the sub-actions' entropies."""
        return self.dist.entropy().sum(-1)


class DiagGaussian(ActionDistribution):
    """A batch of Gaussians with diagonal covariance (a ``Box`` action), unsquashed.

    Args:
        mean: float ``[*batch, n]``.
        std: float ``[*batch, n]`` or ``[n]`` standard deviations (> 0).

    Attributes:
        logits: the mean (so every distribution exposes its parameters under one name).
    """

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        self.mean = self.logits = mean
        self.std = std.expand_as(mean)

    def sample(self) -> Tensor:
        """float ``[*batch, n]``, detached (like ``torch.distributions``; see :meth:`rsample`)."""
        return self.rsample().detach()

    def rsample(self) -> Tensor:
        """float ``[*batch, n]`` reparameterised sample ``mean + std * eps`` (gradients flow to mean and std)."""
        return self.mean + self.std * torch.randn_like(self.mean)

    def mode(self) -> Tensor:
        """float ``[*batch, n]``: the mean."""
        return self.mean

    def log_prob(self, action: Tensor) -> Tensor:
        """float ``[*batch]``: summed over the ``n`` dims."""
        z = (action.to(self.mean.dtype) - self.mean) / self.std
        return (-0.5 * z * z - torch.log(self.std) - _LOG_SQRT_2PI).sum(-1)

    def entropy(self) -> Tensor:
        """float ``[*batch]``: summed over the ``n`` dims."""
        return (0.5 + _LOG_SQRT_2PI + torch.log(self.std)).sum(-1)


class HybridDistribution(ActionDistribution):
    """Discrete and continuous sub-actions side by side (the hybrid flat action layout).

    A flat action is float ``[*batch, k + n]``: ``k`` whole-number choices (``0 <= a_i < nvec_i``) followed by ``n``
    continuous values. Log-prob and entropy are the sums of both parts.

    Attributes:
        logits: ``[*batch, sum(nvec) + n]``: the masked discrete logits, then the Gaussian mean.
    """

    def __init__(self, discrete: MultiCategorical, continuous: DiagGaussian) -> None:
        self.discrete = discrete
        self.continuous = continuous
        self.num_discrete = len(discrete.nvec)
        self.logits = torch.cat([discrete.logits, continuous.mean], -1)

    def _join(self, choices: Tensor, values: Tensor) -> Tensor:
        return torch.cat([choices.to(values.dtype), values], -1)

    def sample(self) -> Tensor:
        """float ``[*batch, k + n]``."""
        return self._join(self.discrete.sample(), self.continuous.sample())

    def mode(self) -> Tensor:
        """float ``[*batch, k + n]``."""
        return self._join(self.discrete.mode(), self.continuous.mode())

    def log_prob(self, action: Tensor) -> Tensor:
        """float ``[*batch]`` for a flat hybrid ``action [*batch, k + n]``."""
        choices = action[..., : self.num_discrete].round().long()
        return self.discrete.log_prob(choices) + self.continuous.log_prob(action[..., self.num_discrete :])

    def entropy(self) -> Tensor:
        """float ``[*batch]``."""
        return self.discrete.entropy() + self.continuous.entropy()

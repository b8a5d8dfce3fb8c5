"""Value normalization: the critic learns returns in normalized units (running mean/std, or PopArt).

The MAPPO study (Yu et al., 2022) found value normalization to be one of the details that matter most: returns of
multi-agent games drift by orders of magnitude over training, and a critic regressing raw returns chases a
moving scale. Here the critic *predicts normalized values*; everything outside the loss uses return units:

* acting and bootstrapping: ``raw = normalizer.denormalize(critic_output)`` (what the buffer stores, what GAE
  sees);
* once per update, before the first minibatch: :meth:`ValueNormalizer.update` with the rollout's value targets
  (valid transitions only);
* in the loss: the critic output is compared with ``normalize(returns)``, and clipped around
  ``normalize(old_values)`` (:func:`shoal.train.core.ppo.ppo_update` with ``value_norm=``).

:class:`ValueNormalizer` keeps exponential moving averages of the mean and the mean square of the targets,
debiased like Adam's moments (so the first update uses exactly the first batch's statistics). :class:`PopArt`
additionally rescales the critic's output layer whenever the statistics change, so that its raw (denormalized)
predictions are preserved exactly (van Hasselt et al., 2016).

Both are ``nn.Module``s whose statistics are buffers (float64): checkpoint them with ``state_dict()``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from shoal.errors import APIUsageError

__all__ = ["VALUE_NORMS", "PopArt", "ValueNormalizer", "make_value_normalizer"]

#: Accepted values of ``TrainConfig.value_norm`` once ``"auto"`` is resolved.
VALUE_NORMS = ("none", "running", "popart")


def _host_views(*buffers: Tensor) -> tuple[np.ndarray, ...] | None:
    """numpy views of CPU tensors' memory (None if any is elsewhere, or cannot be viewed)."""
    if any(t.device.type != "cpu" for t in buffers):
        return None
    try:
        return tuple(t.detach().numpy() for t in buffers)
    except (RuntimeError, TypeError):
        return None


class ValueNormalizer(nn.Module):
    """Running (EMA, debiased) mean and standard deviation of value targets.

    Args:
        beta: EMA decay per :meth:`update` call (one call per PPO update). ``0.999`` remembers roughly the last
            thousand updates; values close to 1 approach the plain average of every batch.
        epsilon: smallest variance used (keeps the scale finite while the targets are constant).

    Buffers (float64 scalars): ``running_mean``, ``running_mean_sq``, ``debias`` (``1 - beta ** updates``).
    """

    _views: tuple[Any, ...] | None = None  # (a class default: instances pickled before it existed)

    def __init__(self, beta: float = 0.999, epsilon: float = 1e-4) -> None:
        super().__init__()
        if not 0.0 <= beta < 1.0:
            raise APIUsageError(f"beta must be in [0, 1), got {beta}")
        if not epsilon > 0:
            raise APIUsageError(f"epsilon must be > 0, got {epsilon}")
        self.beta = float(beta)
        self.epsilon = float(epsilon)
        self.register_buffer("running_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("running_mean_sq", torch.zeros((), dtype=torch.float64))
        self.register_buffer("debias", torch.zeros((), dtype=torch.float64))
        self._views: tuple[Any, ...] | None = None  # the buffers, their storages and numpy views (affine)

    # ---- statistics ----------------------------------------------------------------------------------------

    def affine(self) -> tuple[float, float]:
        """``(mean, std)`` as Python floats (float64 arithmetic); ``(0.0, 1.0)`` before the first update.

        The one computation of the statistics (:meth:`stats` wraps it): the acting path transforms numpy arrays with
        these floats, where a chain of scalar tensor ops per env step cost more than the transform. Buffers on the
        CPU are read through numpy views of their memory (rebuilt when a buffer or its storage is replaced), so
        every write is seen, however it was made, at a fraction of a tensor read's cost; elsewhere the three
        buffers are read at once (one device sync)."""
        held = self._buffers  # (a module's attribute lookup of a buffer costs more than the views' check)
        a, b, c = held["running_mean"], held["running_mean_sq"], held["debias"]
        views = self._views
        if views is None or views[0] is not a or views[1] is not b or views[2] is not c \
                or views[3] != (a.data_ptr(), b.data_ptr(), c.data_ptr()):
            views = self._views = (a, b, c, (a.data_ptr(), b.data_ptr(), c.data_ptr()), _host_views(a, b, c))
        host = views[4]
        if host is not None:
            running_mean, running_mean_sq, debias = float(host[0]), float(host[1]), float(host[2])
        else:
            running_mean, running_mean_sq, debias = torch.stack((a, b, c)).tolist()
        if debias <= 0.0:
            return 0.0, 1.0
        mean = running_mean / debias
        return mean, math.sqrt(max(running_mean_sq / debias - mean * mean, self.epsilon))

    def __getstate__(self) -> dict:
        # the numpy views alias this process's buffers: a copy (pickle, deepcopy) builds its own
        return {**self.__dict__, "_views": None}

    def stats(self) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` as float64 scalars on the buffers' device (:meth:`affine`'s values)."""
        mean, std = self.affine()
        device = self.debias.device
        return (torch.tensor(mean, dtype=torch.float64, device=device),
                torch.tensor(std, dtype=torch.float64, device=device))

    @property
    def mean(self) -> float:
        """Current mean of the targets (0 before the first update)."""
        return self.affine()[0]

    @property
    def std(self) -> float:
        """Current standard deviation of the targets (1 before the first update)."""
        return self.affine()[1]

    @torch.no_grad()
    def update(self, targets: Tensor) -> None:
        """Fold a batch of value targets (float ``[M]``, any shape; only finite entries of valid transitions)
        into the statistics. An empty batch changes nothing."""
        x = targets.detach().reshape(-1).to(torch.float64)
        if x.numel() == 0:
            return
        old_mean, old_std = self.stats()
        b = self.beta
        self.running_mean.mul_(b).add_((1 - b) * x.mean())
        self.running_mean_sq.mul_(b).add_((1 - b) * (x**2).mean())
        self.debias.mul_(b).add_(1 - b)
        self._rescaled(old_mean, old_std)

    def _rescaled(self, old_mean: Tensor, old_std: Tensor) -> None:
        """Hook run after the statistics changed (PopArt preserves its layer's outputs here)."""

    # ---- transforms ----------------------------------------------------------------------------------------

    def normalize(self, x: Tensor) -> Tensor:
        """Return units -> normalized units (differentiable; keeps ``x``'s dtype and device)."""
        mean, std = self.stats()
        return (x - mean.to(x.device, x.dtype)) / std.to(x.device, x.dtype)

    def denormalize(self, x: Tensor) -> Tensor:
        """Normalized units -> return units (keeps ``x``'s dtype and device)."""
        mean, std = self.stats()
        return x * std.to(x.device, x.dtype) + mean.to(x.device, x.dtype)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, mean={self.mean:.4g}, std={self.std:.4g}"


class PopArt(ValueNormalizer):
    """:class:`ValueNormalizer` that also rescales the critic's output ``layer`` on every update.

    With ``(mu, sigma)`` the statistics before and ``(mu', sigma')`` after an update, the layer's weight becomes
    ``W * sigma / sigma'`` and its bias ``(sigma * b + mu - mu') / sigma'``: the denormalized outputs are the same
    before and after ("preserving outputs precisely").

    Args:
        layer: the critic's last ``nn.Linear`` (one output). It is not registered as a submodule (its parameters
            belong to the policy and are checkpointed with it).
        beta, epsilon: as for :class:`ValueNormalizer`.
    """

    def __init__(self, layer: nn.Linear, beta: float = 0.999, epsilon: float = 1e-4) -> None:
        super().__init__(beta, epsilon)
        if not isinstance(layer, nn.Linear) or layer.out_features != 1 or layer.bias is None:
            raise APIUsageError(f"PopArt needs the critic's output nn.Linear(..., 1) with a bias, got {layer!r}")
        self._layer = [layer]  # a list: not a submodule

    @torch.no_grad()
    def _rescaled(self, old_mean: Tensor, old_std: Tensor) -> None:
        layer = self._layer[0]
        new_mean, new_std = self.stats()
        scale = (old_std / new_std).to(layer.weight.dtype)
        layer.weight.mul_(scale)
        layer.bias.copy_(((old_std * layer.bias.double() + old_mean - new_mean) / new_std).to(layer.bias.dtype))


def make_value_normalizer(kind: str, critic_output: nn.Linear | None = None) -> ValueNormalizer | None:
    """Build the normalizer for ``TrainConfig.value_norm`` (resolved: ``"none" | "running" | "popart"``).

    Args:
        kind: ``"none"`` returns None.
        critic_output: the critic's last linear layer (required for ``"popart"``).
    """
    if kind == "none":
        return None
    if kind == "running":
        return ValueNormalizer()
    if kind == "popart":
        if critic_output is None:
            raise APIUsageError("value_norm='popart' needs the critic's output layer (a Policy's critic or value_head)")
        return PopArt(critic_output)
    raise APIUsageError(f"value_norm={kind!r} is unknown; valid choices: {list(VALUE_NORMS)}")

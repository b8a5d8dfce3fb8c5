"""Running observation statistics: the per-element mean and variance a policy normalizes float inputs by.

What Stable-Baselines3's ``VecNormalize`` does to observations, kept inside the policy instead of the env: the
statistics are buffers of the network, so a checkpoint, a league snapshot, ``shoal eval`` and an ONNX export all
normalize exactly as training did, and rollout buffers keep the raw observations.

When they change
    Only between rollouts: a trainer collects a rollout with fixed statistics, updates the policy on it (the
    minibatches see the same normalization as acting did, so PPO's importance ratios start at exactly 1), then
    folds the rollout's valid observations into the statistics (:func:`shoal.train.core.ppo.ppo_update`). The
    first rollout therefore sees the raw values (clipped to ``+-clip``).

The merge is exact (Chan et al.'s parallel update): after batches ``B1, B2, ...`` the mean and (population)
variance are those of all their rows together, whatever the batch sizes; data-parallel learners merge the
moments of every learner's batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["RunningObsStats"]


class RunningObsStats(nn.Module):
    """Per-element running mean and variance of a float input, and the normalization they define.

    Args:
        size: elements per row.
        clip: normalized values are clipped to ``[-clip, clip]`` (SB3's ``clip_obs``).
        epsilon: added to the variance before the square root (constant inputs stay finite).

    Buffers (float64, saved with the policy): ``count`` (scalar, rows seen), ``mean`` ``[size]``, ``var``
    ``[size]`` (1 before any row).
    """

    def __init__(self, size: int, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        super().__init__()
        self.size = int(size)
        self.clip = float(clip)
        self.epsilon = float(epsilon)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(self.size, dtype=torch.float64))
        self.register_buffer("var", torch.ones(self.size, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        """float32 ``[N, size]`` -> float32 ``[N, size]``: ``(x - mean) / sqrt(var + epsilon)``, clipped."""
        scale = torch.rsqrt(self.var + self.epsilon).to(torch.float32)
        return ((x - self.mean.to(torch.float32)) * scale).clamp(-self.clip, self.clip)

    @torch.no_grad()
    def moments(self, x: Tensor) -> Tensor:
        """float64 ``[1 + 2 * size]``: the row count, per-element sums and sums of squares of ``x [N, size]``
        (moments of several batches add up; :meth:`merge` takes their sum)."""
        x = x.reshape(-1, self.size).to(torch.float64)
        return torch.cat([x.new_tensor([float(x.shape[0])]), x.sum(0), (x * x).sum(0)])

    @torch.no_grad()
    def merge(self, moments: Tensor) -> None:
        """Fold a batch's :meth:`moments` into the statistics (no rows: nothing changes)."""
        moments = moments.to(device=self.mean.device, dtype=torch.float64)
        n = moments[0]
        if float(n) <= 0:
            return
        batch_mean = moments[1 : 1 + self.size] / n
        batch_var = (moments[1 + self.size :] / n - batch_mean**2).clamp(min=0.0)
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * (self.count * n / total)
        self.mean.add_(delta * (n / total))
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def extra_repr(self) -> str:
        return f"size={self.size}, clip={self.clip}, count={int(self.count)}"

"""Running observation statistics: the per-element mean and variance a policy normalizes float inputs by.

What Stable-Baselines3's ``VecNormalize`` does to observations, kept inside the policy instead of the env: the
statistics are buffers of the network, so a checkpoint, a league snapshot, ``shoal eval`` and an ONNX export all
normalize exactly as training did, and rollout buffers keep the raw observations.

When they change
    With the policy's weights, after an update: :func:`shoal.train.core.ppo.ppo_update` folds the rollout's valid
    observations into them after its minibatches, so the update saw the normalization the rollout was acted with
    (PPO's importance ratios start at exactly 1 in the one-process trainer). Wherever acting runs on weights one
    update old (the learner process's handover, overlapped env backends), it runs on that update's statistics
    too, and PPO's clipping corrects for both alike. The first rollout sees the raw values (clipped to ``+-clip``).

Precision
    The buffers stay float64 whatever the policy is cast to (``policy.float()``, ``.half()``): a float16 row count
    overflows at 65,504. Devices without float64 (Apple's MPS) cannot hold them, as for
    :class:`~shoal.train.core.normalize.ValueNormalizer`.

The merge is exact (Chan et al.'s parallel update): after batches ``B1, B2, ...`` the mean and (population)
variance are those of all their rows together, whatever the batch sizes; data-parallel learners merge the
moments of every learner's batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from shoal.errors import APIUsageError, NonFiniteError

__all__ = ["RunningObsStats", "check_moments"]

_CHUNK_ELEMENTS = 2**22  # moments are summed over blocks of rows: the float64 copy stays small (32 MiB)


def check_moments(moments: Tensor) -> None:
    """Raise :class:`~shoal.errors.NonFiniteError` when summed :meth:`RunningObsStats.moments` hold NaN or
    infinity (an observation was, or its square overflowed float64): folded in, they would turn every later
    normalized input into NaN."""
    if not bool(torch.isfinite(moments).all()):
        raise NonFiniteError(
            "obs_norm: the observations of this rollout hold NaN or infinity (or values whose square overflows "
            "float64); the running observation statistics would be NaN from here on. Find the env emitting them "
            "(check_finite=True, the default, names it), or train without obs_norm", "observation")


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
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise APIUsageError(f"RunningObsStats size must be a positive int (elements per row), got {size!r}")
        for name, value in (("clip", clip), ("epsilon", epsilon)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise APIUsageError(f"RunningObsStats {name} must be a positive finite number, got {value!r}")
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
        x = x.reshape(-1, self.size)
        out = torch.zeros(1 + 2 * self.size, dtype=torch.float64, device=x.device)
        out[0] = float(x.shape[0])
        step = max(1, _CHUNK_ELEMENTS // self.size)
        for start in range(0, x.shape[0], step):
            block = x[start : start + step].to(torch.float64)
            out[1 : 1 + self.size] += block.sum(0)
            out[1 + self.size :] += (block * block).sum(0)
        return out

    @torch.no_grad()
    def merge(self, moments: Tensor) -> None:
        """Fold a batch's :meth:`moments` into the statistics (no rows: nothing changes).

        Raises:
            NonFiniteError: the moments hold NaN or infinity (:func:`check_moments`); nothing changes.
        """
        moments = moments.to(device=self.mean.device, dtype=torch.float64)
        check_moments(moments)
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

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> RunningObsStats:
        # A move applies; a cast (policy.float(), .half()) does not: the statistics keep float64 precision.
        originals = {name: self._buffers[name] for name in ("count", "mean", "var")}
        super()._apply(fn, recurse)
        for name, original in originals.items():
            moved = self._buffers[name]
            if moved is not None and moved.dtype != torch.float64:
                self._buffers[name] = original.to(device=moved.device, dtype=torch.float64)
        return self

    def extra_repr(self) -> str:
        return f"size={self.size}, clip={self.clip}, count={int(self.count)}"

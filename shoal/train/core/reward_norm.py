"""Reward normalization: rewards divided by the running standard deviation of the discounted return.

``TrainConfig.reward_norm``. Each vector row keeps the discounted sum of the rewards of its current episode,
``G_t = gamma * G_{t-1} + r_t`` (reset to 0 after the episode ends); every env result folds the new ``G`` of the
rows whose agent is in play into running statistics (mean, variance and count, combined per batch like Chan et
al.'s parallel variance) and the learner sees ``clip(r_t / sqrt(var + epsilon), -clip, clip)``. Only the scale
changes, never the sign or the zero of a reward (no mean is subtracted). This is what Stable-Baselines3's
``VecNormalize`` does with ``norm_reward=True`` (its default, which the rl-baselines3-zoo's ``normalize: true``
entries rely on).

The statistics are float64 numpy values held by the trainer (the rollout side, before the buffer), so every vector
backend and a learner process see the same normalized rewards; :meth:`RewardNormalizer.state_dict` goes into
checkpoints so a resumed run continues with the same statistics and the same running returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shoal.errors import APIUsageError

__all__ = ["RewardNormalizer"]


class RewardNormalizer:
    """Divides rewards by the running standard deviation of the discounted return of each row's episode.

    Args:
        num_rows: vector rows (agent slots) of the env.
        gamma: discount of the running returns (the run's ``gamma``).
        clip: normalized rewards are clipped to ``[-clip, clip]``.
        epsilon: added to the variance before the square root.

    State (float64): ``returns`` ``[num_rows]`` (each row's discounted return so far), ``mean``, ``var``,
    ``count`` (a prior of ``1e-4`` pseudo-samples of mean 0 and variance 1, so the first batch dominates at once).
    """

    def __init__(self, num_rows: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        if isinstance(num_rows, bool) or not isinstance(num_rows, int) or num_rows < 1:
            raise APIUsageError(f"num_rows must be a positive int, got {num_rows!r}")
        if not 0.0 < gamma <= 1.0:
            raise APIUsageError(f"gamma must be in (0, 1], got {gamma!r}")
        if not (clip > 0 and epsilon > 0):
            raise APIUsageError(f"clip and epsilon must be > 0, got clip={clip!r}, epsilon={epsilon!r}")
        self.gamma = float(gamma)
        self.clip = float(clip)
        self.epsilon = float(epsilon)
        self.returns = np.zeros(num_rows, np.float64)
        self.mean = 0.0
        self.var = 1.0
        self.count = 1e-4

    @property
    def std(self) -> float:
        """The divisor of the rewards: ``sqrt(var + epsilon)``."""
        return float(np.sqrt(self.var + self.epsilon))

    def __call__(self, rows: np.ndarray, rewards: np.ndarray, ended: np.ndarray, present: np.ndarray) -> np.ndarray:
        """Normalize one env result's rewards and update the statistics.

        Args:
            rows: int ``[B]`` the vector rows of the result.
            rewards: float ``[B]`` their raw rewards.
            ended: bool ``[B]`` episodes that ended with this result (their returns restart at 0 afterwards).
            present: bool ``[B]`` rows whose agent is in play (the trainer passes the rows with a transition waiting
                for this outcome); only their returns enter the statistics, so the zeros of a reset and of padded
                or dead slots do not pull the variance towards 0.

        Returns:
            float32 ``[B]``: ``clip(rewards / std, -clip, clip)`` with the statistics updated by this result first.
        """
        raw = np.asarray(rewards, np.float64)
        self.returns[rows] = self.returns[rows] * self.gamma + raw
        sample = self.returns[rows[present]]
        if sample.size:
            self._update(sample)
        out = np.clip(raw / self.std, -self.clip, self.clip).astype(np.float32)
        self.returns[rows[ended]] = 0.0
        return out

    def _update(self, x: np.ndarray) -> None:
        """Fold a batch into (mean, var, count): the parallel combination of two sets' moments."""
        batch_mean, batch_var, n = float(x.mean()), float(x.var()), x.size
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total

    def restart_episodes(self) -> None:
        """Every row starts a new episode (the envs were reset): the running returns go back to 0."""
        self.returns[:] = 0.0

    def state_dict(self) -> dict[str, Any]:
        """The statistics and running returns (a float64 tensor copy), for checkpoints."""
        return {"returns": torch.from_numpy(self.returns.copy()), "mean": self.mean, "var": self.var,
                "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values (the number of rows must match)."""
        returns = torch.as_tensor(state["returns"]).cpu().numpy().astype(np.float64)
        if returns.shape != self.returns.shape:
            raise APIUsageError(f"reward normalization state for {returns.shape[0]} rows, this run has "
                                f"{self.returns.shape[0]}")
        self.returns[:] = returns
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])

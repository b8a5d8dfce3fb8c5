"""TrainResult: what a training run returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from shoal.train.config import TrainConfig

__all__ = ["TrainResult"]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        config: the configuration used.
        policy: the trained policy (on its training device).
        run_dir: the run directory, or None.
        global_step: agent steps collected in total (across resumes; offline algorithms: gradient steps);
            updates: updates done in total.
        seconds: wall time of this call; sps: agent steps (offline: gradient steps) per second in this call.
        episode_return, episode_length: mean over the last ``stats_window`` finished episodes (offline algorithms:
            the episodes of their last online evaluation; None if none).
        episodes: episodes finished in total.
        checkpoint: the last checkpoint written, or None.
        evaluation: when ``eval_episodes > 0``, the :func:`shoal.train.runs.evaluate.evaluate` result with the most
            likely actions, and under ``"stochastic"`` the one sampling actions
            (:func:`~shoal.train.runs.evaluate.evaluate_after_training`); a failed evaluation is
            ``{"error": message, "mean_return": None, "episodes": 0}`` (the training itself succeeded).
        resumed_from: the checkpoint this run continued from, or None.
        exact_resume: False when a resumed run had to restart its envs.
        dataset: the dataset directory written (``config.record_dataset``), or None.
    """

    config: TrainConfig
    policy: nn.Module
    run_dir: Path | None
    global_step: int
    updates: int
    seconds: float
    sps: float
    episode_return: float | None
    episode_length: float | None
    episodes: int
    checkpoint: Path | None = None
    evaluation: dict[str, Any] | None = None
    resumed_from: Path | None = None
    exact_resume: bool = True
    dataset: Path | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-serializable summary (what the command line prints)."""
        return {
            "env": self.config.env,
            "algo": self.config.algo,
            "run_dir": None if self.run_dir is None else str(self.run_dir),
            "global_step": self.global_step,
            "updates": self.updates,
            "seconds": round(self.seconds, 3),
            "sps": round(self.sps, 1),
            "episode_return": self.episode_return,
            "episode_length": self.episode_length,
            "episodes": self.episodes,
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "resumed_from": None if self.resumed_from is None else str(self.resumed_from),
            "dataset": None if self.dataset is None else str(self.dataset),
            "eval_mean_return": None if self.evaluation is None else self.evaluation["mean_return"],
            "eval_episodes": None if self.evaluation is None else self.evaluation["episodes"],
            "eval_stochastic_mean_return": None if self.evaluation is None
            else self.evaluation.get("stochastic", {}).get("mean_return"),
        }

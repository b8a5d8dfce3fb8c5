"""Rollout helpers for tests: hand-made :class:`RolloutTensors`, and junk in the rows that are not live."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shoal.train.core.rollout import RolloutTensors


def rollout_tensors(**fields: Any) -> RolloutTensors:
    """``fields`` (``obs``, ``actions``, ``log_probs``, ``values``, ``rewards``, ``next_values``, ``dones`` and
    ``valid`` at least, ``[S, H, ...]``); the others default to no episode ends or starts, slot 0, no masks, no
    LSTM states and no critic input."""
    valid = fields["valid"]
    s, _ = valid.shape
    false = torch.zeros_like(valid)
    defaults: dict[str, Any] = {
        "terminals": fields["dones"] & valid, "truncations": false, "starts": false, "action_masks": None,
        "agent_ids": torch.zeros(valid.shape, dtype=torch.int64), "states": None, "rows": torch.arange(s),
        "critic_obs": None,
    }
    merged = defaults | {k: v for k, v in fields.items() if v is not None or k in ("action_masks", "states",
                                                                                  "critic_obs")}
    return RolloutTensors(**merged)


class Garbage:
    """Wrap a vector env and fill every non-live row of each result with random junk (obs, rewards, masks)."""

    def __init__(self, vec: Any, seed: int) -> None:
        self._vec = vec
        self._rng = np.random.default_rng(seed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vec, name)

    def recv(self) -> Any:
        batch = self._vec.recv()
        dead = ~batch.masks & ~batch.terminals & ~batch.truncations
        if dead.any():
            batch.obs[dead] = self._rng.uniform(-1e3, 1e3, batch.obs[dead].shape).astype(batch.obs.dtype)
            batch.rewards[dead] = self._rng.normal(size=int(dead.sum())) * 100
            if batch.action_masks is not None:
                batch.action_masks[dead] = self._rng.random(batch.action_masks[dead].shape) < 0.5
        return batch

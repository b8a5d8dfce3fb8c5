"""Hand-made rollouts for update tests: a :class:`RolloutTensors` from the fields a test cares about."""

from __future__ import annotations

from typing import Any

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

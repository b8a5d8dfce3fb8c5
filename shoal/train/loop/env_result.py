"""EnvResult: the last env result the trainer holds between steps, and whether its live rows already acted."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["EnvResult"]


class EnvResult:
    """The last env result (views of the vector env's batch; copied where needed) and whether its live rows
    already acted."""

    __slots__ = (
        "acted",
        "action_masks",
        "agent_types",
        "env_ids",
        "infos",
        "masks",
        "obs",
        "rewards",
        "rows",
        "terminals",
        "truncations",
    )

    def __init__(self, batch: Any, rows: np.ndarray) -> None:
        self.obs = batch.obs
        self.rewards = batch.rewards
        self.terminals = batch.terminals
        self.truncations = batch.truncations
        self.infos = batch.infos
        self.env_ids = batch.env_ids
        self.masks = batch.masks
        self.action_masks = batch.action_masks
        self.agent_types = batch.agent_types
        self.rows = rows
        self.acted = False

    def state(self) -> dict[str, Any]:
        def copy(x: np.ndarray | None) -> np.ndarray | None:
            return None if x is None else np.array(x, copy=True)

        return {
            name: copy(getattr(self, name))
            for name in (
                "obs",
                "rewards",
                "terminals",
                "truncations",
                "env_ids",
                "masks",
                "action_masks",
                "agent_types",
                "rows",
            )
        } | {"acted": self.acted}

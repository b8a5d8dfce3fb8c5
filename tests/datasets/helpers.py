"""Envs and assertions shared by the dataset tests."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from shoal.datasets import OfflineDataset
from shoal.datasets.matching import stored_space
from tests.emulation.helpers import HybridActionEnv


class TextTupleEnv(HybridActionEnv):
    """:class:`HybridActionEnv`'s hybrid action with a nested Tuple/Dict observation of mixed dtypes and a Text leaf
    whose charset is not in sorted order (its codes follow the charset's own order)."""

    def __init__(self, length: int = 7) -> None:
        super().__init__(length)
        self.observation_space = spaces.Tuple((
            spaces.Dict({"word": spaces.Text(6, charset="zyxwba"), "level": spaces.Box(-300, 300, (2,), np.int16)}),
            spaces.Discrete(5, start=-2),
            spaces.Box(-1.0, 1.0, (3,), np.float64),
        ))

    def _observe(self) -> Any:
        rng = self.np_random
        word = "".join(rng.choice(list("zyxwba"), int(rng.integers(1, 7))))
        return ({"word": word, "level": rng.integers(-300, 301, 2).astype(np.int16)}, np.int64(rng.integers(-2, 3)),
                rng.uniform(-1, 1, 3))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed, options=options)
        return self._observe(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        _, reward, terminated, truncated, info = super().step(action)
        return self._observe(), reward, terminated, truncated, info


def assert_same_dataset(expected: OfflineDataset, actual: OfflineDataset) -> None:
    """Every array of two datasets equal byte for byte (and in dtype and shape), the layouts' spaces equal."""
    for name in ("observations", "actions", "rewards", "terminations", "truncations", "episode_offsets", "agents",
                 "agent_types"):
        a, b = getattr(expected, name), getattr(actual, name)
        assert b.dtype == a.dtype and b.shape == a.shape, name
        assert b.tobytes() == a.tobytes(), name
    assert (expected.action_masks is None) == (actual.action_masks is None)
    if expected.action_masks is not None:
        assert np.array_equal(expected.action_masks, actual.action_masks)
    # a space of a registered type comes back as the space it is stored as (the rows are the same)
    assert actual.obs_layout.space == stored_space(expected.obs_layout.space)
    assert actual.action_layout.space == expected.action_layout.space

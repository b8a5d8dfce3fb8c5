"""Assertions shared by the emulation tests."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces


def assert_same_sample(space: spaces.Space, expected: Any, actual: Any, path: str = "obs") -> None:
    """Assert two samples of ``space`` are equal leaf by leaf, bit for bit and dtype for dtype."""
    if isinstance(space, spaces.Dict):
        assert set(actual) == set(space.spaces), path
        for key, sub in space.spaces.items():
            assert_same_sample(sub, expected[key], actual[key], f"{path}[{key!r}]")
    elif isinstance(space, spaces.Tuple):
        assert len(actual) == len(space.spaces), path
        for i, sub in enumerate(space.spaces):
            assert_same_sample(sub, expected[i], actual[i], f"{path}[{i}]")
    elif isinstance(space, spaces.Text):
        assert actual == expected, path
    else:
        exp = np.asarray(expected)
        act = np.asarray(actual)
        assert act.dtype == np.dtype(space.dtype), f"{path}: dtype {act.dtype} != {space.dtype}"
        assert act.shape == exp.shape, f"{path}: shape {act.shape} != {exp.shape}"
        assert act.tobytes() == exp.astype(space.dtype).tobytes(), f"{path}: values differ"

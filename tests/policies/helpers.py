"""Shared fixtures for the policy tests: sample rows of a space and the action spaces to build heads for."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from shoal.emulation import ActionLayout, compile_layout, flatten
from shoal.emulation.layout import Layout

#: One native action space per flat action kind.
ACTION_SPACES: dict[str, spaces.Space] = {
    "discrete": spaces.Discrete(5),
    "multi_discrete": spaces.MultiDiscrete([3, 5, 2]),
    "continuous": spaces.Box(-2.0, 2.0, (3,), np.float32),
    "hybrid": spaces.Dict({"move": spaces.Discrete(4), "aim": spaces.Box(-1.0, 1.0, (2,), np.float32)}),
}


def action_layout(kind: str) -> ActionLayout:
    return ActionLayout(ACTION_SPACES[kind])


def sample_rows(space: spaces.Space | Layout, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` flat rows of random samples of ``space`` as a ``[n, flat_size]`` tensor of the flat dtype."""
    layout = compile_layout(space)
    layout.space.seed(seed)
    rows = np.stack([flatten(layout, layout.space.sample()) for _ in range(n)])
    return torch.from_numpy(rows)


def random_masks(n: int, width: int, seed: int = 0, p_legal: float = 0.5) -> torch.Tensor:
    """bool ``[n, width]`` with at least one legal entry per row."""
    gen = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, width, generator=gen) < p_legal
    masks[torch.arange(n), torch.randint(0, width, (n,), generator=gen)] = True
    return masks


def block_masks(n: int, nvec: list[int], seed: int = 0) -> torch.Tensor:
    """bool ``[n, sum(nvec)]``: a random legal-action mask per sub-action, each with a legal entry."""
    return torch.cat([random_masks(n, k, seed + i) for i, k in enumerate(nvec)], -1)

"""shoal: plug any Gymnasium or PettingZoo environment into one fast reinforcement-learning stack."""

from __future__ import annotations

from typing import Any

from shoal.emulation import emulate
from shoal.errors import APIUsageError, CapacityError, EnvError, ShoalError, SpaceError, WorkerError

__version__ = "0.1.0"

__all__ = [
    # entry points
    "emulate",
    "make",
    "train",
    # errors
    "APIUsageError",
    "CapacityError",
    "EnvError",
    "ShoalError",
    "SpaceError",
    "WorkerError",
    # metadata
    "__version__",
]


def make(*args: Any, **kwargs: Any) -> Any:
    """Create a vector env; see :func:`shoal.vector.make`."""
    from shoal.vector import make as _make

    return _make(*args, **kwargs)


def train(*args: Any, **kwargs: Any) -> Any:
    """Train a policy; see :func:`shoal.train.train` (imports torch)."""
    from shoal.train import train as _train

    return _train(*args, **kwargs)

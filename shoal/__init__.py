"""shoal: plug any Gymnasium or PettingZoo environment into one fast reinforcement-learning stack.

After ``import shoal`` every layer is an attribute: :mod:`shoal.emulation` and :mod:`shoal.vector` (numpy only) are
imported with the package; :mod:`shoal.policies` and :mod:`shoal.train` (torch) on first use. ``shoal.train`` is
both the package and the function (``shoal.train(config)`` trains).
"""

from __future__ import annotations

import importlib
from typing import Any

from shoal import emulation, vector
from shoal.emulation import emulate
from shoal.errors import APIUsageError, CapacityError, EnvError, ShoalError, SpaceError, WorkerError

__version__ = "0.1.0"

__all__ = [
    # entry points
    "emulate",
    "make",
    "train",
    # layers
    "emulation",
    "policies",
    "vector",
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

#: Layers that need torch: imported when first named, so ``import shoal`` stays numpy-only.
_LAZY = ("policies", "train")


def make(*args: Any, **kwargs: Any) -> Any:
    """Create a vector env; see :func:`shoal.vector.make`."""
    return vector.make(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"shoal.{name}")  # (the import also binds it on this module)
    raise AttributeError(f"module 'shoal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

"""The exception hierarchy of shoal.

Every error shoal raises on purpose derives from :class:`ShoalError`, so callers can catch the whole
family with one clause. Messages name the offending space, agent, key or argument and say how to fix it.
"""

from __future__ import annotations

__all__ = [
    "APIUsageError",
    "CapacityError",
    "CheckpointError",
    "EnvError",
    "ShoalError",
    "SpaceError",
    "WorkerError",
]


class ShoalError(Exception):
    """Base class of every error raised by shoal."""


class SpaceError(ShoalError, TypeError):
    """A space is unsupported, or a value does not fit the space it claims to belong to."""


class APIUsageError(ShoalError, ValueError):
    """A shoal object was called wrongly: bad argument, wrong shape or dtype, wrong call order."""


class CapacityError(ShoalError, RuntimeError):
    """More live agents than the emulator has slots (``max_agents``)."""


class EnvError(ShoalError, RuntimeError):
    """A wrapped environment broke its own API contract (e.g. returned an observation outside its space)."""


class WorkerError(ShoalError, RuntimeError):
    """A vector-env worker raised or died; the message carries the worker's traceback."""


class CheckpointError(ShoalError, RuntimeError):
    """A checkpoint is missing, corrupt, or belongs to another env or policy shape."""

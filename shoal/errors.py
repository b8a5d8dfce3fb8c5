"""The exception hierarchy of shoal.

Every error shoal raises on purpose derives from :class:`ShoalError`, so callers can catch the whole
family with one clause. Messages name the offending space, agent, key or argument and say how to fix it.
"""

from __future__ import annotations

__all__ = [
    "APIUsageError",
    "CapacityError",
    "CheckpointError",
    "DatasetError",
    "EnvError",
    "EpisodeLimitError",
    "NonFiniteError",
    "ShoalError",
    "SpaceError",
    "WorkerError",
    "WorkerTimeoutError",
]


class ShoalError(Exception):
    """Base class of every error raised by shoal."""


class SpaceError(ShoalError, TypeError):
    """A space is unsupported, or a value does not fit the space it claims to belong to."""


class APIUsageError(ShoalError, ValueError):
    """A shoal object was called wrongly: bad argument, wrong shape or dtype, wrong call order."""


class EpisodeLimitError(APIUsageError):
    """An evaluation reached its bound on steps before any episode ended (an env without a time limit, or a policy
    that never ends its episodes); the message says how to bound them."""


class CapacityError(ShoalError, RuntimeError):
    """More live agents than the emulator has slots (``max_agents``)."""


class EnvError(ShoalError, RuntimeError):
    """A wrapped environment broke its own API contract (e.g. returned an observation outside its space)."""


class NonFiniteError(EnvError):
    """An env returned NaN or infinity in a reward or an observation.

    Attributes:
        field: ``"reward"``, ``"observation"`` (with the leaf path when known, e.g. ``"obs['pos']"``) or
            ``"final_observation"``.
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple:  # pickles with its field (Exception pickles its args only)
        return type(self), (str(self), self.field)


class WorkerError(ShoalError, RuntimeError):
    """A vector-env worker raised or died; the message carries the worker's traceback."""


class WorkerTimeoutError(WorkerError):
    """Vector-env workers did not answer a call within the vector env's ``timeout``.

    Attributes:
        workers: the late workers (processes or actors).
        envs: the global indices of their envs.
        call: what they were doing: ``"startup"`` (building their envs), ``"reset"`` or ``"step"``.
        timeout: the limit in seconds.
    """

    def __init__(self, message: str, workers: list[int], envs: list[int], call: str, timeout: float) -> None:
        super().__init__(message)
        self.workers, self.envs, self.call, self.timeout = workers, envs, call, timeout

    def __reduce__(self) -> tuple:  # pickles with its attributes (Exception pickles its args only)
        return type(self), (str(self), self.workers, self.envs, self.call, self.timeout)


class CheckpointError(ShoalError, RuntimeError):
    """A checkpoint is missing, corrupt, or belongs to another env or policy shape."""


class DatasetError(ShoalError, RuntimeError):
    """An offline dataset is missing, corrupt, or was recorded in other spaces than the env it is used with."""

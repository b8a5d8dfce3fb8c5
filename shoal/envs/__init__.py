"""Tiny fast built-in envs for tests, demos and benchmarks, registered by name for the command line.

    env = shoal.envs.make("memory", length=6)     # a gymnasium.Env
    shoal.envs.names()                            # ["bandit", "coordination", "memory", "nested", "squad"]

Importing this package imports no env module: each entry names its class as ``"module:attribute"`` and is only
imported by :func:`make`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from shoal.errors import APIUsageError

__all__ = ["REGISTRY", "EnvEntry", "make", "names"]


@dataclass(frozen=True)
class EnvEntry:
    """One built-in env.

    Attributes:
        name: the name the command line and :func:`make` use.
        entry_point: ``"module:attribute"`` of the env class (or factory).
        api: ``"gymnasium"`` or ``"pettingzoo"`` (a ParallelEnv).
        description: one line for ``shoal list``.
        kwargs: default keyword arguments for the constructor.
    """

    name: str
    entry_point: str
    api: str
    description: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    def load(self) -> Any:
        """The env class (imports its module)."""
        module, _, attribute = self.entry_point.partition(":")
        return getattr(importlib.import_module(module), attribute)


REGISTRY: dict[str, EnvEntry] = {
    entry.name: entry
    for entry in (
        EnvEntry(
            "bandit",
            "shoal.envs.bandit:ContextualBandit",
            "gymnasium",
            "contextual bandit: one step per episode, reward 1 for the context's arm (solved: return 1)",
        ),
        EnvEntry(
            "memory",
            "shoal.envs.memory:MemoryEnv",
            "gymnasium",
            "recall the cue of step 0 at the last step; needs a recurrent policy (solved: return 1)",
        ),
        EnvEntry(
            "nested",
            "shoal.envs.nested:NestedDictEnv",
            "gymnasium",
            "nested mixed-dtype Dict observations and Dict actions; terminates and truncates (max return 16)",
        ),
        EnvEntry(
            "squad",
            "shoal.envs.squad:SquadEnv",
            "pettingzoo",
            "3 agents echo private cues; a wrong move kills the agent (solved: return 8 per agent)",
        ),
        EnvEntry(
            "coordination",
            "shoal.envs.coordination:CoordinationEnv",
            "pettingzoo",
            "2 agents rewarded for choosing different actions (needs agent ids or a centralized critic)",
        ),
    )
}


def names() -> list[str]:
    """Names of the built-in envs, sorted."""
    return sorted(REGISTRY)


def make(name: str, **kwargs: Any) -> Any:
    """Instantiate the built-in env ``name`` with ``kwargs`` over its defaults.

    Raises:
        APIUsageError: unknown name (the message lists the valid ones).
    """
    entry = REGISTRY.get(name)
    if entry is None:
        raise APIUsageError(f"no built-in env named {name!r}; built-in envs: {', '.join(names())}")
    return entry.load()(**{**dict(entry.kwargs), **kwargs})

"""Pickle running envs by their state, so that unpickling gives the env exactly where it was.

Most Gymnasium and PettingZoo envs derive from ``EzPickle``, whose own pickling keeps only the constructor
arguments: unpickling it builds a fresh, never-reset env. :func:`dumps_env` pickles such objects by their
``__dict__`` instead (RNGs, physics state, agent lists, wrappers...), which is what
:meth:`~shoal.vector.base.VecEnv.get_state` needs to continue an episode bit for bit. Functions defined inside
other functions and lambdas, which plain pickle refuses, are pickled by value with ``cloudpickle`` (already a
Gymnasium dependency): SuperSuit's wrappers hold such closures (``normalize_obs_v0`` among them), and an env
wrapped by one would otherwise restart its episodes on every resume.

Loading executes pickle: load only snapshots you trust.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import cloudpickle

__all__ = ["dumps_env", "loads_env"]


def _new_object(cls: type) -> Any:
    return cls.__new__(cls)


def _set_dict(obj: Any, state: dict[str, Any]) -> None:
    obj.__dict__.update(state)


class _StatePickler(cloudpickle.Pickler):
    """Pickles ``EzPickle`` instances by their ``__dict__`` rather than by their constructor arguments, and
    local functions and lambdas by value (cloudpickle)."""

    def reducer_override(self, obj: Any) -> Any:
        from gymnasium.utils.ezpickle import EzPickle

        if isinstance(obj, EzPickle) and not isinstance(obj, type) and hasattr(obj, "__dict__"):
            return _new_object, (type(obj),), dict(obj.__dict__), None, None, _set_dict
        return super().reducer_override(obj)


def dumps_env(env: Any) -> bytes:
    """Pickle ``env`` (typically an emulator and the env it wraps) with its running state.

    Raises whatever pickle raises for objects that cannot be pickled (e.g. ``TypeError`` for a pygame
    ``Surface``, an open file or a lock).
    """
    out = io.BytesIO()
    _StatePickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(env)
    return out.getvalue()


def loads_env(raw: bytes) -> Any:
    """Unpickle an env pickled by :func:`dumps_env` (executes pickle: trusted data only)."""
    return pickle.loads(raw)

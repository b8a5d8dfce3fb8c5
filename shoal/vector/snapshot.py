"""Pickle running envs by their state, so that unpickling gives the env exactly where it was.

Most Gymnasium and PettingZoo envs derive from ``EzPickle``, whose own pickling keeps only the constructor
arguments: unpickling it builds a fresh, never-reset env. :func:`dumps_env` pickles such objects by their
``__dict__`` instead (RNGs, physics state, agent lists, wrappers...), which is what
:meth:`~shoal.vector.base.VecEnv.get_state` needs to continue an episode bit for bit.

Functions and classes that cannot be found by name (defined inside another function, or lambdas), which plain
pickle refuses, are pickled by value with ``cloudpickle`` (already a Gymnasium dependency): SuperSuit's wrappers
hold such closures (``normalize_obs_v0``) and classes (``frame_stack_v1``, ``sticky_actions_v0``...), and an env
wrapped by one would otherwise restart its episodes on every resume. Everything else pickles as plain pickle does:
module-level functions and classes by reference (a class of your script stays your script's class), open files,
locks and memoryviews not at all. What is pickled by value holds bytecode, which only the Python version (and
cloudpickle version) that wrote it reads reliably: the checkpoint records both
(:data:`~shoal.train.runs.checkpoint.ENV_STATE_TAG`). CPython only (cloudpickle's hook for this is).

Loading executes pickle: load only snapshots you trust.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import sys
import types
from collections import ChainMap
from typing import Any

import cloudpickle

__all__ = ["dumps_env", "loads_env"]

#: What a function or class pickled by value is made of: code, closure cells, the modules its globals name, the
#: descriptors of a class body. cloudpickle's own table would also copy open text files into ``StringIO`` objects
#: and memoryviews into bytes, which an env cannot continue with: those stay unpicklable, as with plain pickle.
_BY_VALUE_PARTS = (types.CodeType, types.CellType, types.ModuleType, classmethod, staticmethod, property)
#: Interpreter types that rebuilding a function calls and that are not attributes of ``builtins``.
_HIDDEN_TYPES = (types.CodeType, types.CellType)


def _new_object(cls: type) -> Any:
    return cls.__new__(cls)


def _set_dict(obj: Any, state: dict[str, Any]) -> None:
    obj.__dict__.update(state)


def _by_value(obj: Any) -> bool:
    """``obj`` is a function or class plain pickle cannot find by its module and qualified name (defined inside a
    function, a lambda, or itself rebuilt by value from an earlier snapshot), or one of the interpreter's types
    that rebuilding a function calls (:data:`_HIDDEN_TYPES`)."""
    if not isinstance(obj, types.FunctionType | type):
        return False
    if any(obj is hidden for hidden in _HIDDEN_TYPES):  # identity: a metaclass may define __eq__
        return True
    if getattr(obj, "__module__", None) == "builtins":
        return False
    target: Any = sys.modules.get(getattr(obj, "__module__", None) or "")
    for part in getattr(obj, "__qualname__", "").split("."):
        target = getattr(target, part, None)
    return target is not obj


class _StatePickler(cloudpickle.Pickler):
    """Pickles ``EzPickle`` instances by their ``__dict__`` rather than by their constructor arguments, and
    functions and classes plain pickle cannot name by value (cloudpickle); the rest as plain pickle does."""

    dispatch_table = ChainMap({kind: cloudpickle.Pickler.dispatch_table[kind] for kind in _BY_VALUE_PARTS},
                              copyreg.dispatch_table)

    def reducer_override(self, obj: Any) -> Any:
        from gymnasium.utils.ezpickle import EzPickle

        if isinstance(obj, EzPickle) and not isinstance(obj, type) and hasattr(obj, "__dict__"):
            return _new_object, (type(obj),), dict(obj.__dict__), None, None, _set_dict
        if _by_value(obj):
            return super().reducer_override(obj)
        return NotImplemented


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

"""Compile a (nested) Gymnasium space into a :class:`Layout`: one flat row with every leaf at a fixed offset.

A layout is computed once per space and then drives flattening, unflattening and policy construction.

Row format
    * If every leaf stores the same dtype, the row is a 1-D array of that dtype (``Layout.flat_dtype``) and each
      leaf occupies ``[start, stop)`` elements of it. CartPole gives a ``float32[4]`` row; a Tuple of Discretes an
      ``int64[k]`` row.
    * Otherwise the row is raw bytes (``uint8``): each leaf is stored with its own dtype at a byte offset aligned
      to its item size, and the row length is padded to a multiple of the largest item size. Unflattening
      reinterprets the bytes (``ndarray.view(dtype)``), so values survive bit for bit and no copy is made.

Leaf kinds
    ``box`` (any dtype), ``discrete`` (stored as its integer value, ``start`` included, shape ``()``),
    ``multi_discrete``, ``multi_binary`` and ``text`` (fixed length ``max_length`` ``int32`` codes: 0 is padding,
    character ``c`` is ``1 + character_index[c]``). ``Dict`` and ``Tuple`` nest to any depth. ``Sequence`` and
    ``Graph`` have no fixed size and are rejected with a :class:`~shoal.errors.SpaceError` naming the leaf path.

Other spaces
    A space type of another library (e.g. MiniGrid's ``MissionSpace``) is stored as one of the leaf spaces above
    once :func:`register_space` says which one and how to convert its values; until then it is rejected with a
    :class:`~shoal.errors.SpaceError` that points to :func:`register_space`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from shoal.errors import SpaceError

__all__ = ["Layout", "Leaf", "Path", "SpaceHandler", "compile_layout", "format_path", "is_registered", "register_space"]

Path = tuple[str | int, ...]
TEXT_DTYPE = np.dtype(np.int32)


def format_path(path: Path) -> str:
    """Render a leaf path the way a user indexes the sample, e.g. ``obs['inventory'][2]``."""
    return "obs" + "".join(f"[{key!r}]" for key in path)


@dataclass(frozen=True)
class Leaf:
    """One fixed-size array inside a space.

    Attributes:
        path: keys (Dict) and indices (Tuple) from the root space to this leaf; ``()`` for a non-nested space.
        space: the leaf's own Gymnasium space.
        kind: ``"box" | "discrete" | "multi_discrete" | "multi_binary" | "text"``.
        dtype: the numpy dtype the leaf is stored with in the flat row.
        shape: the leaf's shape (``()`` for Discrete).
        start, stop: the leaf's slice of the flat row, in units of ``Layout.flat_dtype``.
        byte_offset: the leaf's offset in bytes from the start of the row.
        source: the space of a type added with :func:`register_space` that this leaf stores as ``space``
            (None for the built-in leaf spaces).
    """

    path: Path
    space: spaces.Space
    kind: str
    dtype: np.dtype
    shape: tuple[int, ...]
    start: int = 0
    stop: int = 0
    byte_offset: int = 0
    source: spaces.Space | None = None

    @property
    def size(self) -> int:
        """Number of elements of the leaf."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def name(self) -> str:
        """Dotted path, convenient for module names and logs (``"inventory.2"``; ``"obs"`` for the root)."""
        return ".".join(str(key) for key in self.path) or "obs"


@dataclass(frozen=True)
class _Node:
    """Skeleton of the nested structure: a Dict (``keys``), a Tuple (``keys is None``) or a leaf index."""

    keys: tuple[str, ...] | None = None
    children: tuple[_Node | int, ...] = field(default_factory=tuple)


@dataclass(frozen=True, eq=False)
class Layout:
    """The compiled form of a space.

    Attributes:
        space: the space it was compiled from.
        leaves: every leaf in depth-first order (Dict keys in the space's order).
        flat_dtype: dtype of a flat row (a shared leaf dtype, or ``uint8`` for a byte row).
        flat_size: number of ``flat_dtype`` elements in a row.
        tree: nested skeleton used by :func:`shoal.emulation.unflatten`.
    """

    space: spaces.Space
    leaves: tuple[Leaf, ...]
    flat_dtype: np.dtype
    flat_size: int
    tree: _Node | int

    @functools.cached_property
    def is_bytes(self) -> bool:
        """True when leaves have mixed dtypes and the row is raw bytes."""
        return self.flat_dtype == np.uint8 and any(leaf.dtype != np.uint8 for leaf in self.leaves)

    @property
    def nbytes(self) -> int:
        """Bytes per flat row."""
        return self.flat_size * self.flat_dtype.itemsize

    @functools.cached_property
    def flat_space(self) -> spaces.Box:
        """A ``Box`` describing one flat row: shape ``(flat_size,)``, dtype ``flat_dtype``."""
        if self.is_bytes:
            return spaces.Box(0, 255, (self.flat_size,), np.uint8)
        low = np.zeros(self.flat_size, dtype=np.float64)
        high = np.zeros(self.flat_size, dtype=np.float64)
        for leaf in self.leaves:
            lo, hi = _leaf_bounds(leaf)
            low[leaf.start : leaf.stop] = lo
            high[leaf.start : leaf.stop] = hi
        return _box(low, high, self.flat_dtype)

    def leaf(self, *path: str | int) -> Leaf:
        """The leaf at ``path``; raises :class:`SpaceError` listing the valid paths otherwise."""
        for leaf in self.leaves:
            if leaf.path == tuple(path):
                return leaf
        valid = ", ".join(format_path(leaf.path) for leaf in self.leaves)
        raise SpaceError(f"no leaf at {format_path(tuple(path))}; the layout's leaves are: {valid}")

    def __iter__(self) -> Iterator[Leaf]:
        return iter(self.leaves)

    def __repr__(self) -> str:
        body = ", ".join(f"{leaf.name}:{leaf.dtype}{list(leaf.shape)}" for leaf in self.leaves)
        return f"Layout(flat={self.flat_dtype}[{self.flat_size}], leaves=[{body}])"


def _box(low: np.ndarray, high: np.ndarray, dtype: np.dtype) -> spaces.Box:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low = np.clip(np.nan_to_num(low, neginf=info.min), info.min, info.max)
        high = np.clip(np.nan_to_num(high, posinf=info.max), info.min, info.max)
    elif dtype == np.bool_:
        return spaces.Box(0, 1, low.shape, np.bool_)
    return spaces.Box(low.astype(dtype), high.astype(dtype), low.shape, dtype)


def _leaf_bounds(leaf: Leaf) -> tuple[np.ndarray | float, np.ndarray | float]:
    space = leaf.space
    if leaf.kind == "box":
        return np.asarray(space.low, np.float64).reshape(-1), np.asarray(space.high, np.float64).reshape(-1)
    if leaf.kind == "discrete":
        return float(space.start), float(space.start + space.n - 1)
    if leaf.kind == "multi_discrete":
        start = np.asarray(space.start, np.float64).reshape(-1)
        return start, start + np.asarray(space.nvec, np.float64).reshape(-1) - 1
    if leaf.kind == "multi_binary":
        return 0.0, 1.0
    return 0.0, float(len(space.character_list))  # text codes


# --------------------------------------------------------------------------------------------------------------
# Leaf discovery: one registration per space type, a fallback error that says how to add a space.
# --------------------------------------------------------------------------------------------------------------


@functools.singledispatch
def _collect(space: spaces.Space, path: Path, out: list[Leaf]) -> _Node | int:
    name = type(space).__name__
    raise SpaceError(
        f"unsupported space {name} at {format_path(path)}: {space!r}. shoal supports Box, Discrete, "
        "MultiDiscrete, MultiBinary, Text, Dict and Tuple. Say how to store it as one of them with "
        f"shoal.emulation.register_space({name}, as_space, encode) (e.g. a text-like space as a Text leaf, "
        "see its docstring), or wrap the env to convert this leaf."
    )


def _add(out: list[Leaf], leaf: Leaf) -> int:
    out.append(leaf)
    return len(out) - 1


@_collect.register
def _(space: spaces.Box, path: Path, out: list[Leaf]) -> int:
    return _add(out, Leaf(path, space, "box", np.dtype(space.dtype), tuple(space.shape)))


@_collect.register
def _(space: spaces.Discrete, path: Path, out: list[Leaf]) -> int:
    return _add(out, Leaf(path, space, "discrete", np.dtype(space.dtype), ()))


@_collect.register
def _(space: spaces.MultiDiscrete, path: Path, out: list[Leaf]) -> int:
    return _add(out, Leaf(path, space, "multi_discrete", np.dtype(space.dtype), tuple(space.shape)))


@_collect.register
def _(space: spaces.MultiBinary, path: Path, out: list[Leaf]) -> int:
    return _add(out, Leaf(path, space, "multi_binary", np.dtype(space.dtype), tuple(space.shape)))


@_collect.register
def _(space: spaces.Text, path: Path, out: list[Leaf]) -> int:
    return _add(out, Leaf(path, space, "text", TEXT_DTYPE, (space.max_length,)))


@_collect.register
def _(space: spaces.Dict, path: Path, out: list[Leaf]) -> _Node:
    if not space.spaces:
        raise SpaceError(f"empty Dict space at {format_path(path)}: give it at least one sub-space")
    keys = tuple(space.spaces)
    return _Node(keys, tuple(_collect(space[key], (*path, key), out) for key in keys))


@_collect.register
def _(space: spaces.Tuple, path: Path, out: list[Leaf]) -> _Node:
    if not space.spaces:
        raise SpaceError(f"empty Tuple space at {format_path(path)}: give it at least one sub-space")
    return _Node(None, tuple(_collect(sub, (*path, i), out) for i, sub in enumerate(space.spaces)))


def _no_fixed_size(space: spaces.Space, path: Path, out: list[Leaf]) -> None:
    raise SpaceError(
        f"{type(space).__name__} space at {format_path(path)} has no fixed size, so it cannot live in a flat row. "
        "Pad it to a fixed-size Box (e.g. a Box of shape (max_len, ...) plus a length or mask leaf) in a wrapper "
        "before emulating."
    )


_collect.register(spaces.Sequence, _no_fixed_size)
_collect.register(spaces.Graph, _no_fixed_size)


# --------------------------------------------------------------------------------------------------------------
# Space types of other libraries, stored as a built-in leaf
# --------------------------------------------------------------------------------------------------------------

_LEAF_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Text)


@dataclass(frozen=True)
class SpaceHandler:
    """How a registered space type is stored (see :func:`register_space`)."""

    as_space: Callable[[spaces.Space], spaces.Space]
    encode: Callable[[spaces.Space, Any], Any] | None = None
    decode: Callable[[spaces.Space, Any], Any] | None = None


_HANDLERS: dict[type, SpaceHandler] = {}


def register_space(
    space_type: type[spaces.Space],
    as_space: Callable[[spaces.Space], spaces.Space],
    encode: Callable[[spaces.Space, Any], Any] | None = None,
    decode: Callable[[spaces.Space, Any], Any] | None = None,
) -> None:
    """Store every space of ``space_type`` (and its subclasses) as a built-in leaf space.

    Args:
        space_type: a ``gymnasium.spaces.Space`` subclass shoal does not know, e.g. MiniGrid's ``MissionSpace``.
        as_space: ``space -> leaf space``: a Box, Discrete, MultiDiscrete, MultiBinary or Text of fixed size that
            holds every value of ``space`` once encoded.
        encode: ``(space, value) -> value of as_space(space)``, applied to every observation of the leaf; None
            stores values as they are (e.g. a ``str`` into a Text leaf).
        decode: ``(space, stored) -> value``, the inverse, used by :func:`shoal.emulation.to_native`; None returns
            the stored space's value (e.g. the ``str`` of a Text leaf).

    For example, MiniGrid's missions as text of at most 96 characters (``unflatten`` gives their ``int32`` codes,
    ``to_native`` the string back; the default policy embeds the codes)::

        import string
        from gymnasium import spaces
        from minigrid.core.mission import MissionSpace
        shoal.emulation.register_space(
            MissionSpace, lambda space: spaces.Text(96, charset=string.ascii_letters + string.digits + " ,.-'"))

    Registration is per process: with the multiprocessing backend's ``spawn``/``forkserver`` contexts, or with Ray,
    register in a module the workers import too (e.g. the one defining the env factory).

    Raises:
        APIUsageError: ``space_type`` is not a Space subclass, or is one shoal already stores.
    """
    from shoal.errors import APIUsageError

    if not (isinstance(space_type, type) and issubclass(space_type, spaces.Space)):
        raise APIUsageError(f"register_space: {space_type!r} is not a gymnasium.spaces.Space subclass")
    builtin = _collect.dispatch(space_type)
    if builtin is not _collect.dispatch(object) and builtin is not _registered_leaf:
        raise APIUsageError(f"register_space: shoal already stores {space_type.__name__} spaces; register a space "
                            "type of your own")
    if not callable(as_space) or (encode is not None and not callable(encode)) or (
            decode is not None and not callable(decode)):
        raise APIUsageError("register_space: as_space, encode and decode must be callables (encode and decode may "
                            "be None)")
    _HANDLERS[space_type] = SpaceHandler(as_space, encode, decode)
    _collect.register(space_type, _registered_leaf)


def is_registered(space_type: type[spaces.Space]) -> bool:
    """Whether :func:`register_space` stores ``space_type`` (itself or through a registered base class)."""
    return any(cls in _HANDLERS for cls in space_type.__mro__)


def space_handler(space: spaces.Space) -> SpaceHandler:
    """The :class:`SpaceHandler` of ``space``'s type (or of its nearest registered base class)."""
    for cls in type(space).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    raise SpaceError(f"no handler registered for {type(space).__name__}")


def _registered_leaf(space: spaces.Space, path: Path, out: list[Leaf]) -> int:
    stored = space_handler(space).as_space(space)
    if not isinstance(stored, _LEAF_SPACES):
        raise SpaceError(
            f"register_space's as_space turned {type(space).__name__} at {format_path(path)} into {stored!r}; it must "
            "return a Box, Discrete, MultiDiscrete, MultiBinary or Text space"
        )
    index = _collect(stored, path, out)
    out[index] = dataclasses.replace(out[index], source=space)
    return index


# --------------------------------------------------------------------------------------------------------------
# Offsets
# --------------------------------------------------------------------------------------------------------------


def compile_layout(space: spaces.Space) -> Layout:
    """Compile ``space`` into a :class:`Layout` (leaf paths, dtypes, shapes and offsets).

    Raises:
        SpaceError: for Sequence/Graph/unknown spaces, empty Dict/Tuple, or a non-space argument.
    """
    if isinstance(space, Layout):
        return space
    if not isinstance(space, spaces.Space):
        raise SpaceError(f"expected a gymnasium.spaces.Space, got {type(space).__name__}: {space!r}")
    raw: list[Leaf] = []
    tree = _collect(space, (), raw)
    dtypes = {leaf.dtype for leaf in raw}
    leaves: list[Leaf] = []
    if len(dtypes) == 1:
        (flat_dtype,) = dtypes
        cursor = 0
        for leaf in raw:
            leaves.append(_placed(leaf, cursor, cursor + leaf.size, cursor * flat_dtype.itemsize))
            cursor += leaf.size
        flat_size = cursor
    else:
        flat_dtype = np.dtype(np.uint8)
        cursor = 0
        widest = 1
        for leaf in raw:
            align = leaf.dtype.itemsize
            widest = max(widest, align)
            cursor = -(-cursor // align) * align
            leaves.append(_placed(leaf, cursor, cursor + leaf.nbytes, cursor))
            cursor += leaf.nbytes
        flat_size = -(-cursor // widest) * widest
    return Layout(space, tuple(leaves), flat_dtype, flat_size, tree)


def _placed(leaf: Leaf, start: int, stop: int, byte_offset: int) -> Leaf:
    return dataclasses.replace(leaf, start=start, stop=stop, byte_offset=byte_offset)


def leaf_value(sample: Any, path: Path) -> Any:
    """Index ``sample`` along ``path``."""
    for key in path:
        sample = sample[key]
    return sample

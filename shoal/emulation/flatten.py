"""Flatten samples of a (nested) space into one flat row, and unflatten rows back into zero-copy views.

``flatten`` writes in place when handed a buffer row, ``unflatten`` returns numpy views of the row it is given
(leading batch dimensions are kept), and ``to_native`` rebuilds a sample exactly as the space would produce it
(Text leaves decoded back to ``str``). The per-leaf encoding is a ``functools.singledispatch`` over space types.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces

from shoal.emulation.layout import Layout, Leaf, _Node, compile_layout, format_path, leaf_value, space_handler
from shoal.errors import SpaceError

__all__ = ["Flattener", "flatten", "flatten_batch", "to_native", "unflatten"]


# --------------------------------------------------------------------------------------------------------------
# Per-leaf encoding: identity for array leaves, integer codes for Text.
# --------------------------------------------------------------------------------------------------------------


@functools.singledispatch
def encode_leaf(space: spaces.Space, value: Any) -> Any:
    """Convert one leaf value into what is stored in the row (identity for array spaces)."""
    return value


@encode_leaf.register
def _(space: spaces.Text, value: Any) -> np.ndarray:
    if not isinstance(value, str):
        raise SpaceError(f"Text leaf expects a str, got {type(value).__name__}")
    if len(value) > space.max_length:
        raise SpaceError(f"Text value of length {len(value)} exceeds max_length={space.max_length}")
    codes = np.zeros(space.max_length, dtype=np.int32)
    charset = space.character_set
    for i, ch in enumerate(value):
        if ch not in charset:
            raise SpaceError(f"character {ch!r} is not in the Text space's charset")
        codes[i] = 1 + int(space.character_index(ch))
    return codes


@functools.singledispatch
def decode_leaf(space: spaces.Space, stored: np.ndarray) -> Any:
    """Inverse of :func:`encode_leaf`: a copy of the stored value in the space's native form."""
    return np.array(stored, copy=True)


@decode_leaf.register
def _(space: spaces.Discrete, stored: np.ndarray) -> Any:
    return stored.dtype.type(stored.item()) if stored.ndim == 0 else np.array(stored, copy=True)


@decode_leaf.register
def _(space: spaces.Text, stored: np.ndarray) -> str:
    chars = space.character_list
    return "".join(chars[int(code) - 1] for code in np.asarray(stored).reshape(-1) if code > 0)


# --------------------------------------------------------------------------------------------------------------
# Writing rows
# --------------------------------------------------------------------------------------------------------------


def _leaf_view(layout: Layout, leaf: Leaf, row: np.ndarray) -> np.ndarray:
    """A typed, shaped view of ``leaf`` inside a 1-D ``row`` (no copy)."""
    view = row[leaf.start : leaf.stop]
    if layout.is_bytes:
        view = view.view(leaf.dtype)
    return view.reshape(leaf.shape)


class Flattener:
    """Writes samples of one layout into one fixed row, with every destination view prepared up front.

    This is the hot path of the emulators: one assignment per leaf, no allocation.

    Args:
        layout: the compiled layout (or a space, compiled on the fly).
        row: 1-D array of ``layout.flat_dtype`` and length ``layout.flat_size`` (a buffer slice is fine).
    """

    def __init__(self, layout: Layout | spaces.Space, row: np.ndarray) -> None:
        self.layout = layout = compile_layout(layout)
        _check_row(layout, row, "row")
        self.row = row
        self._plan: list[tuple[Leaf, np.ndarray, Callable[[Any], Any] | None]] = []
        for leaf in layout.leaves:
            self._plan.append((leaf, _leaf_view(layout, leaf, row), _leaf_encoder(leaf)))
        only = self._plan[0]
        single = len(self._plan) == 1 and only[2] is None and not only[0].path
        self._single = only[1] if single else None

    def write(self, sample: Any) -> np.ndarray:
        """Store ``sample`` into the row and return the row."""
        if self._single is not None:
            try:
                self._single[...] = sample
            except (ValueError, TypeError) as exc:
                raise _bad_value(self.layout.leaves[0], sample, exc) from None
            return self.row
        for leaf, view, encoder in self._plan:
            try:
                value = sample
                for key in leaf.path:
                    value = value[key]
                view[...] = value if encoder is None else encoder(value)
            except (KeyError, IndexError) as exc:
                raise SpaceError(
                    f"sample has no entry at {format_path(leaf.path)} ({exc!r}); it does not match {self.layout}"
                ) from None
            except (ValueError, TypeError) as exc:
                raise _bad_value(leaf, value, exc) from None
        return self.row

    def clear(self) -> None:
        """Zero-fill the row (used for dead and padded slots)."""
        self.row[...] = 0


def _leaf_encoder(leaf: Leaf) -> Callable[[Any], Any] | None:
    """What turns one value of ``leaf`` into what its row stores (None: stored as it is)."""
    encoder = None if encode_leaf.dispatch(type(leaf.space)) is encode_leaf.dispatch(object) else (
        functools.partial(encode_leaf, leaf.space)
    )
    return encoder if leaf.source is None else _registered_encoder(leaf, encoder)


def _registered_encoder(leaf: Leaf, then: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """The encoder of a leaf of a :func:`~shoal.emulation.register_space` type: its handler's, then the stored
    space's own (e.g. Text codes)."""
    convert = space_handler(leaf.source).encode
    source = leaf.source

    def encode(value: Any) -> Any:
        value = value if convert is None else convert(source, value)
        return value if then is None else then(value)

    return encode


def _bad_value(leaf: Leaf, value: Any, exc: Exception) -> SpaceError:
    shape = getattr(value, "shape", None)
    return SpaceError(
        f"value at {format_path(leaf.path)} (shape {shape}, type {type(value).__name__}) does not fit the leaf "
        f"{leaf.space!r} (dtype {leaf.dtype}, shape {leaf.shape}): {exc}"
    )


def _check_row(layout: Layout, flat: np.ndarray, what: str) -> None:
    if not isinstance(flat, np.ndarray):
        raise SpaceError(f"{what} must be a numpy array, got {type(flat).__name__}")
    if flat.dtype != layout.flat_dtype or flat.shape[-1:] != (layout.flat_size,):
        raise SpaceError(
            f"{what} has dtype {flat.dtype} and shape {flat.shape}; this layout needs dtype {layout.flat_dtype} "
            f"and a last dimension of {layout.flat_size} ({layout})"
        )


def flatten(layout: Layout | spaces.Space, sample: Any, out: np.ndarray | None = None) -> np.ndarray:
    """Flatten one ``sample`` into a row of ``layout.flat_dtype[layout.flat_size]``.

    Args:
        layout: a :class:`Layout` or a space (compiled on the fly; compile once for speed).
        sample: a sample of the space.
        out: optional 1-D row to write into; a new zeroed row otherwise.

    Returns:
        The row (``out`` when given). Exact: ``unflatten`` of it gives the same values and dtypes.
    """
    layout = compile_layout(layout)
    row = np.zeros(layout.flat_size, layout.flat_dtype) if out is None else out
    return Flattener(layout, row).write(sample)


def flatten_batch(layout: Layout | spaces.Space, batch: Any, out: np.ndarray | None = None) -> np.ndarray:
    """Flatten ``N`` samples given leaf by leaf into ``N`` rows (the rows :func:`flatten` writes, one per sample).

    Args:
        layout: a :class:`Layout` or a space.
        batch: the space's nesting (``dict``/``tuple``) with, at each leaf, the ``N`` values of that leaf stacked
            along a new first axis (an array ``[N, *leaf.shape]``; a sequence of ``N`` str for a Text leaf).
        out: optional ``[N, flat_size]`` array of ``layout.flat_dtype`` to write into; new zeroed rows otherwise.

    Returns:
        ``[N, flat_size]`` rows of ``layout.flat_dtype`` (``out`` when given).

    Raises:
        SpaceError: a leaf is missing, leaves hold different numbers of samples, or a leaf's values do not fit it.
    """
    layout = compile_layout(layout)
    values = []
    for leaf in layout.leaves:
        try:
            value = leaf_value(batch, leaf.path)
        except (KeyError, IndexError, TypeError) as exc:
            raise SpaceError(f"batch has no entry at {format_path(leaf.path)} ({exc!r}); it does not match "
                             f"{layout}") from None
        values.append(value)
    counts = {len(value) for value in values}
    if len(counts) != 1:
        sizes = ", ".join(f"{format_path(leaf.path)}: {len(v)}" for leaf, v in zip(layout.leaves, values, strict=True))
        raise SpaceError(f"the leaves of a batch hold different numbers of samples ({sizes})")
    (n,) = counts
    rows = np.zeros((n, layout.flat_size), layout.flat_dtype) if out is None else out
    _check_row(layout, rows, "out")
    views = unflatten(layout, rows)  # writable views of every leaf in the rows
    for leaf, value in zip(layout.leaves, values, strict=True):
        encoder = _leaf_encoder(leaf)
        if encoder is not None:  # Text and registered leaves: value by value, as Flattener.write does
            value = np.stack([encoder(v) for v in value]) if n else np.zeros((0, *leaf.shape), leaf.dtype)
        try:
            leaf_value(views, leaf.path)[...] = value
        except (ValueError, TypeError) as exc:
            raise _bad_value(leaf, value, exc) from None
    return rows


# --------------------------------------------------------------------------------------------------------------
# Reading rows
# --------------------------------------------------------------------------------------------------------------


def unflatten(layout: Layout | spaces.Space, flat: np.ndarray) -> Any:
    """Rebuild the nested structure of ``layout`` from flat rows, as views of ``flat`` (no copy).

    Args:
        layout: a :class:`Layout` or a space.
        flat: array of shape ``[*batch, flat_size]`` and dtype ``layout.flat_dtype``.

    Returns:
        ``dict``/``tuple`` nesting as in the space, with one array per leaf of shape ``[*batch, *leaf.shape]``
        and the leaf's dtype. Text leaves come back as their int32 codes (see :func:`to_native`).
    """
    if not isinstance(layout, Layout):
        layout = compile_layout(layout)
    if type(flat) is not np.ndarray or flat.dtype != layout.flat_dtype or flat.shape[-1] != layout.flat_size:
        _check_row(layout, flat, "flat observation")
    records = flat.view(_record_dtype(layout))[..., 0]
    return _builder(layout)([records[name] for name in records.dtype.names])


def _builder(layout: Layout) -> Callable[[list[Any]], Any]:
    """``layout.tree`` compiled into a function from the leaf list to the nested structure (cached)."""
    build = layout.__dict__.get("_builder")
    if build is None:
        build = layout.__dict__["_builder"] = _compile_tree(layout.tree)
    return build


def _compile_tree(node: _Node | int) -> Callable[[list[Any]], Any]:
    if isinstance(node, int):
        return operator.itemgetter(node)
    if all(isinstance(child, int) for child in node.children):
        indices = list(node.children)
        if node.keys is None:
            return lambda values: tuple([values[i] for i in indices])
        pairs = list(zip(node.keys, indices, strict=True))
        return lambda values: {key: values[i] for key, i in pairs}
    children = [_compile_tree(child) for child in node.children]
    if node.keys is None:
        return lambda values: tuple([child(values) for child in children])
    keyed = list(zip(node.keys, children, strict=True))
    return lambda values: {key: child(values) for key, child in keyed}


def _record_dtype(layout: Layout) -> np.dtype:
    """A structured dtype with one field per leaf at its offset: one ``view`` then exposes every leaf."""
    record = layout.__dict__.get("_record_dtype")
    if record is None:
        leaves = layout.leaves
        record = np.dtype({
            "names": [f"leaf{i}" for i in range(len(leaves))],
            "formats": [(leaf.dtype, leaf.shape) for leaf in leaves],
            "offsets": [leaf.byte_offset for leaf in leaves],
            "itemsize": layout.nbytes,
        })
        layout.__dict__["_record_dtype"] = record
    return record


def _build(node: _Node | int, values: list[Any]) -> Any:
    if isinstance(node, int):
        return values[node]
    children = [_build(child, values) for child in node.children]
    if node.keys is None:
        return tuple(children)
    return dict(zip(node.keys, children, strict=True))


def _decoded(leaf: Leaf, stored: np.ndarray) -> Any:
    value = decode_leaf(leaf.space, stored)
    if leaf.source is not None:
        decode = space_handler(leaf.source).decode
        value = value if decode is None else decode(leaf.source, value)
    return value


def to_native(layout: Layout | spaces.Space, row: np.ndarray) -> Any:
    """Decode one flat ``row`` into a sample of the space itself (copies; Text decoded to ``str``)."""
    layout = compile_layout(layout)
    views = unflatten(layout, row)
    values = [_decoded(leaf, leaf_value(views, leaf.path)) for leaf in layout.leaves]
    return _build(layout.tree, values)

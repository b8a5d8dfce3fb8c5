"""Flat action spaces for (nested) native action spaces, and the conversion back before ``env.step``.

The flat action space of a native space is:

* ``Discrete(n)`` when the space is a single ``Discrete`` (a ``start`` offset is added back natively);
* ``MultiDiscrete(nvec)`` when every leaf is discrete: ``Discrete``, ``MultiDiscrete``, ``MultiBinary`` (two choices
  per bit) and integer ``Box`` leaves with finite bounds (``high - low + 1`` choices per element), concatenated
  in leaf order;
* ``Box`` when every leaf is a float ``Box``: leaves flattened and concatenated, dtype the widest float dtype
  (at least ``float32``);
* the **hybrid** layout when both kinds appear: one ``Box`` of shape ``(num_discrete + num_continuous,)``
  whose first ``num_discrete`` entries hold the discrete choices as exact whole numbers (``0 <= a < nvec``) and
  whose remaining entries hold the continuous values. Policies read ``ActionLayout.nvec`` and
  ``ActionLayout.num_continuous`` to build a discrete head and a Gaussian head side by side. That ``Box`` is a
  :class:`HybridBox`: its ``sample()`` draws the discrete entries as whole numbers and its ``contains()`` asks for
  them, as ``step`` does.
"""

from __future__ import annotations

import math
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from shoal.emulation.flatten import _build
from shoal.emulation.layout import Layout, Leaf, compile_layout, format_path, leaf_value
from shoal.errors import APIUsageError, SpaceError

__all__ = ["ActionLayout", "HybridBox"]

_FLOAT32_EXACT = 2**24


class HybridBox(spaces.Box):
    """The flat hybrid action space: a float ``Box`` whose first ``num_discrete`` entries (along the last axis)
    are discrete choices, whole numbers in ``[0, nvec)``, and whose remaining entries are continuous.

    A plain ``Box`` would sample fractional choices that ``step`` rejects. Here :meth:`sample` draws each choice
    uniformly among its ``nvec`` values (as a float of the space's dtype) and the continuous entries as ``Box``
    does, and :meth:`contains` holds a value to the rule ``step`` applies to the choices. ``step`` does not check
    the continuous entries against their bounds (the env clips or rejects them); ``contains`` does, as ``Box``
    does, so whatever ``contains`` accepts ``step`` accepts too.

    It is still a ``Box`` (``isinstance``, ``repr``, equality with other hybrid spaces of the same bounds, the
    ``gymnasium.spaces`` utilities); :func:`gymnasium.vector.utils.batch_space` gives a ``HybridBox`` of shape
    ``(n, *shape)`` whose rows sample the same way.

    Args:
        low, high: bounds; along the last axis the first ``num_discrete`` lows are 0 and highs ``nvec - 1``.
        shape: ``(num_discrete + num_continuous,)``, or with leading batch axes.
        dtype: a float dtype that holds every choice exactly.
        num_discrete: number of discrete entries at the start of the last axis.
    """

    def __init__(self, low: Any, high: Any, shape: tuple[int, ...] | None, dtype: Any, num_discrete: int,
                 seed: int | np.random.Generator | None = None) -> None:
        super().__init__(low, high, shape, dtype, seed)
        if not 0 < num_discrete <= self.shape[-1]:
            raise SpaceError(f"HybridBox: num_discrete={num_discrete} must be between 1 and the last axis's "
                             f"{self.shape[-1]} entries")
        self.num_discrete = int(num_discrete)

    @property
    def nvec(self) -> np.ndarray:
        """``int64[..., num_discrete]`` the number of choices of each discrete entry."""
        return self.high[..., : self.num_discrete].astype(np.int64) + 1

    def sample(self, mask: None = None, probability: None = None) -> np.ndarray:
        """A random flat action: whole-number choices, continuous entries as ``Box.sample`` draws them."""
        out = super().sample(mask, probability)
        out[..., : self.num_discrete] = self.np_random.integers(0, self.nvec)
        return out

    def contains(self, x: Any) -> bool:
        """Whether ``x`` lies within the bounds and every discrete entry is a whole number."""
        if not super().contains(x):
            return False
        choices = np.asarray(x)[..., : self.num_discrete]
        return bool((choices == np.floor(choices)).all())

    def __eq__(self, other: object, /) -> bool:
        return super().__eq__(other) and getattr(other, "num_discrete", None) == self.num_discrete


@batch_space.register(HybridBox)
def _batch_hybrid(space: HybridBox, n: int = 1) -> HybridBox:
    """``n`` stacked copies of ``space`` (gymnasium's vector utilities), still sampling whole-number choices."""
    low = np.broadcast_to(space.low, (n, *space.shape)).copy()
    high = np.broadcast_to(space.high, (n, *space.shape)).copy()
    return HybridBox(low, high, low.shape, space.dtype, space.num_discrete, seed=deepcopy(space.np_random))


@dataclass(frozen=True)
class _Segment:
    leaf: Leaf
    start: int  # first entry in the flat action
    stop: int
    offset: np.ndarray | int  # added back to discrete choices (space.start / Box.low)


class ActionLayout:
    """How a native action space maps onto one flat action.

    Attributes:
        space: the native action space.
        layout: its compiled :class:`Layout` (leaf paths and shapes).
        kind: ``"discrete" | "multi_discrete" | "continuous" | "hybrid"``.
        flat_space: the flat action space (see module docstring).
        nvec: ``int64[num_discrete]`` number of choices per discrete entry (empty when there are none).
        num_discrete, num_continuous: entries of each kind in a flat action.
        low, high: bounds of the continuous entries (``float[num_continuous]``).
    """

    def __init__(self, space: spaces.Space) -> None:
        self.space = space
        self.layout: Layout = compile_layout(space)
        discrete: list[tuple[Leaf, np.ndarray, np.ndarray]] = []
        continuous: list[Leaf] = []
        for leaf in self.layout.leaves:
            if leaf.source is not None:
                raise SpaceError(f"{type(leaf.source).__name__} action leaf at {format_path(leaf.path)} is not "
                                 "supported: register_space stores observations; map these actions to a Discrete, "
                                 "MultiDiscrete or Box in a wrapper")
            if leaf.kind == "text":
                raise SpaceError(f"Text action leaf at {format_path(leaf.path)} is not supported: map text "
                                 "actions to a Discrete or MultiDiscrete choice in a wrapper")
            if leaf.kind == "box" and np.issubdtype(leaf.dtype, np.floating):
                continuous.append(leaf)
            else:
                nvec, offset = _discrete_choices(leaf)
                discrete.append((leaf, nvec, offset))
        self.nvec = np.concatenate([n for _, n, _ in discrete]).astype(np.int64) if discrete else np.zeros(0, np.int64)
        self.num_discrete = int(self.nvec.size)
        self.num_continuous = sum(leaf.size for leaf in continuous)
        self._segments: list[_Segment] = []
        cursor = 0
        for leaf, nvec, offset in discrete:
            self._segments.append(_Segment(leaf, cursor, cursor + nvec.size, offset))
            cursor += nvec.size
        for leaf in continuous:
            self._segments.append(_Segment(leaf, cursor, cursor + leaf.size, 0))
            cursor += leaf.size
        self._segments.sort(key=lambda seg: self.layout.leaves.index(seg.leaf))
        self.low = np.concatenate([np.asarray(lf.space.low, np.float64).reshape(-1) for lf in continuous]) \
            if continuous else np.zeros(0)
        self.high = np.concatenate([np.asarray(lf.space.high, np.float64).reshape(-1) for lf in continuous]) \
            if continuous else np.zeros(0)
        float_dtype = np.result_type(np.float32, *[leaf.dtype for leaf in continuous])
        root_discrete = isinstance(space, spaces.Discrete)
        if not continuous:
            self.kind = "discrete" if root_discrete else "multi_discrete"
            self.flat_space: spaces.Space = (
                spaces.Discrete(int(space.n)) if root_discrete else spaces.MultiDiscrete(self.nvec)
            )
        elif not discrete:
            self.kind = "continuous"
            self.flat_space = spaces.Box(self.low.astype(float_dtype), self.high.astype(float_dtype),
                                         (self.num_continuous,), float_dtype)
        else:
            self.kind = "hybrid"
            if float_dtype == np.float32 and self.nvec.max() > _FLOAT32_EXACT:
                float_dtype = np.dtype(np.float64)
            low = np.concatenate([np.zeros(self.num_discrete), self.low])
            high = np.concatenate([self.nvec - 1, self.high])
            self.flat_space = HybridBox(low.astype(float_dtype), high.astype(float_dtype), low.shape, float_dtype,
                                        self.num_discrete)
        self.flat_dtype = np.dtype(self.flat_space.dtype)
        self.flat_shape: tuple[int, ...] = tuple(self.flat_space.shape)
        self._root_discrete_start = int(space.start) if root_discrete else None

    # ----------------------------------------------------------------------------------------------------------

    def to_native(self, flat: np.ndarray) -> Any:
        """Convert one flat action (shape ``flat_shape``) into a sample of the native action space."""
        if self._root_discrete_start is not None:
            return np.int64(int(flat) + self._root_discrete_start)
        flat = np.asarray(flat)
        values = []
        for seg in self._segments:
            part = flat[seg.start : seg.stop]
            leaf = seg.leaf
            if seg.leaf.kind == "box" and np.issubdtype(leaf.dtype, np.floating):
                values.append(part.reshape(leaf.shape).astype(leaf.dtype))
            elif leaf.kind == "discrete":
                values.append(np.int64(int(part[0]) + int(seg.offset)))
            else:
                values.append((part.astype(np.int64) + seg.offset).reshape(leaf.shape).astype(leaf.dtype))
        return _build(self.layout.tree, values)

    def from_native(self, sample: Any) -> np.ndarray:
        """Convert a native action into its flat form (inverse of :meth:`to_native`)."""
        out = np.zeros(self.flat_shape, self.flat_dtype)
        if self._root_discrete_start is not None:
            out[...] = int(sample) - self._root_discrete_start
            return out
        for seg in self._segments:
            value = np.asarray(leaf_value(sample, seg.leaf.path)).reshape(-1)
            out[seg.start : seg.stop] = value - seg.offset if seg.leaf.kind != "box" or not np.issubdtype(
                seg.leaf.dtype, np.floating) else value
        return out

    def to_native_batch(self, flat: np.ndarray) -> Any:
        """:meth:`to_native` of ``N`` flat actions ``[N, *flat_shape]`` at once: the native space's nesting with, at
        each leaf, its ``N`` values stacked ``[N, *leaf.shape]`` (in the leaf's dtype; ``int64`` for Discrete)."""
        flat = np.asarray(flat)
        n = len(flat)
        if self._root_discrete_start is not None:
            return flat.reshape(n).astype(np.int64) + self._root_discrete_start
        values = []
        for seg in self._segments:
            part, leaf = flat[:, seg.start : seg.stop], seg.leaf
            if leaf.kind == "box" and np.issubdtype(leaf.dtype, np.floating):
                values.append(part.reshape(n, *leaf.shape).astype(leaf.dtype))
            elif leaf.kind == "discrete":
                values.append(part[:, 0].astype(np.int64) + int(seg.offset))
            else:
                values.append((part.astype(np.int64) + seg.offset).reshape(n, *leaf.shape).astype(leaf.dtype))
        return _build(self.layout.tree, values)

    def from_native_batch(self, batch: Any) -> np.ndarray:
        """:meth:`from_native` of ``N`` native actions given leaf by leaf (the nesting of :meth:`to_native_batch`):
        ``[N, *flat_shape]`` flat actions."""
        if self._root_discrete_start is not None:
            return (np.asarray(batch).reshape(-1) - self._root_discrete_start).astype(self.flat_dtype)
        leaves = [np.asarray(leaf_value(batch, seg.leaf.path)) for seg in self._segments]
        n = len(leaves[0])
        out = np.zeros((n, *self.flat_shape), self.flat_dtype)
        for seg, value in zip(self._segments, leaves, strict=True):
            value = value.reshape(n, -1)
            floating = seg.leaf.kind == "box" and np.issubdtype(seg.leaf.dtype, np.floating)
            out[:, seg.start : seg.stop] = value if floating else value - seg.offset
        return out

    def validate(self, actions: np.ndarray, num_rows: int, live: np.ndarray | None = None,
                 names: list[str] | None = None) -> np.ndarray:
        """Check a batch of flat actions ``[num_rows, *flat_shape]``; return it as an ndarray.

        Discrete entries of live rows must be whole numbers in ``[0, nvec)``. Errors name the offending row (or
        agent, when ``names`` is given) and the expected shape/range.
        """
        actions = np.asarray(actions)
        expected = (num_rows, *self.flat_shape)
        if actions.shape != expected:
            if actions.size == math.prod(expected) and actions.ndim <= len(expected):
                actions = actions.reshape(expected)
            else:
                raise APIUsageError(f"actions have shape {actions.shape}; expected {expected} "
                                    f"(one flat action per slot for {self.flat_space!r})")
        if self.kind in ("discrete", "multi_discrete"):
            if actions.dtype.kind not in "iub":
                raise APIUsageError(f"actions have dtype {actions.dtype}; {self.flat_space!r} needs integer "
                                    "actions (cast with .astype(np.int64))")
            rows = actions if live is None else actions[live]
            if self.kind == "discrete":
                n = self.flat_space.n
                if rows.size and (rows.min() < 0 or rows.max() >= n):
                    self._range_error(actions, live, names, np.int64(n))
            elif ((rows < 0) | (rows >= self.nvec)).any():
                self._range_error(actions, live, names, self.nvec)
        elif self.kind == "hybrid":
            part = actions[:, : self.num_discrete] if live is None else actions[live, : self.num_discrete]
            if (part != np.round(part)).any() or (part < 0).any() or (part >= self.nvec).any():
                self._range_error(actions, live, names, self.nvec)
        elif not np.issubdtype(actions.dtype, np.number):
            raise APIUsageError(f"actions have dtype {actions.dtype}; {self.flat_space!r} needs numbers")
        return actions

    def _range_error(self, actions: np.ndarray, live: np.ndarray | None, names: list[str] | None,
                     nvec: Any) -> None:
        """Raise for the first live row whose discrete entries are not whole numbers in ``[0, nvec)``, naming
        the row (or agent), the offending entry and that entry's own range."""
        rows = np.arange(len(actions)) if live is None else np.flatnonzero(live)
        nvec = np.asarray(nvec)
        for row in rows:
            full = np.asarray(actions[row])
            a = full[: self.num_discrete] if self.kind == "hybrid" else full
            bad = (a < 0) | (a >= nvec) | (a != np.round(a))
            if not bad.any():
                continue
            who = names[row] if names else f"slot {row}"
            if nvec.ndim == 0:  # one Discrete choice
                raise APIUsageError(f"action {a.item()!r} for {who} is outside {self.flat_space!r}: it must be a "
                                    f"whole number in [0, {int(nvec)})")
            entry = int(np.flatnonzero(bad.reshape(-1))[0])
            value, n = a.reshape(-1)[entry], int(nvec.reshape(-1)[entry])
            which = f"the discrete entries 0..{nvec.size - 1}" if self.kind == "hybrid" else "the entries"
            shown = "[" + ", ".join(str(x) for x in full.reshape(-1)) + "]"  # float32 values as they print
            raise APIUsageError(
                f"action {shown} for {who} is outside {self.flat_space!r}: entry {entry} is {value!s} but "
                f"must be a whole number in [0, {n}) ({which} take whole numbers below nvec="
                f"{nvec.reshape(-1).tolist()})")

    def __repr__(self) -> str:
        return f"ActionLayout(kind={self.kind!r}, flat={self.flat_space!r})"


def _discrete_choices(leaf: Leaf) -> tuple[np.ndarray, np.ndarray]:
    space = leaf.space
    if leaf.kind == "discrete":
        return np.array([space.n], np.int64), np.array(space.start)
    if leaf.kind == "multi_discrete":
        return np.asarray(space.nvec, np.int64).reshape(-1), np.asarray(space.start, np.int64).reshape(-1)
    if leaf.kind == "multi_binary":
        return np.full(leaf.size, 2, np.int64), np.zeros(leaf.size, np.int64)
    low = np.asarray(space.low).reshape(-1)
    high = np.asarray(space.high).reshape(-1)
    if not (np.isfinite(low.astype(np.float64)).all() and np.isfinite(high.astype(np.float64)).all()):
        raise SpaceError(f"integer Box action at {format_path(leaf.path)} needs finite bounds to be treated as "
                         "discrete choices")
    return (high.astype(np.int64) - low.astype(np.int64) + 1), low.astype(np.int64)

"""Finding NaN and infinity in rewards and flat observation rows, cheaply enough to do it on every step.

Only float leaves can hold them: a layout without float leaves is never scanned. A row whose leaves are all floats
is scanned whole; in a byte row (mixed dtypes, see :mod:`shoal.emulation.layout`) each float leaf is scanned through
a view of its bytes. The native module scans a contiguous float array in a few nanoseconds plus one call; without
it (or for other dtypes and layouts) numpy does the work.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from shoal.emulation.layout import Layout, Leaf, format_path
from shoal.errors import NonFiniteError

try:
    from shoal.emulation._rowcopy import first_nonfinite as _native_first
except ImportError:  # built without a C compiler, or an older build of the module
    _native_first = None

__all__ = ["FiniteCheck", "first_nonfinite", "nonfinite_error", "reward_is_finite"]


def first_nonfinite(values: np.ndarray) -> int:
    """The C-order index of the first NaN or infinity of the float array ``values``, or -1."""
    if _native_first is not None:
        try:
            return _native_first(values)
        except TypeError:  # another dtype or layout than the native scan takes
            pass
    values = np.asarray(values)
    if values.dtype.kind not in "fc":
        return -1
    if values.size <= _SMALL and values.dtype.kind == "f":
        # A few values are summed faster in Python than numpy can start a ufunc: NaN and infinity carry through
        # a sum (inf - inf is NaN), so a finite total clears them all.
        flat = values.reshape(-1).tolist()
        if math.isfinite(sum(flat)):
            return -1
        return next((i for i, v in enumerate(flat) if not math.isfinite(v)), -1)  # -1: the sum overflowed
    bad = ~np.isfinite(values.reshape(-1))
    return int(np.argmax(bad)) if bad.any() else -1


_SMALL = 64  # up to this many values, first_nonfinite sums them in Python (without the native module)


def reward_is_finite(reward: Any) -> bool:
    """False when ``reward`` (one number) is a NaN or an infinity."""
    try:
        return math.isfinite(reward)
    except (TypeError, ValueError, OverflowError):  # e.g. a huge int: finite
        return True


class FiniteCheck:
    """Scans flat observation rows of ``layout`` for NaN and infinity.

    Attributes:
        active: False when the layout has no float leaf (nothing to scan, every call returns at once).
        whole: every leaf is a float of the row's own dtype, so a row is scanned as one float array.
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        floats = [leaf for leaf in layout.leaves if leaf.dtype.kind == "f"]
        self.active = bool(floats)
        self.whole = self.active and not layout.is_bytes  # every leaf a float of the row's own dtype
        self._floats = floats

    def any_bad(self, rows: np.ndarray) -> bool:
        """Whether ``rows`` (any shape, ``flat_size`` entries per row) hold a NaN or an infinity: the quick test
        to run on every batch (one native scan for a row of floats)."""
        if self.whole:
            return first_nonfinite(rows) >= 0
        return self.active and self.first_bad(rows) is not None

    def first_bad(self, rows: np.ndarray) -> tuple[int, str, float] | None:
        """Where the first NaN or infinity of ``rows`` (``[R, flat_size]`` or one ``[flat_size]`` row) is.

        Returns:
            None when every float is finite, else ``(row, path, value)``: the row index (0 for a single row), the
            leaf path with the element's index (e.g. ``obs['pos'][1]``) and the value.
        """
        if not self.active:
            return None
        rows = rows.reshape(-1, self.layout.flat_size)
        if self.whole:
            index = first_nonfinite(rows)
            if index < 0:
                return None
            row, column = divmod(index, self.layout.flat_size)
            leaf = next(leaf for leaf in self._floats if leaf.start <= column < leaf.stop)
            return row, _element_path(leaf, column - leaf.start), float(rows[row, column])
        found = None
        for leaf in self._floats:  # a byte row: each float leaf through a view of its bytes
            values = rows[:, leaf.byte_offset : leaf.byte_offset + leaf.nbytes].view(leaf.dtype)
            bad = ~np.isfinite(values)
            if bad.any():
                row, element = np.unravel_index(int(np.argmax(bad)), bad.shape)
                if found is None or row < found[0]:
                    found = (int(row), _element_path(leaf, int(element)), float(values[row, element]))
        return found


def _element_path(leaf: Leaf, element: int) -> str:
    """``obs['pos'][1]``: the leaf's path, and the element's index inside it unless the leaf holds one value."""
    path = format_path(leaf.path)
    if leaf.size == 1:
        return path
    index = np.unravel_index(element, leaf.shape)
    return path + "".join(f"[{int(i)}]" for i in index)


def nonfinite_error(who: str, field: str, value: Any, when: str, fix: str) -> NonFiniteError:
    """The error for a NaN or infinite ``value`` in ``field`` (``"reward"``, an observation path such as
    ``obs['pos'][1]``, or ``"final_observation ..."``), found in ``who`` ``when``; ``fix`` says how to turn the
    check off."""
    shown = "NaN" if value != value else str(value)
    what = "reward" if field == "reward" else f"observation {field}" if field.startswith("obs") else field
    return NonFiniteError(
        f"{who} returned a non-finite {what} = {shown} {when}. NaN and infinity poison training; fix the env (e.g. "
        f"guard its divisions and logs, clip what overflows) or wrap it to replace them. {fix}", field=field)

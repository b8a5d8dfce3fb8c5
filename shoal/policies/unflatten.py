"""Unflatten flat observation rows into typed torch tensors without copying: the torch twin of
:func:`shoal.emulation.unflatten`.

A flat row either has one shared dtype (each leaf is a slice of it) or is raw bytes (``uint8``) in which each leaf
sits at an aligned byte offset with its own dtype (see :mod:`shoal.emulation.layout`). Slicing a tensor and
reinterpreting bytes with ``Tensor.view(dtype)`` are both views, so unflattening a batch costs no copy.

Every numpy dtype a layout can hold has a torch twin, ``uint16``/``uint32``/``uint64`` included (torch >= 2.3
stores them and converts them to float; few other kernels accept them, which is why the encoders cast first).

ONNX has no byte reinterpretation in the opsets torch exports to, so :func:`leaf_tensors` also has a *portable*
mode that rebuilds each leaf's values from its bytes with integer and float arithmetic only (used while exporting
a policy; see :func:`shoal.policies.export_onnx`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from shoal.emulation.flatten import _build
from shoal.emulation.layout import Layout, Leaf, compile_layout, format_path
from shoal.errors import SpaceError

__all__ = ["RowReader", "check_rows", "describe_layout", "leaf_tensors", "torch_dtype", "unflatten_tensor"]

_TORCH_DTYPES: dict[np.dtype, torch.dtype] = {
    np.dtype(np.bool_): torch.bool,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.uint16): torch.uint16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.uint32): torch.uint32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.uint64): torch.uint64,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}


def torch_dtype(dtype: np.dtype | type, path: tuple = ()) -> torch.dtype:
    """The torch dtype storing the same bits as numpy ``dtype``.

    Raises:
        SpaceError: for dtypes torch cannot hold (complex, strings, ...), naming the leaf at ``path``.
    """
    try:
        return _TORCH_DTYPES[np.dtype(dtype)]
    except KeyError:
        supported = ", ".join(str(d) for d in _TORCH_DTYPES)
        raise SpaceError(f"leaf {format_path(path)} has dtype {np.dtype(dtype)}, which shoal.policies cannot "
                         f"read; supported dtypes: {supported}") from None


def describe_layout(layout: Layout, limit: int = 12) -> str:
    """A one-line summary of a layout's leaves (path, dtype, shape) for error messages."""
    parts = [f"{format_path(leaf.path)}: {leaf.dtype}{list(leaf.shape)}" for leaf in layout.leaves[:limit]]
    if len(layout.leaves) > limit:
        parts.append(f"... {len(layout.leaves) - limit} more")
    return ", ".join(parts)


def check_rows(layout: Layout, flat: Any, what: str = "observation") -> None:
    """Raise :class:`SpaceError` unless ``flat`` is a tensor ``[*batch, flat_size]`` of the layout's flat dtype.

    The message names the expected width and dtype and every leaf (path, dtype, shape) the row must hold.
    """
    if not isinstance(flat, Tensor):
        raise SpaceError(f"{what} must be a torch.Tensor of shape [batch, {layout.flat_size}], got "
                         f"{type(flat).__name__} (convert with torch.from_numpy(obs))")
    expected = torch_dtype(layout.flat_dtype)
    if flat.dim() == 0 or flat.shape[-1] != layout.flat_size or flat.dtype != expected:
        kind = "raw bytes holding mixed-dtype leaves" if layout.is_bytes else "one shared dtype"
        raise SpaceError(
            f"{what} rows have shape {list(flat.shape)} and dtype {flat.dtype}; this layout needs shape "
            f"[*batch, {layout.flat_size}] and dtype {expected} ({kind}). Leaves: {describe_layout(layout)}"
        )


class RowReader:
    """Cuts flat rows of one layout into per-leaf tensors; everything about the layout is resolved up front, so
    :meth:`read` touches only plain attributes (cheap, and traceable by ``torch.compile``/``torch.export``).

    Args:
        layout: the observation layout.
    """

    def __init__(self, layout: Layout) -> None:
        self.leaves = layout.leaves
        self.is_bytes = bool(layout.is_bytes)
        self.widest = max(leaf.dtype.itemsize for leaf in layout.leaves)
        self.slices = tuple((leaf.start, leaf.stop, torch_dtype(leaf.dtype, leaf.path), tuple(leaf.shape))
                            for leaf in layout.leaves)

    def read(self, flat: Tensor, *, portable: bool = False) -> list[Tensor]:
        """One tensor per leaf (``layout.leaves`` order), each ``[*batch, *leaf.shape]``.

        Args:
            flat: ``[*batch, flat_size]`` rows of the layout's flat dtype (not checked: see :func:`check_rows`).
            portable: rebuild byte-row leaves arithmetically instead of ``view(dtype)`` (for ONNX export). Values
                are the same, dtypes widened: ``int64`` for integer leaves (``uint64`` above ``2**63`` wraps),
                ``float64`` for float leaves, ``bool`` for bool leaves. Copies; never use it on the hot path.

        Returns:
            Views of ``flat`` with each leaf's own dtype (``portable=False``).
        """
        batch = tuple(flat.shape[:-1])
        if self.is_bytes and not portable:
            flat = self._aligned(flat)
        out = []
        for leaf, (start, stop, dtype, shape) in zip(self.leaves, self.slices, strict=True):
            part = flat[..., start:stop]
            if self.is_bytes:
                part = _decode_bytes(part, leaf) if portable else part.view(dtype)
            out.append(part.reshape(batch + shape))
        return out

    def _aligned(self, flat: Tensor) -> Tensor:
        """``flat`` itself when every leaf can be reinterpreted in place, else a contiguous copy (rare)."""
        if self.widest == 1 or torch.compiler.is_compiling():  # compiled graphs assume aligned rows (view checks)
            return flat
        strides_ok = flat.stride(-1) == 1 and all(s % self.widest == 0 for s in flat.stride()[:-1])
        if strides_ok and flat.storage_offset() % self.widest == 0:
            return flat
        return flat.contiguous().clone() if flat.is_contiguous() else flat.contiguous()


def leaf_tensors(layout: Layout, flat: Tensor, *, portable: bool = False) -> list[Tensor]:
    """``RowReader(layout).read(flat, portable=portable)``: one tensor per leaf, views of ``flat``."""
    return RowReader(layout).read(flat, portable=portable)


def unflatten_tensor(layout: Layout | Any, flat: Tensor) -> Any:
    """Rebuild the nested structure of ``layout`` from flat rows as tensor views of ``flat`` (no copy).

    Args:
        layout: a :class:`~shoal.emulation.layout.Layout` or a space (compiled on the fly).
        flat: ``[*batch, flat_size]`` tensor of the layout's flat dtype (``uint8`` bytes for a mixed layout).

    Returns:
        ``dict``/``tuple`` nesting as in the space with one tensor per leaf, shape ``[*batch, *leaf.shape]`` and
        the leaf's dtype (Text leaves as their ``int32`` codes). Each shares storage with ``flat``, except when
        ``flat`` is a byte tensor whose strides or offset break the leaves' alignment (then one copy is made).

    Raises:
        SpaceError: ``flat`` is not a tensor, or its width or dtype does not match the layout.
    """
    layout = compile_layout(layout)
    check_rows(layout, flat, "flat observation")
    return _build(layout.tree, leaf_tensors(layout, flat))


# --------------------------------------------------------------------------------------------------------------
# Portable byte decoding (export only): little-endian bytes -> values with integer/float arithmetic.
# --------------------------------------------------------------------------------------------------------------

_FLOAT_BITS = {2: (5, 10), 4: (8, 23), 8: (11, 52)}  # item size -> (exponent bits, mantissa bits)


def _decode_bytes(part: Tensor, leaf: Leaf) -> Tensor:
    """``[*batch, size * itemsize]`` uint8 -> ``[*batch, size]`` values of ``leaf.dtype`` (widened)."""
    k = leaf.dtype.itemsize
    if leaf.dtype == np.bool_:
        return part != 0
    if k == 1:
        value = part.to(torch.int64)
        return torch.where(value >= 128, value - 256, value) if leaf.dtype == np.int8 else value
    grouped = part.reshape(*part.shape[:-1], part.shape[-1] // k, k).to(torch.int64)
    weights = torch.tensor([256**i if i < 7 else 0 for i in range(k)], dtype=torch.int64)
    bits = (grouped * weights).sum(-1)
    if k == 8:  # the top byte times 2**56 overflows int64: add it as a wrapped signed byte instead
        top = grouped[..., 7]
        bits = bits + torch.where(top >= 128, top - 256, top) * (2**56)
    if leaf.dtype.kind in "iu":
        if leaf.dtype.kind == "i" and k < 8:
            bits = torch.where(bits >= 2 ** (8 * k - 1), bits - 2 ** (8 * k), bits)
        return bits
    return _bits_to_float(bits, k)


def _bits_to_float(bits: Tensor, k: int) -> Tensor:
    """IEEE-754 bit patterns (int64; the top bit of float64 patterns as the int64 sign) -> float64 values."""
    exp_bits, man_bits = _FLOAT_BITS[k]
    if k == 8:
        negative = bits < 0
        magnitude = torch.where(negative, (bits + 2**62) + 2**62, bits)  # clear the sign bit without overflow
    else:
        negative = bits >= 2 ** (8 * k - 1)
        magnitude = torch.where(negative, bits - 2 ** (8 * k - 1), bits)
    exponent = torch.div(magnitude, 2**man_bits, rounding_mode="floor")
    mantissa = (magnitude - exponent * 2**man_bits).to(torch.float64)
    bias = 2 ** (exp_bits - 1) - 1
    top = 2**exp_bits - 1
    normal = exponent > 0
    scale_exp = torch.where(normal, exponent, torch.ones_like(exponent)) - (bias + man_bits)
    significand = torch.where(normal, mantissa + float(2**man_bits), mantissa)
    value = significand * torch.pow(torch.full_like(mantissa, 2.0), scale_exp.to(torch.float64))
    special = torch.where(mantissa == 0, torch.full_like(value, math.inf), torch.full_like(value, math.nan))
    value = torch.where(exponent == top, special, value)
    return torch.where(negative, -value, value)

"""unflatten_tensor: the torch twin of shoal.emulation.unflatten, zero-copy and bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings

from shoal.emulation import compile_layout, unflatten
from shoal.emulation.layout import leaf_value
from shoal.errors import SpaceError
from shoal.policies import unflatten_tensor
from shoal.policies.unflatten import leaf_tensors, torch_dtype
from tests.policies.helpers import sample_rows
from tests.strategies import nested_spaces
from tests.zoo import SPACE_ZOO

UNSIGNED = spaces.Dict(
    {
        "u16": spaces.Box(0, 2**16 - 1, (3,), np.uint16),
        "u32": spaces.Box(0, 2**32 - 1, (2,), np.uint32),
        "u64": spaces.Box(0, 2**62, (2,), np.uint64),
        "u8": spaces.Box(0, 255, (3,), np.uint8),
    }
)
UNSIGNED_ONLY = spaces.Box(0, 2**32 - 1, (4, 2), np.uint32)


def _inside(view: torch.Tensor, flat: torch.Tensor) -> bool:
    start = flat.untyped_storage().data_ptr()
    return start <= view.data_ptr() < start + flat.untyped_storage().nbytes()


def _assert_matches_numpy(space: spaces.Space, flat: torch.Tensor) -> None:
    layout = compile_layout(space)
    tree = unflatten_tensor(layout, flat)
    expected = unflatten(layout, flat.numpy())
    for leaf in layout.leaves:
        got, want = leaf_value(tree, leaf.path), leaf_value(expected, leaf.path)
        assert isinstance(got, torch.Tensor), leaf.name
        assert got.dtype == torch_dtype(leaf.dtype), leaf.name
        assert tuple(got.shape) == want.shape == (*flat.shape[:-1], *leaf.shape), leaf.name
        assert _inside(got, flat), f"{leaf.name} was copied"
        assert got.numpy().tobytes() == np.ascontiguousarray(want).tobytes(), leaf.name


@pytest.mark.parametrize("name", sorted(SPACE_ZOO))
def test_zoo_matches_numpy_unflatten_without_copying(name: str) -> None:
    _assert_matches_numpy(SPACE_ZOO[name], sample_rows(SPACE_ZOO[name], 4))


@pytest.mark.parametrize("space", [UNSIGNED, UNSIGNED_ONLY], ids=["mixed_unsigned", "uint32_only"])
def test_unsigned_dtypes_survive(space: spaces.Space) -> None:
    flat = sample_rows(space, 5, seed=3)
    _assert_matches_numpy(space, flat)
    leaves = leaf_tensors(compile_layout(space), flat)
    assert all(leaf.float().isfinite().all() for leaf in leaves)  # convertible to float for the encoders


def test_keeps_leading_dims_and_accepts_a_single_row() -> None:
    space = SPACE_ZOO["nested"]
    rows = sample_rows(space, 6)
    _assert_matches_numpy(space, rows.reshape(2, 3, -1))
    single = unflatten_tensor(compile_layout(space), rows[4])
    assert single["agent"]["pos"].shape == (2,)
    assert single["agent"]["hp"].shape == ()


def test_rows_of_a_larger_buffer_are_views() -> None:
    space = SPACE_ZOO["mixed_dtypes"]
    buffer = sample_rows(space, 8)
    _assert_matches_numpy(space, buffer[2:6])


def test_misaligned_byte_rows_are_still_decoded_exactly() -> None:
    space = SPACE_ZOO["mixed_dtypes"]
    layout = compile_layout(space)
    rows = sample_rows(space, 3)
    raw = torch.zeros(3 * layout.flat_size + 1, dtype=torch.uint8)
    raw[1:] = rows.reshape(-1)
    shifted = raw[1:].reshape(3, layout.flat_size)  # storage offset 1: no aligned view exists
    tree = unflatten_tensor(layout, shifted)
    for leaf in layout.leaves:
        want = unflatten(layout, rows.numpy())
        assert leaf_value(tree, leaf.path).numpy().tobytes() == leaf_value(want, leaf.path).tobytes()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nested_spaces)
def test_random_nested_spaces_match_numpy(space: spaces.Space) -> None:
    _assert_matches_numpy(space, sample_rows(space, 3))


def test_portable_decoding_matches_views_bit_for_bit() -> None:
    """The arithmetic byte decoding used for ONNX export equals view(dtype) on random bytes (NaN/inf too)."""
    space = spaces.Dict({**SPACE_ZOO["mixed_dtypes"].spaces, **UNSIGNED.spaces})
    layout = compile_layout(space)
    gen = torch.Generator().manual_seed(0)
    flat = torch.randint(0, 256, (512, layout.flat_size), dtype=torch.uint8, generator=gen)
    flat[:4] = 0
    flat[4:8] = 255  # NaN patterns, -1 integers
    for leaf, fast, slow in zip(layout.leaves, leaf_tensors(layout, flat), leaf_tensors(layout, flat, portable=True),
                                strict=True):
        if leaf.dtype.kind == "f":
            assert torch.equal(fast.double().isnan(), slow.isnan()), leaf.name
            assert torch.equal(torch.nan_to_num(fast.double()), torch.nan_to_num(slow)), leaf.name
        elif leaf.dtype == np.uint64:
            assert torch.equal(fast.view(torch.int64), slow), leaf.name  # documented wrap above 2**63
        else:
            assert torch.equal(fast.to(slow.dtype), slow), leaf.name


@pytest.mark.parametrize(
    ("flat", "needle"),
    [
        (torch.zeros(2, 7, dtype=torch.uint8), "[*batch, "),
        (torch.zeros(2, 7, dtype=torch.int64), "dtype torch.uint8"),
    ],
)
def test_wrong_rows_name_the_leaves_and_expected_shape(flat: torch.Tensor, needle: str) -> None:
    layout = compile_layout(SPACE_ZOO["nested"])
    with pytest.raises(SpaceError) as info:
        unflatten_tensor(layout, flat)
    message = str(info.value)
    assert needle in message
    assert f"[*batch, {layout.flat_size}]" in message
    assert "obs['agent']['pos']: float32[2]" in message


def test_numpy_input_is_a_space_error() -> None:
    with pytest.raises(SpaceError, match=r"torch\.from_numpy"):
        unflatten_tensor(SPACE_ZOO["box_float32"], np.zeros((2, 4), np.float32))

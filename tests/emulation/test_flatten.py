"""Flatten/unflatten: exact, dtype-preserving round trips and zero-copy views."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.emulation import Flattener, compile_layout, flatten, flatten_batch, to_native, unflatten
from shoal.emulation.layout import leaf_value
from shoal.errors import SpaceError
from tests.emulation.helpers import assert_same_sample
from tests.strategies import nested_spaces
from tests.zoo import NETHACK_SPACE, SPACE_ZOO


@pytest.mark.parametrize("name", sorted(SPACE_ZOO))
def test_zoo_round_trip_is_exact(name: str) -> None:
    space = SPACE_ZOO[name]
    space.seed(7)
    layout = compile_layout(space)
    for _ in range(5):
        sample = space.sample()
        row = flatten(layout, sample)
        assert row.dtype == layout.flat_dtype and row.shape == (layout.flat_size,)
        assert_same_sample(space, sample, to_native(layout, row))


@pytest.mark.parametrize("name", sorted(SPACE_ZOO))
def test_unflatten_returns_views_with_leaf_dtypes(name: str) -> None:
    space = SPACE_ZOO[name]
    layout = compile_layout(space)
    rows = np.zeros((3, layout.flat_size), layout.flat_dtype)
    samples = [space.sample() for _ in range(3)]
    for row, sample in zip(rows, samples, strict=True):
        flatten(layout, sample, out=row)
    tree = unflatten(layout, rows)
    for leaf in layout.leaves:
        view = tree
        for key in leaf.path:
            view = view[key]
        assert view.shape == (3, *leaf.shape)
        assert view.dtype == leaf.dtype
        assert np.shares_memory(view, rows), leaf.name
        for i, sample in enumerate(samples):
            value = sample
            for key in leaf.path:
                value = value[key]
            if leaf.kind != "text":
                assert view[i].tobytes() == np.asarray(value, leaf.dtype).tobytes()


def test_uniform_dtypes_give_a_typed_row_and_mixed_give_bytes() -> None:
    assert compile_layout(SPACE_ZOO["box_float32"]).flat_dtype == np.float32
    integer_only = compile_layout(SPACE_ZOO["tuple_of_discretes"])
    assert integer_only.flat_dtype == np.int64 and integer_only.flat_size == 3
    mixed = compile_layout(SPACE_ZOO["mixed_dtypes"])
    assert mixed.is_bytes and mixed.flat_dtype == np.uint8
    for leaf in mixed.leaves:
        assert leaf.byte_offset % leaf.dtype.itemsize == 0, "leaves are aligned to their item size"
    assert mixed.flat_size % 8 == 0


def test_integer_only_spaces_are_sized_by_count_not_one_hot() -> None:
    space = spaces.Tuple((spaces.Discrete(1000), spaces.MultiDiscrete([7, 9])))
    layout = compile_layout(space)
    assert layout.flat_size == 3
    sample = (np.int64(999), np.array([6, 8]))
    np.testing.assert_array_equal(flatten(layout, sample), [999, 6, 8])


def test_flat_space_bounds_cover_every_sample() -> None:
    for name in ("nested", "tuple_of_discretes", "discrete_start", "multi_discrete"):
        space = SPACE_ZOO[name]
        layout = compile_layout(space)
        for _ in range(20):
            assert layout.flat_space.contains(flatten(layout, space.sample())), name


def test_flattener_writes_in_place() -> None:
    layout = compile_layout(NETHACK_SPACE)
    buffer = np.zeros((2, layout.flat_size), layout.flat_dtype)
    writer = Flattener(layout, buffer[1])
    sample = NETHACK_SPACE.sample()
    writer.write(sample)
    assert not buffer[0].any()
    assert_same_sample(NETHACK_SPACE, sample, to_native(layout, buffer[1]))
    writer.clear()
    assert not buffer.any()


@settings(max_examples=60, deadline=None)
@given(space=nested_spaces, seed=st.integers(0, 2**16))
def test_random_nested_spaces_round_trip(space: spaces.Space, seed: int) -> None:
    space.seed(seed)
    layout = compile_layout(space)
    sample = space.sample()
    row = flatten(layout, sample)
    assert_same_sample(space, sample, to_native(layout, row))
    rows = np.stack([row, row])
    tree = unflatten(layout, rows)
    for leaf in layout.leaves:
        view = leaf_value(tree, leaf.path)
        assert view.shape == (2, *leaf.shape) and np.shares_memory(view, rows), leaf.name


@pytest.mark.parametrize(
    ("space", "where"),
    [
        (spaces.Dict({"ok": spaces.Discrete(2), "seq": spaces.Sequence(spaces.Discrete(3))}), "obs['seq']"),
        (spaces.Tuple((spaces.Discrete(2), spaces.Graph(spaces.Box(0, 1, (2,)), None))), "obs[1]"),
    ],
)
def test_variable_size_spaces_are_rejected_with_the_leaf_path(space: spaces.Space, where: str) -> None:
    with pytest.raises(SpaceError, match=r"no fixed size") as info:
        compile_layout(space)
    assert where in str(info.value)


def test_unknown_space_type_error_says_how_to_add_it() -> None:
    class Odd(gym.Space):
        pass

    with pytest.raises(SpaceError, match="register"):
        compile_layout(spaces.Dict({"odd": Odd()}))


def test_wrong_sample_and_row_errors_name_the_leaf() -> None:
    layout = compile_layout(SPACE_ZOO["nested"])
    sample = SPACE_ZOO["nested"].sample()
    sample["agent"]["pos"] = np.zeros(5, np.float32)
    with pytest.raises(SpaceError, match=r"obs\['agent'\]\['pos'\]"):
        flatten(layout, sample)
    sample["agent"]["pos"] = np.zeros(2, np.float32)
    del sample["map"]
    with pytest.raises(SpaceError, match=r"obs\['map'\]"):
        flatten(layout, sample)
    with pytest.raises(SpaceError, match="last dimension"):
        unflatten(layout, np.zeros((2, layout.flat_size + 1), layout.flat_dtype))
    with pytest.raises(SpaceError, match="dtype"):
        unflatten(compile_layout(SPACE_ZOO["box_float32"]), np.zeros((2, 4), np.float64))


def _stacked(space: spaces.Space, samples: list) -> object:
    """The samples leaf by leaf, stacked along a new first axis (Text: a list of str)."""
    if isinstance(space, spaces.Dict):
        return {key: _stacked(sub, [s[key] for s in samples]) for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(_stacked(sub, [s[i] for s in samples]) for i, sub in enumerate(space.spaces))
    return list(samples) if isinstance(space, spaces.Text) else np.stack([np.asarray(s) for s in samples])


@pytest.mark.parametrize("name", sorted(SPACE_ZOO))
def test_flatten_batch_writes_the_rows_flatten_writes(name: str) -> None:
    space = SPACE_ZOO[name]
    space.seed(3)
    layout = compile_layout(space)
    samples = [space.sample() for _ in range(4)]
    rows = flatten_batch(layout, _stacked(space, samples))
    assert rows.tobytes() == np.stack([flatten(layout, s) for s in samples]).tobytes()


def test_flatten_batch_names_a_missing_leaf_and_uneven_leaves() -> None:
    space = spaces.Dict({"a": spaces.Discrete(3), "b": spaces.Box(0, 1, (2,), np.float32)})
    with pytest.raises(SpaceError, match=r"no entry at obs\['b'\]"):
        flatten_batch(space, {"a": np.zeros(2, np.int64)})
    with pytest.raises(SpaceError, match=r"different numbers of samples \(obs\['a'\]: 2, obs\['b'\]: 3\)"):
        flatten_batch(space, {"a": np.zeros(2, np.int64), "b": np.zeros((3, 2), np.float32)})

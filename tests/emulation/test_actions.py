"""Action layouts: flat action spaces and exact conversion back to native actions."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector.utils import batch_space
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.emulation import ActionLayout
from shoal.emulation.actions import HybridBox
from shoal.errors import APIUsageError, SpaceError
from tests.emulation.helpers import assert_same_sample

ACTION_SPACES = {
    "discrete": spaces.Discrete(5),
    "discrete_start": spaces.Discrete(4, start=3),
    "multi_discrete": spaces.MultiDiscrete([3, 2, 4]),
    "multi_binary": spaces.MultiBinary(3),
    "box": spaces.Box(-2.0, 2.0, (2, 2), np.float32),
    "dict_discrete": spaces.Dict({"move": spaces.Discrete(4), "item": spaces.MultiDiscrete([3, 3])}),
    "tuple_boxes": spaces.Tuple((spaces.Box(-1, 1, (2,), np.float32), spaces.Box(0, 5, (1,), np.float64))),
    "hybrid": spaces.Dict(
        {"kind": spaces.Discrete(3), "aim": spaces.Box(-1, 1, (2,), np.float32), "fire": spaces.MultiBinary(1)}
    ),
    "int_box": spaces.Box(-1, 3, (2,), np.int32),
}

KINDS = {
    "discrete": "discrete",
    "discrete_start": "discrete",
    "multi_discrete": "multi_discrete",
    "multi_binary": "multi_discrete",
    "box": "continuous",
    "dict_discrete": "multi_discrete",
    "tuple_boxes": "continuous",
    "hybrid": "hybrid",
    "int_box": "multi_discrete",
}


@pytest.mark.parametrize("name", sorted(ACTION_SPACES))
def test_native_round_trip(name: str) -> None:
    space = ACTION_SPACES[name]
    space.seed(3)
    layout = ActionLayout(space)
    assert layout.kind == KINDS[name]
    for _ in range(10):
        native = space.sample()
        flat = layout.from_native(native)
        assert layout.flat_space.contains(flat.astype(layout.flat_space.dtype)), (name, flat)
        assert_same_sample(space, native, layout.to_native(flat), "action")


@pytest.mark.parametrize("name", sorted(ACTION_SPACES))
def test_batch_conversions_are_the_per_action_ones_stacked(name: str) -> None:
    space = ACTION_SPACES[name]
    space.seed(5)
    layout = ActionLayout(space)
    natives = [space.sample() for _ in range(6)]
    flat = np.stack([layout.from_native(native) for native in natives])
    batch = layout.to_native_batch(flat)
    for i, native in enumerate(natives):
        assert_same_sample(space, layout.to_native(flat[i]), _row(batch, i), "action")
        assert_same_sample(space, native, _row(batch, i), "action")
    assert layout.from_native_batch(batch).tobytes() == flat.tobytes()


def _row(batch: object, i: int) -> object:
    if isinstance(batch, dict):
        return {key: _row(value, i) for key, value in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_row(value, i) for value in batch)
    return batch[i]


def test_hybrid_puts_discrete_choices_first() -> None:
    layout = ActionLayout(ACTION_SPACES["hybrid"])
    assert layout.num_discrete == 2 and layout.num_continuous == 2
    np.testing.assert_array_equal(layout.nvec, [2, 3])  # Dict keys sort: aim, fire, kind
    native = layout.to_native(np.array([1, 2, 0.5, -0.25], np.float32))
    assert native["fire"].tolist() == [1] and int(native["kind"]) == 2
    np.testing.assert_array_equal(native["aim"], np.array([0.5, -0.25], np.float32))


def test_validate_names_the_offending_row_and_range() -> None:
    layout = ActionLayout(spaces.MultiDiscrete([3, 2]))
    with pytest.raises(APIUsageError, match=r"shape \(2, 3\).*expected \(2, 2\)"):
        layout.validate(np.zeros((2, 3), np.int64), 2)
    with pytest.raises(APIUsageError, match="agent_b"):
        layout.validate(np.array([[0, 0], [0, 2]]), 2, names=["agent_a", "agent_b"])
    with pytest.raises(APIUsageError, match="integer"):
        layout.validate(np.zeros((2, 2), np.float32), 2)
    live = np.array([True, False])
    layout.validate(np.array([[2, 1], [99, 99]]), 2, live=live)  # dead rows are not checked


def test_text_actions_are_rejected() -> None:
    with pytest.raises(SpaceError, match="Text action"):
        ActionLayout(spaces.Dict({"say": spaces.Text(4)}))


# ---- the hybrid flat action space ---------------------------------------------------------------------------------

_discrete_leaves = st.one_of(
    st.builds(lambda n, s: spaces.Discrete(n, start=s), st.integers(1, 9), st.integers(-3, 3)),
    st.builds(lambda v: spaces.MultiDiscrete(v), st.lists(st.integers(1, 6), min_size=1, max_size=3)),
    st.builds(spaces.MultiBinary, st.integers(1, 3)),
    st.builds(lambda lo, span: spaces.Box(lo, lo + span, (2,), np.int16), st.integers(-5, 5), st.integers(0, 4)),
)
_float_leaves = st.one_of(
    st.builds(lambda lo, span, dt: spaces.Box(lo, lo + span, (2,), dt), st.floats(-10, 10), st.floats(0.5, 10),
              st.sampled_from([np.float16, np.float32, np.float64])),
    st.just(spaces.Box(-np.inf, np.inf, (1,), np.float32)),  # unbounded: Box.sample draws a normal
)
hybrid_spaces = st.tuples(st.lists(_discrete_leaves, min_size=1, max_size=3),
                          st.lists(_float_leaves, min_size=1, max_size=2)).map(
    lambda parts: spaces.Dict({f"k{i}": leaf for i, leaf in enumerate(parts[0] + parts[1])}))


@settings(max_examples=60, deadline=None)
@given(space=hybrid_spaces, seed=st.integers(0, 2**16))
def test_hybrid_samples_are_whole_number_choices_that_validate_accepts(space: spaces.Dict, seed: int) -> None:
    layout = ActionLayout(space)
    assert layout.kind == "hybrid" and isinstance(layout.flat_space, HybridBox)
    flat_space = layout.flat_space
    flat_space.seed(seed)
    samples = np.stack([flat_space.sample() for _ in range(50)])
    assert samples.dtype == flat_space.dtype
    choices = samples[:, : layout.num_discrete]
    np.testing.assert_array_equal(choices, np.floor(choices))
    assert all(flat_space.contains(sample) for sample in samples)
    layout.validate(samples, len(samples))  # what step checks: raises on any bad row
    for sample in samples[:5]:
        assert space.contains(layout.to_native(sample)), sample


def test_hybrid_box_contains_agrees_with_validate_on_the_choices() -> None:
    layout = ActionLayout(ACTION_SPACES["hybrid"])  # nvec [2, 3], then 2 floats in [-1, 1]
    space = layout.flat_space
    for good in ([0, 0, 0.0, 0.0], [1, 2, -1.0, 1.0]):
        action = np.array(good, np.float32)
        assert space.contains(action)
        layout.validate(action[None], 1)
    for bad in ([0.5, 0, 0.0, 0.0], [0, 3, 0.0, 0.0], [-1, 0, 0.0, 0.0], [np.nan, 0, 0.0, 0.0]):
        action = np.array(bad, np.float32)
        assert not space.contains(action)
        with pytest.raises(APIUsageError):
            layout.validate(action[None], 1)


def test_hybrid_box_is_a_box_that_pickles_and_batches() -> None:
    layout = ActionLayout(ACTION_SPACES["hybrid"])
    space = layout.flat_space
    assert isinstance(space, spaces.Box) and repr(space).startswith("Box(")
    assert space.shape == (4,) and space.dtype == np.float32
    np.testing.assert_array_equal(space.nvec, [2, 3])
    copy = pickle.loads(pickle.dumps(space))
    assert isinstance(copy, HybridBox) and copy == space and copy.num_discrete == 2
    assert space != spaces.Box(space.low, space.high, space.shape, space.dtype)  # knows it is hybrid
    batched = batch_space(space, 5)  # what gymnasium's vector envs build their action_space with
    assert isinstance(batched, HybridBox) and batched.shape == (5, 4)
    batched.seed(0)
    for _ in range(20):
        rows = batched.sample()
        assert batched.contains(rows)
        layout.validate(rows, 5)


def test_hybrid_range_error_names_the_entry_and_its_own_bound() -> None:
    layout = ActionLayout(ACTION_SPACES["hybrid"])  # nvec [2, 3]
    with pytest.raises(APIUsageError) as caught:
        layout.validate(np.array([[0.47, 1, 0.1, 0.2]], np.float32), 1)
    message = str(caught.value)
    assert "slot 0" in message and "entry 0 is 0.47" in message and "in [0, 2)" in message
    assert "[0, [" not in message  # no array printed as a bound
    with pytest.raises(APIUsageError, match=r"agent_b.*entry 1 is 3\.0 but must be a whole number in \[0, 3\)"):
        layout.validate(np.array([[0, 0, 0, 0], [1, 3, 0, 0]], np.float32), 2, names=["agent_a", "agent_b"])
    with pytest.raises(APIUsageError, match=r"entry 2 is 4 but must be a whole number in \[0, 4\)"):
        ActionLayout(spaces.MultiDiscrete([3, 2, 4])).validate(np.array([[0, 1, 4]]), 1)
    with pytest.raises(APIUsageError, match=r"action 5 for slot 0 is outside Discrete\(2\).*\[0, 2\)"):
        ActionLayout(spaces.Discrete(2)).validate(np.array([5]), 1)

"""Action layouts: flat action spaces and exact conversion back to native actions."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from shoal.emulation import ActionLayout
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

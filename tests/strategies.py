"""Hypothesis strategies for random (nested, mixed-dtype) Gymnasium spaces."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from hypothesis import strategies as st

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_]

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@st.composite
def box_spaces(draw: st.DrawFn) -> spaces.Box:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(shapes) or (1,)
    if dtype == np.bool_:
        return spaces.Box(0, 1, shape, dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return spaces.Box(int(info.min) // 2, int(info.max) // 2, shape, dtype)
    return spaces.Box(-100.0, 100.0, shape, dtype)


leaf_spaces = st.one_of(
    box_spaces(),
    st.builds(lambda n, s: spaces.Discrete(n, start=s), st.integers(1, 50), st.integers(-5, 5)),
    st.builds(lambda v: spaces.MultiDiscrete(v), st.lists(st.integers(1, 9), min_size=1, max_size=4)),
    st.builds(spaces.MultiBinary, st.integers(1, 6)),
    st.builds(lambda n: spaces.Text(max_length=n), st.integers(1, 5)),
)

nested_spaces = st.recursive(
    leaf_spaces,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda xs: spaces.Tuple(tuple(xs))),
        st.dictionaries(st.text("abcdefgh", min_size=1, max_size=4), children, min_size=1, max_size=3).map(
            spaces.Dict
        ),
    ),
    max_leaves=8,
)

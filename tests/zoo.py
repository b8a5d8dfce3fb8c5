"""A shared zoo of observation spaces used across the test suite (importable without torch)."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

__all__ = ["NETHACK_SPACE", "SPACE_ZOO"]

#: A NetHack-like Dict: large integer grids, mixed dtypes, a byte message, a stats vector.
NETHACK_SPACE = spaces.Dict(
    {
        "glyphs": spaces.Box(0, 5976, (21, 79), np.int16),
        "chars": spaces.Box(0, 255, (21, 79), np.uint8),
        "colors": spaces.Box(0, 15, (21, 79), np.uint8),
        "specials": spaces.Box(0, 255, (21, 79), np.uint8),
        "blstats": spaces.Box(-(2**31), 2**31 - 1, (27,), np.int64),
        "message": spaces.Box(0, 255, (256,), np.uint8),
        "inv_glyphs": spaces.Box(0, 5976, (55,), np.int16),
        "inv_letters": spaces.Box(0, 127, (55,), np.uint8),
        "inv_oclasses": spaces.Box(0, 18, (55,), np.uint8),
        "inv_strs": spaces.Box(0, 255, (55, 80), np.uint8),
    }
)

SPACE_ZOO: dict[str, spaces.Space] = {
    "box_float32": spaces.Box(-1.0, 1.0, (4,), np.float32),
    "box_float64_2d": spaces.Box(-np.inf, np.inf, (3, 2), np.float64),
    "box_float16": spaces.Box(-2.0, 2.0, (5,), np.float16),
    "box_bool": spaces.Box(0, 1, (6,), np.bool_),
    "image_uint8": spaces.Box(0, 255, (84, 84, 3), np.uint8),
    "discrete": spaces.Discrete(7),
    "discrete_start": spaces.Discrete(5, start=-2),
    "multi_discrete": spaces.MultiDiscrete([3, 4, 5]),
    "multi_discrete_2d": spaces.MultiDiscrete(np.array([[2, 3], [4, 5]])),
    "multi_binary": spaces.MultiBinary(8),
    "text": spaces.Text(max_length=6),
    "tuple_of_discretes": spaces.Tuple((spaces.Discrete(3), spaces.Discrete(4), spaces.Discrete(2))),
    "int_only_dict": spaces.Dict({"a": spaces.Discrete(10), "b": spaces.MultiDiscrete([2, 2])}),
    "mixed_dtypes": spaces.Dict(
        {
            "u8": spaces.Box(0, 255, (3,), np.uint8),
            "i8": spaces.Box(-128, 127, (2,), np.int8),
            "i16": spaces.Box(-1000, 1000, (2,), np.int16),
            "i32": spaces.Box(-(2**31), 2**31 - 1, (2,), np.int32),
            "i64": spaces.Box(-(2**62), 2**62, (2,), np.int64),
            "f16": spaces.Box(-1, 1, (3,), np.float16),
            "f32": spaces.Box(-1, 1, (2,), np.float32),
            "f64": spaces.Box(-1, 1, (1,), np.float64),
            "flag": spaces.Box(0, 1, (2,), np.bool_),
        }
    ),
    "nested": spaces.Dict(
        {
            "agent": spaces.Dict(
                {
                    "pos": spaces.Box(-10, 10, (2,), np.float32),
                    "hp": spaces.Discrete(100),
                    "inventory": spaces.Tuple((spaces.MultiBinary(4), spaces.Discrete(3, start=1))),
                }
            ),
            "map": spaces.Box(0, 255, (8, 8, 2), np.uint8),
            "others": spaces.Tuple(
                (
                    spaces.Dict({"pos": spaces.Box(-10, 10, (2,), np.float32), "kind": spaces.Discrete(4)}),
                    spaces.Dict({"pos": spaces.Box(-10, 10, (2,), np.float32), "kind": spaces.Discrete(4)}),
                )
            ),
        }
    ),
    "nethack": NETHACK_SPACE,
}

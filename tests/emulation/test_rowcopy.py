"""The native row copy: exact copies of matching arrays, a refusal (for numpy to convert) of anything else."""

from __future__ import annotations

import shutil
import sysconfig

import numpy as np
import pytest

from shoal.emulation.gymnasium import copy_row


def _compiler() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None


def test_the_native_module_is_built_wherever_a_c_compiler_is() -> None:
    assert copy_row is not None or not _compiler()


needs_native = pytest.mark.skipif(copy_row is None, reason="built without a C compiler: memoryview writes instead")


@needs_native
@pytest.mark.parametrize(("dtype", "shape"), [(np.float32, (4,)), (np.uint8, (3, 5)), (np.bool_, (7,)),
                                               (np.int64, (2, 2, 2)), (np.float16, (1,))])
def test_matching_arrays_are_copied_exactly(dtype: type, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    src = (rng.random(shape) * 100).astype(dtype)
    block = np.zeros((3, *shape), dtype)
    copy_row(block[1], src)
    np.testing.assert_array_equal(block[1], src)
    assert not block[0].any() and not block[2].any()  # nothing written outside the row


@needs_native
@pytest.mark.parametrize("src", [
    np.zeros(4, np.float64),  # another dtype
    np.zeros(4, np.dtype(np.float32).newbyteorder()),  # another byte order
    np.zeros(5, np.float32),  # another length
    np.zeros((2, 2), np.float32),  # another number of dimensions, same bytes
    np.zeros(8, np.float32)[::2],  # not contiguous
], ids=["dtype", "byte_order", "length", "ndim", "strided"])
def test_anything_else_is_refused_and_the_row_left_alone(src: np.ndarray) -> None:
    row = np.full(4, 7.0, np.float32)
    with pytest.raises(ValueError, match="copy_row"):
        copy_row(row, src)
    np.testing.assert_array_equal(row, np.full(4, 7.0, np.float32))


@needs_native
def test_an_equivalent_dtype_object_and_a_view_of_the_row_itself_are_copied() -> None:
    row = np.zeros(4, np.float32)
    tagged = np.arange(4, dtype=np.dtype(np.float32, metadata={"unit": "m"}))  # another descriptor, same type
    assert tagged.dtype is not row.dtype
    copy_row(row, tagged)
    np.testing.assert_array_equal(row, [0, 1, 2, 3])
    block = np.arange(8, dtype=np.float32)
    copy_row(block[2:6], block[0:4])  # overlapping memory
    np.testing.assert_array_equal(block, [0, 1, 0, 1, 2, 3, 6, 7])


class _Tracked:
    pass


@needs_native
@pytest.mark.parametrize("dtype", [np.dtype(object), np.dtype([("a", np.float32), ("b", object)])],
                         ids=["object", "struct_with_object"])
def test_arrays_holding_python_objects_are_refused_not_copied_bytewise(dtype: np.dtype) -> None:
    import sys

    src, dst = np.empty(2, dtype), np.empty(2, dtype)
    item = _Tracked()
    if dtype.fields:
        src["b"] = [item, item]
    else:
        src[:] = [item, item]
    before = sys.getrefcount(item)
    with pytest.raises(TypeError, match="objects"):
        copy_row(dst, src)
    assert sys.getrefcount(item) == before


@needs_native
def test_shapes_must_match_not_only_sizes() -> None:
    row = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="shape"):
        copy_row(row, np.zeros((3, 2), np.float32))
    empty = np.dtype([])  # items of zero bytes: every array of it has zero bytes
    with pytest.raises(ValueError, match="shape"):
        copy_row(np.zeros(3, empty), np.zeros(5, empty))


@needs_native
def test_non_arrays_and_read_only_rows_are_refused() -> None:
    row = np.zeros(3, np.float32)
    with pytest.raises(TypeError, match="numpy arrays"):
        copy_row(row, [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="two arrays"):
        copy_row(row)
    row.flags.writeable = False
    with pytest.raises(ValueError, match="copy_row"):
        copy_row(row, np.ones(3, np.float32))

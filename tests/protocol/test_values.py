"""Chunk result encoding: exact round trips, numpy as raw buffers, pickle only when allowed."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rvidia.protocol import values
from rvidia.protocol.values import PickledResultRefused


def rt(value: Any, allow_pickle: bool = False) -> Any:
    return values.loads(values.dumps(value, allow_pickle=allow_pickle), allow_pickle=allow_pickle)


class Point:  # a custom class only pickle can carry
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes: bit-identical, NaN payloads and -0.0 included."""
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == b.tobytes()


# ---------------------------------------------------------------- plain values


@pytest.mark.parametrize("value", [
    0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.0, float("inf"), 1e-308, "", "héllo ✓", "\x00",
    b"", b"\x00\xff" * 100, None, True, False, [], {}, [1, "a", None, 2.5], {"a": 1, "b": [1, 2, {"c": b"x"}]},
    {"outer": {"inner": {"deep": [[], [[]], {}]}}}, [[1, 2], [3, [4, [5]]]],
], ids=repr)
def test_plain_values_round_trip(value: Any) -> None:
    back = rt(value)
    assert back == value
    assert type(back) is type(value)


def test_float_bits_survive() -> None:
    for x in (0.1, -0.0, 5e-324, 1.7976931348623157e308, math.pi):
        assert math.copysign(1.0, rt(x)) == math.copysign(1.0, x) and rt(x).hex() == x.hex()
    assert math.isnan(rt(float("nan")))


def test_non_string_dict_keys() -> None:
    assert rt({1: "a", 2: "b"}) == {1: "a", 2: "b"}


@pytest.mark.parametrize("value", [
    (), (1,), (1, "a", None), ((1, 2), (3, (4,))), [1, (2, 3)], [[(1, 2)]], {"k": (1, 2)},
    {"k": [(1, 2), [3, (4, 5)]]}, (1, [2, (3, 4)], {"a": (5,)}), ([], {}, ()),
], ids=repr)
def test_tuples_stay_tuples(value: Any) -> None:
    back = rt(value)
    assert back == value
    assert repr(back) == repr(value)  # the same containers at every depth, not lists for tuples


# ---------------------------------------------------------------- numpy


DTYPES = ["int8", "uint8", "int16", "<u2", ">i4", "int64", "uint64", "float16", "float32", ">f8", "float64",
          "complex64", "complex128", "bool", "S5", "<U3", "datetime64[ms]", "timedelta64[s]"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (7,), (3, 4), (2, 3, 4), (1, 0, 2)], ids=str)
def test_arrays_round_trip_bit_identical(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape) + len(dtype))
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=np.uint8)
    arr = raw.view(dtype).reshape(shape) if raw.size else np.zeros(shape, dtype)
    back = rt(arr)
    assert isinstance(back, np.ndarray)
    assert same_array(arr, back)
    assert back.flags.writeable and back.flags.c_contiguous


def test_nan_payloads_and_negative_zero_are_kept() -> None:
    bits = np.array([0x7FF8000000000001, 0xFFF0000000000123, 0x8000000000000000, 1], dtype=np.uint64)
    arr = bits.view(np.float64)
    assert same_array(arr, rt(arr))


def test_zero_dimensional_array_keeps_its_shape() -> None:
    back = rt(np.array(5.5))
    assert isinstance(back, np.ndarray) and back.shape == () and back.dtype == np.float64 and back == 5.5


@pytest.mark.parametrize("view", [
    lambda a: a[::2], lambda a: a[:, ::3], lambda a: a.T, lambda a: a[::-1, 1:], lambda a: np.asfortranarray(a),
    lambda a: a[:, 2],
], ids=["step", "column-step", "transpose", "reversed", "fortran", "column"])
def test_non_contiguous_input(view: Any) -> None:
    base = np.arange(60, dtype=np.float64).reshape(6, 10) * 1.5
    arr = view(base)
    back = rt(arr)
    assert back.shape == arr.shape and back.dtype == arr.dtype
    assert np.array_equal(back, arr)
    assert same_array(arr, back)


def test_structured_arrays_keep_their_fields() -> None:
    dt = np.dtype([("id", "<i4"), ("xy", "<f4", (2,)), ("tag", "S3"), ("sub", [("a", "u1"), ("b", ">f8")])])
    arr = np.zeros(4, dtype=dt)
    arr["id"] = [1, 2, 3, 4]
    arr["xy"] = [[0.5, 1.5]] * 4
    arr["tag"] = b"abc"
    arr["sub"]["b"] = -2.25
    back = rt(arr)
    assert back.dtype == dt and back.dtype.names == dt.names
    assert same_array(arr, back)


def test_arrays_inside_containers() -> None:
    value = {"w": [np.arange(3, dtype=np.int32), (np.ones((2, 2), np.float32), "x")], "n": 3}
    back = rt(value)
    assert back["n"] == 3 and isinstance(back["w"][1], tuple)
    assert same_array(value["w"][0], back["w"][0])
    assert same_array(value["w"][1][0], back["w"][1][0])


@pytest.mark.parametrize("scalar, expected", [
    (np.float64(1.5), 1.5), (np.float32(0.25), 0.25), (np.int64(-3), -3), (np.int8(7), 7),
    (np.uint64(2**64 - 1), 2**64 - 1), (np.bool_(True), True), (np.str_("ab"), "ab"),
], ids=repr)
def test_numpy_scalars_become_python_values(scalar: Any, expected: Any) -> None:
    back = rt(scalar)
    assert back == expected and type(back) is type(expected)


def test_numpy_scalars_inside_containers() -> None:
    assert rt([np.int32(1), {"a": np.float32(2.5)}, (np.uint8(3),)]) == [1, {"a": 2.5}, (3,)]


# ---------------------------------------------------------------- pickle only when allowed


def test_unsupported_type_is_refused_on_encode_without_allow_pickle() -> None:
    with pytest.raises(TypeError, match="allow_pickle_results=True"):
        values.dumps(Point(1, 2))
    with pytest.raises(TypeError, match="allow_pickle_results=True"):
        values.dumps({"nested": [Point(1, 2)]})


def test_pickled_value_round_trips_when_both_sides_allow_it() -> None:
    value = {"p": Point(1, 2), "items": [Point(3, 4), (Point(5, 6), 7)], "plain": 1}
    assert rt(value, allow_pickle=True) == value


def test_pickled_value_refused_on_decode_unless_allowed() -> None:
    data = values.dumps([1, Point(1, 2)], allow_pickle=True)
    with pytest.raises(PickledResultRefused, match="allow_pickle_results=True"):
        values.loads(data)
    assert values.loads(data, allow_pickle=True) == [1, Point(1, 2)]


def test_pickled_value_inside_a_tuple_is_refused_too() -> None:
    data = values.dumps((Point(1, 2),), allow_pickle=True)
    with pytest.raises(PickledResultRefused):
        values.loads(data)


def test_allow_pickle_does_not_pickle_what_msgpack_carries() -> None:
    value = [1, "x", (2, 3), np.arange(4)]
    data = values.dumps(value, allow_pickle=True)
    back = values.loads(data)  # decodes without allow_pickle: nothing was pickled
    assert back[:3] == value[:3] and same_array(value[3], back[3])


def test_hand_made_pickle_extension_is_refused() -> None:
    import pickle

    evil = msgspec.msgpack.encode(msgspec.msgpack.Ext(values.EXT_PICKLE, pickle.dumps(Point(0, 0))))
    with pytest.raises(PickledResultRefused):
        values.loads(evil)


def test_unknown_extension_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown msgpack extension 42"):
        values.loads(msgspec.msgpack.encode(msgspec.msgpack.Ext(42, b"x")))


# ---------------------------------------------------------------- object arrays


def test_object_array_refused_on_encode_without_allow_pickle() -> None:
    with pytest.raises(TypeError, match="allow_pickle_results=True"):
        values.dumps(np.array([1, "x", None], dtype=object))


def test_object_array_travels_pickled_only_when_allowed() -> None:
    arr = np.array([1, "x", None], dtype=object)
    data = values.dumps(arr, allow_pickle=True)
    with pytest.raises(PickledResultRefused):
        values.loads(data)
    back = values.loads(data, allow_pickle=True)
    assert back.dtype == object and list(back) == [1, "x", None]


@pytest.mark.parametrize("descr", ["|O", [["a", "<i4"], ["b", "|O"]]], ids=["object", "struct-with-object"])
def test_object_array_ext_from_a_dishonest_worker_is_refused(descr: Any) -> None:
    header = msgspec.msgpack.encode([descr, [2]])
    body = len(header).to_bytes(4, "little") + header + b"\x00" * 32
    data = msgspec.msgpack.encode(msgspec.msgpack.Ext(values.EXT_NDARRAY, body))
    for allow in (False, True):
        with pytest.raises(ValueError, match="object arrays are not accepted"):
            values.loads(data, allow_pickle=allow)


# ---------------------------------------------------------------- property test

keys = st.text(max_size=8)
json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=16) | st.binary(max_size=16),
    lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None)
@given(json_like)
def test_json_like_values_round_trip(value: Any) -> None:
    back = rt(value)
    assert back == value
    assert repr(back) == repr(value)  # same types all the way down (tuples, -0.0, bytes)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["<i2", ">u4", "<f4", ">f8", "|b1", "<c8"]),
       st.lists(st.integers(0, 5), min_size=0, max_size=3), st.data())
def test_arrays_round_trip_property(dtype: str, shape: list[int], data: st.DataObject) -> None:
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.frombuffer(data.draw(st.binary(min_size=n, max_size=n)), dtype=np.uint8)
    arr = raw.view(dtype).reshape(shape)
    assert same_array(arr, rt(arr))

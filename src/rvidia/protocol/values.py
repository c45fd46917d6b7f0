"""msgpack for chunk results: plain values plus numpy arrays as raw buffers.

Results are produced by untrusted workers, so the master and the submitter decode them with msgpack,
never with pickle. A value only pickle can carry is wrapped in an extension the decoder refuses
unless the submitter explicitly allowed pickled results.
"""

from __future__ import annotations

import pickle
from typing import Any

import msgspec

EXT_NDARRAY = 1
EXT_PICKLE = 2
EXT_TUPLE = 3


class PickledResultRefused(ValueError):
    """A result arrived pickled but the submitter did not pass allow_pickle_results=True."""


def _ndarray_to_ext(obj: Any, allow_pickle: bool = False) -> msgspec.msgpack.Ext:
    """An array as a raw buffer after a (dtype descr, shape) header; object arrays only pickled.

    The descr keeps structured dtypes' fields and the shape is the original one (0-d arrays stay
    0-d). Arrays of Python objects hold pointers, not data, so they travel pickled or not at all.
    """
    import numpy as np
    from numpy.lib.format import dtype_to_descr

    arr = np.ascontiguousarray(obj)
    if arr.dtype.hasobject:
        if allow_pickle:
            import cloudpickle

            return msgspec.msgpack.Ext(EXT_PICKLE, cloudpickle.dumps(obj))
        raise TypeError(
            f"an array of dtype {obj.dtype} holds Python objects and cannot travel as msgpack; "
            "pass allow_pickle_results=True to accept pickled results"
        )
    header = msgspec.msgpack.encode([dtype_to_descr(arr.dtype), list(obj.shape)])
    return msgspec.msgpack.Ext(EXT_NDARRAY, len(header).to_bytes(4, "little") + header + arr.tobytes())


def _enc_hook_factory(allow_pickle: bool):
    def enc_hook(obj: Any) -> Any:
        mod = type(obj).__module__
        if mod == "numpy" and type(obj).__name__ == "ndarray":
            return _ndarray_to_ext(obj, allow_pickle)
        if mod == "numpy" and hasattr(obj, "item"):  # numpy scalar
            return obj.item()
        if allow_pickle:
            import cloudpickle

            return msgspec.msgpack.Ext(EXT_PICKLE, cloudpickle.dumps(obj))
        raise TypeError(
            f"a result of type {type(obj).__name__} cannot travel as msgpack; "
            "pass allow_pickle_results=True to accept pickled results"
        )

    return enc_hook


def _ext_hook_factory(allow_pickle: bool):
    def ext_hook(code: int, data: memoryview) -> Any:
        if code == EXT_NDARRAY:
            import numpy as np
            from numpy.lib.format import descr_to_dtype

            hlen = int.from_bytes(data[:4], "little")
            descr, shape = msgspec.msgpack.decode(data[4 : 4 + hlen])
            dtype = descr_to_dtype(descr)
            if dtype.hasobject:
                raise ValueError("object arrays are not accepted in results")
            return np.frombuffer(data[4 + hlen :], dtype=dtype).reshape(shape).copy()
        if code == EXT_TUPLE:
            return tuple(msgspec.msgpack.decode(data, ext_hook=ext_hook))
        if code == EXT_PICKLE:
            if not allow_pickle:
                raise PickledResultRefused(
                    "a worker sent a pickled result; pass allow_pickle_results=True to accept it"
                )
            return pickle.loads(data)
        raise ValueError(f"unknown msgpack extension {code}")

    return ext_hook


def dumps(value: Any, allow_pickle: bool = False) -> bytes:
    """Encode a value; tuples keep their type, arrays travel as raw buffers."""
    return msgspec.msgpack.encode(_tag_tuples(value, allow_pickle), enc_hook=_enc_hook_factory(allow_pickle))


def loads(data: bytes, allow_pickle: bool = False) -> Any:
    """Decode what ``dumps`` produced; refuse pickled values unless allowed."""
    return msgspec.msgpack.decode(data, ext_hook=_ext_hook_factory(allow_pickle))


_CONTAINERS = (tuple, list, dict)


def _tag_tuples(value: Any, allow_pickle: bool) -> Any:
    """Wrap tuples in an extension so they decode as tuples, as a local call would return them."""
    kind = type(value)
    if kind is tuple:
        return msgspec.msgpack.Ext(EXT_TUPLE, dumps(list(value), allow_pickle))
    if kind is list and any(type(v) in _CONTAINERS for v in value):
        return [_tag_tuples(v, allow_pickle) for v in value]
    if kind is dict:
        return {k: _tag_tuples(v, allow_pickle) for k, v in value.items()}
    return value

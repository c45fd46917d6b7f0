"""Out-of-band pickles: arrays travel beside the pickle and are rebuilt on a mapping of the file."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from rvidia.protocol import oob


def _write(tmp_path: Path, obj: object) -> Path:
    body, raws = oob.dumps(obj, cloudpickle.dumps)
    path = tmp_path / "batch"
    with open(path, "wb") as f:
        f.writelines(oob.frame(body, raws))
    return path


def test_arrays_round_trip_aligned_writable_and_the_file_untouched(tmp_path: Path) -> None:
    a = np.arange(1_000_003, dtype=np.float64)
    b = np.arange(12, dtype=np.int16).reshape(3, 4)
    path = _write(tmp_path, [((a, b), {"same": a, "view": b[:, ::2]})])
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    [((a2, b2), kw)] = oob.load_file(path)
    assert np.array_equal(a2, a) and np.array_equal(b2, b) and np.array_equal(kw["view"], b[:, ::2])
    assert kw["same"] is a2  # one buffer, one array, as pickle gives
    assert a2.ctypes.data % oob.ALIGN == 0 and b2.ctypes.data % oob.ALIGN == 0
    a2[0] = 42.0  # a function may change its arguments, as with any pickle ...
    assert a2[0] == 42.0
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # ... and the blob stays as it was


def test_no_buffers_is_an_ordinary_pickle() -> None:
    body, raws = oob.dumps([1, "two", b"three"], cloudpickle.dumps)
    assert raws == [] and pickle.loads(body) == [1, "two", b"three"] and not oob.is_oob(body)


def test_in_memory_layout_and_its_refusals() -> None:
    a = np.arange(64, dtype=np.uint8)
    body, raws = oob.dumps(a, pickle.dumps)
    data = b"".join(bytes(p) for p in oob.frame(body, raws))
    assert oob.is_oob(data) and np.array_equal(oob.loads(data), a)
    with pytest.raises(ValueError, match="truncated"):
        oob.loads(data[:-70])
    with pytest.raises(ValueError, match="not an out-of-band"):
        oob.loads(pickle.dumps(a))

"""The worker protocol's messages: exact round trips, and decode refusing anything else readably."""

from __future__ import annotations

import typing

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rvidia.protocol import messages as m

# ---------------------------------------------------------------- samples of every message type

TASK = m.ChunkTask(job_id="j0123456789ab", stage=2, index=7, attempt=3, kind="montecarlo",
                   params={"samples": 10**12, "seed": 5, "nested": {"a": [1, 2.5, None, "x"]}},
                   payload=b"\x00\x01\xff" * 10, inputs={"a": "ab" * 32}, timeout=12.5)
OUTCOME_OK = m.ChunkOutcome(job_id="j1", stage=0, index=1, attempt=1, ok=True, result=b"\x93\x01\x02\x03",
                            seconds=0.25)
OUTCOME_FAIL = m.ChunkOutcome(job_id="j1", stage=0, index=2, attempt=2, ok=False,
                              error="Traceback (most recent call last):\n  ...\nValueError: boom")

SAMPLES: list[m.Message] = [
    m.Hello(version=m.PROTOCOL_VERSION, name="lab-pc-1", host="lab-pc-1.local", os="linux",
            python="3.11.7", cores=16, memory_bytes=64 * 1024**3, slots=12, allow_code=True, speed=1.75,
            resources={"gpu": 1.0, "ram_gb": 31.5}, worker_id="w0badcafe"),
    m.Hello(version=1, name="", host="", os="", python="", cores=0, memory_bytes=0, slots=0),
    m.Welcome(worker_id="w1", heartbeat_interval=1.0, master_version="0.1.0"),
    m.Refused(reason="protocol version 9 is not supported ✗"),
    m.Heartbeat(sent_at=1700000000.125, running=3, cpu_percent=55.5, memory_percent=12.0),
    m.Heartbeat(sent_at=0.0),
    m.Capacity(slots=0, paused=True),
    m.Capacity(slots=8),
    m.Assign(tasks=[TASK, m.ChunkTask(job_id="j2", stage=0, index=0, attempt=1, kind="map", params={},
                                      payload=b"")]),
    m.Assign(tasks=[]),
    m.Results(items=[OUTCOME_OK, OUTCOME_FAIL]),
    m.Cancel(chunks=[m.ChunkRef("j1", 0, 1, 1), m.ChunkRef("j2", 3, 4, 5)]),
    m.Bye(reason="SIGTERM"),
    m.Bye(),
]


def test_samples_cover_every_message_type() -> None:
    assert {type(s) for s in SAMPLES} == set(typing.get_args(m.Message))


@pytest.mark.parametrize("message", SAMPLES, ids=lambda s: type(s).__name__)
def test_round_trip(message: m.Message) -> None:
    frame = m.encode(message)
    assert isinstance(frame, bytes)
    back = m.decode(frame)
    assert type(back) is type(message)
    assert back == message
    assert m.encode(back) == frame  # encoding is deterministic


def test_frames_are_tagged_msgpack_maps_with_raw_bytes() -> None:
    raw = msgspec.msgpack.decode(m.encode(SAMPLES[0]))
    assert raw["type"] == "hello"
    raw = msgspec.msgpack.decode(m.encode(m.Assign(tasks=[TASK])))
    assert raw["type"] == "assign"
    assert isinstance(raw["tasks"][0]["payload"], bytes)  # bulk data is never base64 or a list


def test_chunk_ref_is_compact_array() -> None:
    raw = msgspec.msgpack.decode(m.encode(m.Cancel(chunks=[m.ChunkRef("j", 1, 2, 3)])))
    assert raw == {"type": "cancel", "chunks": [["j", 1, 2, 3]]}


# ---------------------------------------------------------------- rejections


def _hello_dict(**changes: typing.Any) -> dict[str, typing.Any]:
    d = msgspec.to_builtins(SAMPLES[0])
    d["type"] = "hello"
    d.update(changes)
    return {k: v for k, v in d.items() if v is not _DROP}


_DROP = object()
enc = msgspec.msgpack.encode

BAD_FRAMES = {
    "empty": (b"", "truncated"),
    "invalid opcode": (b"\xc1", "malformed"),
    "random text": (b"GET / HTTP/1.1\r\n\r\n", ""),
    "bare int": (enc(5), "expected `object`"),
    "list": (enc(["hello", 1]), "expected `object`"),
    "no tag": (enc({"reason": "x"}), "`type`"),
    "unknown tag": (enc({"type": "nope", "reason": "x"}), "nope"),
    "tag not a string": (enc({"type": 3}), "type"),
    "wrong field type": (enc(_hello_dict(version="1")), "version"),
    "missing field": (enc(_hello_dict(name=_DROP)), "name"),
    "bool for int": (enc(_hello_dict(cores=True)), "cores"),
    "str for bytes": (enc({"type": "assign", "tasks": [{**msgspec.to_builtins(TASK), "payload": "x"}]}),
                      "payload"),
    "short chunk ref": (enc({"type": "cancel", "chunks": [["j", 0, 0]]}), "chunks"),
    "trailing bytes": (m.encode(m.Bye()) + b"\x00", "trailing"),
    "truncated": (m.encode(SAMPLES[0])[:-3], "truncated"),
}


def test_fields_from_a_newer_minor_version_are_ignored() -> None:
    """Minor versions may add optional fields; an older peer must still understand the message."""
    hello = m.decode(enc(_hello_dict(added_later=1)))
    assert isinstance(hello, m.Hello) and hello.name == m.decode(enc(_hello_dict())).name
    item = {**msgspec.structs.asdict(OUTCOME_OK), "x": 1}
    results = m.decode(enc({"type": "results", "items": [item]}))
    assert isinstance(results, m.Results) and results.items == [OUTCOME_OK]


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_decode_rejects_invalid_frames_with_readable_reason(name: str) -> None:
    frame, hint = BAD_FRAMES[name]
    with pytest.raises(m.ProtocolError) as info:
        m.decode(frame)
    reason = str(info.value)
    assert reason.startswith("invalid message: ")
    assert hint.lower() in reason.lower()
    assert "\n" not in reason and "Traceback" not in reason
    assert isinstance(info.value, ValueError)  # callers may catch ValueError too


def test_decode_rejects_oversized_frame_before_parsing() -> None:
    frame = m.encode(m.Bye(reason="x" * 100))
    big = frame + b" " * (m.MAX_FRAME_BYTES + 1 - len(frame))
    assert len(big) == m.MAX_FRAME_BYTES + 1
    with pytest.raises(m.ProtocolError, match=rf"frame of {m.MAX_FRAME_BYTES + 1} bytes exceeds"):
        m.decode(big)


def test_frame_at_the_limit_is_parsed() -> None:
    payload = b"\x07" * (m.MAX_FRAME_BYTES - 200)
    msg = m.Assign(tasks=[m.ChunkTask(job_id="j", stage=0, index=0, attempt=1, kind="k", params={},
                                      payload=payload)])
    frame = m.encode(msg)
    assert len(frame) <= m.MAX_FRAME_BYTES
    assert m.decode(frame) == msg


def test_close_codes_are_distinct_and_valid() -> None:
    codes = [m.CLOSE_PROTOCOL_ERROR, m.CLOSE_UNSUPPORTED, m.CLOSE_POLICY, m.CLOSE_TOO_BIG,
             m.CLOSE_VERSION, m.CLOSE_AUTH, m.CLOSE_REPLACED]
    assert len(set(codes)) == len(codes)
    assert (m.CLOSE_PROTOCOL_ERROR, m.CLOSE_UNSUPPORTED, m.CLOSE_TOO_BIG) == (1002, 1003, 1009)
    assert all(4000 <= c < 5000 for c in (m.CLOSE_VERSION, m.CLOSE_AUTH, m.CLOSE_REPLACED))


# ---------------------------------------------------------------- property tests

i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
finite = st.floats(allow_nan=False)
text = st.text(max_size=20)
json_like = st.recursive(
    st.none() | st.booleans() | i64 | finite | text | st.binary(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
tasks = st.builds(m.ChunkTask, job_id=text, stage=i64, index=i64, attempt=i64, kind=text,
                  params=st.dictionaries(text, json_like, max_size=4), payload=st.binary(max_size=64),
                  inputs=st.dictionaries(text, text, max_size=3), timeout=st.none() | finite)
outcomes = st.builds(m.ChunkOutcome, job_id=text, stage=i64, index=i64, attempt=i64, ok=st.booleans(),
                     result=st.binary(max_size=64), error=st.none() | text, seconds=finite)
messages = st.one_of(
    st.builds(m.Hello, version=i64, name=text, host=text, os=text, python=text, cores=i64,
              memory_bytes=i64, slots=i64, allow_code=st.booleans(), speed=finite,
              resources=st.dictionaries(text, finite, max_size=3), worker_id=st.none() | text),
    st.builds(m.Welcome, worker_id=text, heartbeat_interval=finite, master_version=text),
    st.builds(m.Refused, reason=text),
    st.builds(m.Heartbeat, sent_at=finite, running=i64, cpu_percent=finite, memory_percent=finite),
    st.builds(m.Capacity, slots=i64, paused=st.booleans()),
    st.builds(m.Assign, tasks=st.lists(tasks, max_size=3)),
    st.builds(m.Results, items=st.lists(outcomes, max_size=3)),
    st.builds(m.Cancel, chunks=st.lists(st.builds(m.ChunkRef, text, i64, i64, i64), max_size=3)),
    st.builds(m.Bye, reason=text),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_round_trip_property(message: m.Message) -> None:
    assert m.decode(m.encode(message)) == message


def _decode_or_protocol_error(frame: bytes) -> None:
    try:
        out = m.decode(frame)
    except m.ProtocolError as exc:
        assert str(exc)
    else:
        assert isinstance(out, typing.get_args(m.Message))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_decode_of_arbitrary_bytes_is_a_message_or_protocol_error(frame: bytes) -> None:
    _decode_or_protocol_error(frame)


@settings(max_examples=500, deadline=None)
@given(messages, st.data())
def test_decode_of_mutated_valid_frames_is_a_message_or_protocol_error(message: m.Message,
                                                                       data: st.DataObject) -> None:
    frame = bytearray(m.encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, len(frame)))
        if op == "flip" and pos < len(frame):
            frame[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del frame[pos:]
        else:
            frame[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
    _decode_or_protocol_error(bytes(frame))


@settings(max_examples=300, deadline=None)
@given(json_like)
def test_decode_of_arbitrary_msgpack_values_is_a_message_or_protocol_error(value: typing.Any) -> None:
    _decode_or_protocol_error(msgspec.msgpack.encode(value))
    if isinstance(value, dict):  # the same value posing as each message type
        for tag in ("hello", "assign", "results", "cancel", "heartbeat"):
            _decode_or_protocol_error(msgspec.msgpack.encode({**value, "type": tag}))

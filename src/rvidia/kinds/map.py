"""``map``: a submitter's Python function over items, results in order (Python API only).

The function and the items arrive as cloudpickle bytes that only workers started with
``--allow-code`` (and running the submitter's Python minor version) ever unpickle: the master just
slices the items blob into chunks. Results come back as msgpack; pickled results only when the
submitter passed ``allow_pickle_results=True``.
"""

from __future__ import annotations

import pickle
from typing import Annotated, Any

import msgspec

from rvidia.core.events import Requirement
from rvidia.kinds.base import Done, JobContext, Kind, ParamError, Plan, RunContext
from rvidia.protocol import oob, values


class MapParams(msgspec.Struct, forbid_unknown_fields=True):
    python: Annotated[str, msgspec.Meta(pattern=r"^\d+\.\d+$", description="Submitter's Python X.Y")]
    items: Annotated[int, msgspec.Meta(ge=0, description="Number of items")] = 0
    star: bool = False  # items are (args, kwargs) pairs: fn(*args, **kwargs)
    calls: bool = False  # items are (fn, args, kwargs) triples: no 'function' input (executor.submit)
    allow_pickle_results: bool = False
    keep_results: bool = True  # write the 'results' output (the executor takes results as they come)


class MapKind(Kind):
    name = "map"
    description = "Run a Python function over items (Python API only; workers need --allow-code)"
    Params = MapParams
    inputs = ("items",)
    optional_inputs = ("function",)
    hidden = True

    def requirement(self, params: MapParams) -> Requirement:
        return Requirement(needs_code=True, python=params.python)

    def _batches(self, ctx: JobContext) -> list[bytes | str]:
        """Per chunk: its pickled batch, or the id of the blob holding it (large arguments)."""
        batches = ctx.cache.get("batches")
        if batches is None:
            with ctx.inputs.open("items") as f:
                try:
                    batches = msgspec.msgpack.decode(f.read(), type=list[Any])
                except (msgspec.DecodeError, msgspec.ValidationError):
                    batches = None
            if batches is None or not all(isinstance(b, (bytes, str)) for b in batches):
                raise ParamError("input 'items' must be a msgpack list of pickled batches or blob ids")
            ctx.cache["batches"] = batches
        return batches

    def check(self, ctx: JobContext) -> None:
        if not ctx.params.calls and "function" not in ctx.inputs.names():
            raise ParamError("map needs input 'function' (or calls=true with (fn, args, kwargs) items)")
        for entry in self._batches(ctx):
            if isinstance(entry, str) and (ctx.blobs is None or not ctx.blobs.exists(entry)):
                raise ParamError(f"input 'items' names a batch blob that was not uploaded ({entry[:80]})")

    def plan(self, ctx: JobContext) -> Plan:
        return Plan(n_chunks=len(self._batches(ctx)))

    def chunk(self, ctx: JobContext, index: int) -> bytes:
        entry = self._batches(ctx)[index]
        return entry if isinstance(entry, bytes) else b""

    def chunk_inputs(self, ctx: JobContext, index: int) -> dict[str, str]:
        needed = {} if ctx.params.calls else {"function": ctx.inputs.blob_id("function")}
        entry = self._batches(ctx)[index]
        if isinstance(entry, str):
            needed["batch"] = entry
        return needed

    def finish_stage(self, ctx: JobContext, acc: Any) -> Done:
        """Write the per-chunk result lists, in order, as one msgpack list of raw results."""
        if not ctx.params.keep_results:
            return Done(result={"items": ctx.params.items, "chunks": len(self._batches(ctx))})
        parts = [raw for _, raw in ctx.results()]
        blob = ctx.outputs.write("results", [msgspec.msgpack.encode(parts)])
        return Done(result={"items": ctx.params.items, "chunks": len(parts)}, outputs={"results": blob})

    def run(self, params: MapParams, payload: bytes, ctx: RunContext) -> bytes:
        batch = _load_batch(payload, ctx)
        if params.calls:
            calls = batch
            return values.dumps([fn(*args, **kwargs) for fn, args, kwargs in calls],
                                allow_pickle=params.allow_pickle_results)
        key = ("map-fn", str(ctx.input_paths["function"]))
        fn = ctx.cache.get(key)
        if fn is None:
            fn = pickle.loads(ctx.input_paths["function"].read_bytes())
            ctx.cache.clear()  # keep one job's function at a time
            ctx.cache[key] = fn
        items = batch
        if params.star:
            out = [fn(*args, **kwargs) for args, kwargs in items]
        else:
            out = [fn(item) for item in items]
        return values.dumps(out, allow_pickle=params.allow_pickle_results)


def _load_batch(payload: bytes, ctx: RunContext) -> Any:
    """The chunk's items: inline, or from the batch blob's file, mapped when its arrays travel out of
    band (protocol/oob.py), so that they are built on the mapping instead of copied."""
    if payload:
        return oob.loads(bytearray(payload)) if oob.is_oob(payload) else pickle.loads(payload)
    path = ctx.input_paths["batch"]
    with open(path, "rb") as f:
        start = f.read(len(oob.MAGIC))
    return oob.load_file(path) if oob.is_oob(start) else pickle.loads(path.read_bytes())


def decode_results(blob: bytes, allow_pickle: bool = False) -> list[Any]:
    """The submitter's side: the flat list of results from a finished map job's ``results`` blob."""
    out: list[Any] = []
    for raw in msgspec.msgpack.decode(blob, type=list[bytes]):
        out.extend(values.loads(raw, allow_pickle=allow_pickle))
    return out


KIND = MapKind()

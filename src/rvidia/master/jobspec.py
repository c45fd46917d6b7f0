"""The body of ``POST /jobs`` and the checks that do not depend on the kind."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from rvidia.kinds.base import Kind, ParamError
from rvidia.kinds.registry import all_kinds, get_kind
from rvidia.master.blobs import BlobStore


class JobRequest(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    params: dict[str, Any] = {}
    inputs: dict[str, str] = {}
    priority: Annotated[int, msgspec.Meta(ge=-1000, le=1000)] = 0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    timeout: Annotated[float, msgspec.Meta(gt=0)] | None = None
    replicas: Annotated[int, msgspec.Meta(ge=1, le=9)] = 1
    resources: dict[str, Annotated[float, msgspec.Meta(ge=0)]] = {}
    # Seconds after submission; a job still queued or running then is cancelled with that reason.
    deadline: Annotated[float, msgspec.Meta(gt=0)] | None = None


def parse_request(body: bytes) -> JobRequest:
    try:
        return msgspec.json.decode(body, type=JobRequest, strict=False)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        text = str(exc)
        raise ParamError(f"invalid job: {text}") from None


def resolve(req: JobRequest, blobs: BlobStore) -> tuple[Kind, Any]:
    """The kind and its parsed parameters, after checking the inputs name existing blobs."""
    kind = get_kind(req.kind)
    if kind is None:
        raise ParamError(f"unknown kind {req.kind!r}; known kinds: {', '.join(all_kinds())}")
    params = kind.parse_params(req.params)
    allowed = set(kind.inputs) | set(kind.optional_inputs)
    for name in kind.inputs:
        if name not in req.inputs:
            raise ParamError(f"{kind.name} needs input {name!r}")
    for name, blob_id in req.inputs.items():
        if name not in allowed:
            raise ParamError(f"{kind.name} takes no input named {name!r}")
        if not blobs.exists(blob_id):
            raise ParamError(f"input {name!r} names no uploaded blob ({blob_id[:80]})")
    return kind, params

"""A job's view of the blob store on the master: its inputs by name, and where outputs go."""

from __future__ import annotations

from typing import BinaryIO, Iterable

from rvidia.master.blobs import BlobStore, BlobWriter


class JobInputs:
    def __init__(self, blobs: BlobStore, inputs: dict[str, str]) -> None:
        self._blobs = blobs
        self._inputs = dict(inputs)

    def names(self) -> list[str]:
        return list(self._inputs)

    def blob_id(self, name: str) -> str:
        return self._inputs[name]

    def size(self, name: str) -> int:
        return self._blobs.size(self._inputs[name])

    def open(self, name: str) -> BinaryIO:
        return self._blobs.open(self._inputs[name])


class JobOutputs:
    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    def write(self, name: str, parts: Iterable[bytes]) -> str:
        return self._blobs.put_parts(parts)

    def begin(self, name: str) -> BlobWriter:
        return self._blobs.writer()

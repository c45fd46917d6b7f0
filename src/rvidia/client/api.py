"""The Python API: a client for a running master, job handles, and the executor.

It speaks the public REST API only, so anything it does a script can do with curl.
"""

from __future__ import annotations

import math
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx

from rvidia import addresses, tls
from rvidia.client.localstore import LocalStore

TERMINAL = ("succeeded", "failed", "cancelled")
_UNKNOWN = object()


class JobFailed(Exception):
    """A job ended failed or cancelled; ``reason`` holds the error (with the remote traceback)."""

    def __init__(self, job_id: str, state: str, reason: str | None) -> None:
        super().__init__(f"job {job_id} {state}: {reason}" if reason else f"job {job_id} {state}")
        self.job_id, self.state, self.reason = job_id, state, reason


class MasterUnreachable(Exception):
    """The master cannot be reached, or refused the token (the CLI's exit code 3)."""


class TokenRefused(MasterUnreachable):
    """The master answered 401: retrying with the same token cannot help."""


class ApiError(Exception):
    """The master refused a request with a reason (bad parameters, unknown id, conflict)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Cluster:
    """A connection to a master: ``rvidia.connect(url, token=..., ca=...)``.

    ``ca`` (else $RVIDIA_CA) is the PEM file of the CA an https:// master's certificate must chain to,
    for a private certificate; without it the default trust store is used.
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 60.0,
                 ca: str | os.PathLike[str] | None = None) -> None:
        self.url = addresses.master_url(url)
        self.token = addresses.token(token)
        self.ca = tls.ca_file(ca)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                 verify=tls.httpx_verify(self.ca))
        self._store: object = _UNKNOWN

    # ------------------------------------------------------------ plumbing

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code == 401:
            raise TokenRefused(f"the master at {self.url} refused the token: {_error_text(response)}")
        if response.status_code >= 400:
            raise ApiError(response.status_code, _error_text(response))
        return response

    def _unreachable(self, exc: httpx.TransportError) -> MasterUnreachable:
        """The one-line reason a request never got an answer; a refused certificate says so."""
        refused = tls.verify_failure(exc)
        if refused is not None:
            return MasterUnreachable(tls.explain(self.url, refused, self.ca))
        return MasterUnreachable(f"cannot reach the master at {self.url}: {exc}")

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ reading

    def health(self) -> dict[str, Any]:
        return self.get("/api/v1/health")  # type: ignore[no-any-return]

    def workers(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/workers")  # type: ignore[no-any-return]

    def kinds(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/kinds")  # type: ignore[no-any-return]

    def jobs(self, limit: int = 50, before: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if before:
            params["before"] = before
        return self.get("/api/v1/jobs", params=params)  # type: ignore[no-any-return]

    def job(self, job_id: str) -> "Job":
        self.get(f"/api/v1/jobs/{job_id}")  # 404 -> ApiError
        return Job(self, job_id)

    # ------------------------------------------------------------ blobs

    def upload(self, data: bytes | list[Any] | str | os.PathLike[str]) -> str:
        """Store bytes, a list of bytes-like parts (stored joined) or a file (streamed) on the master;
        return its blob id. On the master's own machine, bytes are written straight into its store."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = [data]
        if isinstance(data, list):
            store = self._local_store()
            if store is not None:
                try:
                    return store.put(data)
                except OSError:
                    pass  # a full disk, a removed store: the upload says why, or succeeds
            return self.request("POST", "/api/v1/blobs", content=_slices(data)).json()["id"]  # type: ignore[no-any-return]
        with open(data, "rb") as f:
            return self.request("POST", "/api/v1/blobs", content=_file_parts(f)).json()["id"]  # type: ignore[no-any-return]

    def _local_store(self) -> LocalStore | None:
        """The master's store, when this client can write it directly (asked once)."""
        if self._store is _UNKNOWN:
            try:
                self._store = LocalStore.find(self.get("/api/v1/blobstore"))
            except (ApiError, ValueError):
                self._store = None  # an older master, or an answer that is not JSON: upload
        return self._store  # type: ignore[return-value]

    def download(self, blob_id: str, dest: str | os.PathLike[str]) -> Path:
        path = Path(dest)
        try:
            with self.http.stream("GET", f"/api/v1/blobs/{blob_id}") as response:
                if response.status_code != 200:
                    response.read()
                    raise ApiError(response.status_code, _error_text(response))
                with open(path, "wb") as f:
                    for part in response.iter_bytes(1 << 20):
                        f.write(part)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        return path

    def fetch(self, blob_id: str) -> bytes:
        return self.request("GET", f"/api/v1/blobs/{blob_id}").content

    # ------------------------------------------------------------ submitting

    def submit(self, kind: str, *, inputs: dict[str, Any] | None = None, priority: int = 0,
               max_attempts: int = 3, timeout: float | None = None, resources: dict[str, float] | None = None,
               idempotency_key: str | None = None, deadline: float | None = None, replicas: int = 1,
               **params: Any) -> "Job":
        """Submit a job of ``kind`` with ``params``; ``inputs`` values are paths, bytes or blob ids.
        ``replicas`` >= 2 runs each chunk on that many different workers and keeps agreeing results."""
        blobs = {name: self._as_blob(value) for name, value in (inputs or {}).items()}
        body = {"kind": kind, "params": params, "inputs": blobs, "priority": priority,
                "max_attempts": max_attempts, "timeout": timeout, "resources": resources or {},
                "replicas": replicas}
        if deadline is not None:  # seconds after submission; later the job is cancelled
            body["deadline"] = deadline
        key = idempotency_key or secrets.token_hex(16)
        for attempt in range(3):  # the key makes a retried submit return the first job
            try:
                response = self.request("POST", "/api/v1/jobs", json=body, headers={"Idempotency-Key": key})
                return Job(self, response.json()["id"], kind)
            except MasterUnreachable as exc:
                if attempt == 2 or isinstance(exc, TokenRefused):
                    raise
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    def _as_blob(self, value: Any) -> str:
        if isinstance(value, bytes):
            return self.upload(value)
        if isinstance(value, (str, os.PathLike)) and Path(value).is_file():
            return self.upload(value)
        if isinstance(value, str) and len(value) == 64:
            return value
        raise ValueError(f"an input must be a file path, bytes or a blob id, not {value!r:.80}")

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *, chunksize: int | None = None,
            allow_pickle_results: bool = False, star: bool = False, max_attempts: int = 1,
            priority: int = 0, timeout: float | None = None) -> "Job":
        """Run ``fn`` over ``items`` on workers started with --allow-code; results keep their order.

        ``timeout`` is seconds per chunk attempt: a chunk still running then is killed and fails (and
        is retried while ``max_attempts`` allows), so one endless call cannot hold a worker forever.
        """
        from rvidia.client.mapjob import pack_map

        items = list(items)
        size = chunksize or default_chunksize(len(items))
        function_blob, items_blob = pack_map(fn, items, size, self.upload)
        params = {"python": "{}.{}".format(*sys.version_info[:2]), "items": len(items), "star": star,
                  "allow_pickle_results": allow_pickle_results}
        job = self.submit("map", inputs={"function": self.upload(function_blob), "items": self.upload(items_blob)},
                          max_attempts=max_attempts, priority=priority, timeout=timeout, **params)
        job.allow_pickle = allow_pickle_results
        job.chunksize = size
        return job

    def executor(self, **kwargs: Any) -> Any:
        """A ``concurrent.futures.Executor`` running functions on the cluster's --allow-code workers."""
        from rvidia.client.executor import ClusterExecutor

        return ClusterExecutor(self, **kwargs)


def default_chunksize(n: int) -> int:
    """Items per chunk: enough chunks to balance a pool, few enough to keep overhead low."""
    return max(1, math.ceil(n / 512))


class Job:
    """A handle on a submitted job."""

    def __init__(self, cluster: Cluster, job_id: str, kind: str | None = None) -> None:
        self.cluster, self.id, self.kind = cluster, job_id, kind
        self.allow_pickle = False
        self.chunksize = 1

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.kind or ''}>"

    def status(self) -> dict[str, Any]:
        view: dict[str, Any] = self.cluster.get(f"/api/v1/jobs/{self.id}")
        self.kind = view["kind"]
        return view

    def cancel(self) -> dict[str, Any]:
        return self.cluster.request("POST", f"/api/v1/jobs/{self.id}/cancel").json()  # type: ignore[no-any-return]

    def wait(self, timeout: float | None = None, on_progress: Callable[[dict[str, Any]], None] | None = None
             ) -> dict[str, Any]:
        """Block until the job ends; return its final view (raise TimeoutError past ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # Long polls: the master answers as soon as the job ends. With a progress callback it also
        # answers every 0.25 s with the latest progress.
        step = 0.25 if on_progress is not None else 10.0
        wait = 0.0  # the first look is immediate
        while True:
            asked = time.monotonic()
            view = self._view(wait)
            if view["state"] not in TERMINAL and time.monotonic() - asked < wait / 2:
                time.sleep(0.05)  # a master that does not hold the answer (an older release): poll gently
            if on_progress is not None:
                on_progress(view)
            if view["state"] in TERMINAL:
                return view
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"job {self.id} still {view['state']} after {timeout} s")
            wait = step if left is None else max(0.01, min(step, left))

    def _view(self, wait: float) -> dict[str, Any]:
        if wait <= 0:
            return self.status()
        view = self.cluster.request("GET", f"/api/v1/jobs/{self.id}", params={"wait": f"{wait:.3f}"},
                                    timeout=wait + 30).json()
        self.kind = view["kind"]
        return view  # type: ignore[no-any-return]

    def result(self, timeout: float | None = None, allow_pickle_results: bool | None = None) -> Any:
        """The job's result (for ``map``, the list of results); raise JobFailed if it failed.

        Pickled map results are decoded only if this handle came from ``map(...,
        allow_pickle_results=True)`` or the caller passes ``allow_pickle_results=True`` here.
        """
        view = self.wait(timeout)
        if view["state"] != "succeeded":
            raise JobFailed(self.id, view["state"], view.get("error") or view.get("reason"))
        if view["kind"] == "map":
            from rvidia.kinds.map import decode_results

            allow = self.allow_pickle if allow_pickle_results is None else allow_pickle_results
            return decode_results(self.cluster.fetch(view["outputs"]["results"]), allow)
        return view["result"]

    def download_outputs(self, dest: str | os.PathLike[str] = ".") -> dict[str, Path]:
        """Write every output into ``dest`` (file names from the kind's output names)."""
        view = self.status()
        folder = Path(dest)
        folder.mkdir(parents=True, exist_ok=True)
        return {name: self.cluster.download(blob, folder / name) for name, blob in view["outputs"].items()}


def connect(url: str | None = None, token: str | None = None,
            ca: str | os.PathLike[str] | None = None) -> Cluster:
    """Connect to a running master (``--master``/``RVIDIA_MASTER``, token and ``--ca``/``RVIDIA_CA``
    rules apply)."""
    return Cluster(url, token, ca=ca)


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and "error" in body:
            return str(body["error"])
    except ValueError:
        pass
    return f"HTTP {response.status_code}"


def _slices(parts: list[Any]) -> Iterable[bytes]:
    """Sent in 1 MiB slices: one large body makes httpcore re-copy its tail after every send."""
    for part in parts:
        view = memoryview(part).cast("B")
        for i in range(0, len(view), 1 << 20):
            yield bytes(view[i : i + (1 << 20)])


def _file_parts(f: Any) -> Iterable[bytes]:
    while part := f.read(1 << 20):
        yield part

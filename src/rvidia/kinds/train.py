"""``train``: a small numpy MLP classifier trained data-parallel by federated averaging.

The training split is cut into a fixed number of ``shards`` (never the number of workers). Each
stage is one round: chunk ``i`` trains the current global model on shard ``i`` for a few local
epochs with its own random stream, ``SeedSequence([seed, 3], spawn_key=(round, shard))``; the master
averages the shards' weights by sample count, in shard order and in float64, evaluates the new model
on the held-out test split and plans the next round with the weights in the persisted stage state (a
restarted master continues from the last finished round). So the model is bit-identical whatever the
number of workers, and ``train_reference`` reproduces it in one process.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import re
import typing
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

import msgspec
import numpy as np

from rvidia.kinds.base import Done, JobContext, Kind, ParamError, Plan, RunContext
from rvidia.protocol import values

Weights = dict[str, np.ndarray]
_FILES = {"digits": "digits.csv.gz", "iris": "iris.csv", "wine": "wine_data.csv",  # inside scikit-learn
          "breast_cancer": "breast_cancer.csv"}
INLINE_LIMIT = 256 * 1024  # models larger than this travel through the blob store, not in frames
MAX_DATA_BYTES = 256 * 1024 * 1024  # the master loads a `data` input whole to evaluate the model
MAX_MODEL_VALUES = 16_000_000
_INIT, _SPLIT, _LOCAL = 1, 2, 3  # purposes of the random streams derived from `seed`


def _desc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class TrainParams(msgspec.Struct, forbid_unknown_fields=True):
    dataset: Annotated[Literal["digits", "iris", "wine", "breast_cancer"],
                       _desc("Dataset shipped with scikit-learn (ignored when a `data` input is given)")] = "digits"
    model: Annotated[Literal["mlp"], _desc("Model: one-hidden-layer perceptron")] = "mlp"
    rounds: Annotated[int, msgspec.Meta(ge=1, le=1000, description="Federated averaging rounds (stages)")] = 30
    shards: Annotated[int, msgspec.Meta(ge=1, le=256, description="Data shards = chunks per round (fixed)")] = 8
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1, description="Seed of split, init and batches")] = 0
    hidden: Annotated[int, msgspec.Meta(ge=1, le=4096, description="Hidden units")] = 64
    activation: Annotated[Literal["relu", "tanh"], _desc("Hidden layer activation")] = "relu"
    optimizer: Annotated[Literal["adam", "sgd"], _desc("Local optimizer (Adam state restarts each round)")] = "adam"
    learning_rate: Annotated[Annotated[float, msgspec.Meta(gt=0, le=10)] | None,
                             _desc("Step size (default: 0.005 with adam, 0.2 with sgd)")] = None
    local_epochs: Annotated[int, msgspec.Meta(ge=1, le=100, description="Epochs over its shard per round")] = 2
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=65536, description="Minibatch size")] = 32
    test_fraction: Annotated[float, msgspec.Meta(ge=0.01, le=0.9, description="Held-out test share")] = 0.25


# ---------------------------------------------------------------- data


@dataclass
class Prepared:
    """A dataset split and standardised (train statistics), with the training part cut into shards."""

    shards: list[tuple[np.ndarray, np.ndarray]]
    X_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    classes: np.ndarray
    test_rows: np.ndarray  # which rows of the dataset were held out

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])


def _rng(seed: int, purpose: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, purpose], spawn_key=key)))


def load_raw(dataset: str, source: str | Path | BinaryIO | None) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a `data` npz (validated, ParamError with the reason) or of a scikit-learn dataset."""
    if source is None:
        return _shipped(dataset)
    try:
        loaded = np.load(source, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ParamError("input 'data' must be an .npz holding arrays X and y, not a single array")
        with loaded as npz:
            missing = {"X", "y"} - set(npz.files)
            if missing:
                raise ParamError(f"input 'data' lacks array(s) {', '.join(sorted(missing))} (has {npz.files})")
            X, y = npz["X"], npz["y"]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, ParamError):
            raise
        raise ParamError(f"input 'data' is not a readable .npz of numeric arrays: {exc}") from None
    _validate(X, y)
    return X.astype(np.float64), y


def _shipped(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """A scikit-learn dataset read from its CSV file: importing sklearn.datasets costs ~2 s a process."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / _FILES[dataset] if spec and spec.origin else None
    if path is None or not path.is_file():  # a scikit-learn that stores them elsewhere: its loader
        import sklearn.datasets as skd

        bunch = getattr(skd, f"load_{dataset}")()
        return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)
    with (gzip.open(path, "rt") if path.suffix == ".gz" else open(path)) as f:
        table = np.loadtxt(f, delimiter=",", skiprows=0 if path.suffix == ".gz" else 1)
    return table[:, :-1], table[:, -1].astype(np.int64)


def _validate(X: np.ndarray, y: np.ndarray) -> None:
    if X.ndim != 2 or X.shape[1] < 1:
        raise ParamError(f"input 'data': X must be 2-D (samples, features), got shape {X.shape}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ParamError(f"input 'data': y has shape {y.shape} but X has {X.shape[0]} rows; "
                         "y must be 1-D with one label per row of X")
    if X.dtype.kind not in "biuf":
        raise ParamError(f"input 'data': X must be numeric, not {X.dtype}")
    if y.dtype.kind not in "biu":
        raise ParamError(f"input 'data': y must hold integer labels, not {y.dtype}")
    if not np.isfinite(X).all():
        raise ParamError("input 'data': X holds NaN or infinite values")
    if np.unique(y).size < 2:
        raise ParamError("input 'data': y needs at least two different labels")


def prepare(p: TrainParams, X: np.ndarray, y: np.ndarray) -> Prepared:
    """Deterministic split (from `seed`), standardisation and shards; ParamError if too small."""
    n = X.shape[0]
    n_test = int(round(n * p.test_fraction))
    if n_test < 1 or n - n_test < p.shards:
        raise ParamError(f"{n} samples with test_fraction={p.test_fraction} leave {n - n_test} for training and "
                         f"{n_test} for testing: need 1 test sample and shards={p.shards} training ones at least")
    classes, labels = np.unique(y, return_inverse=True)
    order = _rng(p.seed, _SPLIT).permutation(n)
    test, train = order[:n_test], order[n_test:]
    mean = X[train].mean(axis=0)
    scale = X[train].std(axis=0)
    scale[scale == 0] = 1.0
    Z = (X - mean) / scale
    shards = [(Z[idx], labels[idx]) for idx in np.array_split(train, p.shards)]
    return Prepared(shards, Z[test], labels[test], mean, scale, classes, test)


# ---------------------------------------------------------------- the model


def init_weights(n_in: int, hidden: int, n_out: int, seed: int, activation: str) -> Weights:
    rng = _rng(seed, _INIT)
    gain = 2.0 if activation == "relu" else 1.0
    return {"W1": rng.standard_normal((n_in, hidden)) * np.sqrt(gain / n_in), "b1": np.zeros(hidden),
            "W2": rng.standard_normal((hidden, n_out)) * np.sqrt(1.0 / hidden), "b2": np.zeros(n_out)}


def _forward(w: Weights, X: np.ndarray, activation: str) -> tuple[np.ndarray, np.ndarray]:
    """Hidden activations and log-probabilities."""
    Z = X @ w["W1"] + w["b1"]
    H = np.maximum(Z, 0.0) if activation == "relu" else np.tanh(Z)
    logits = H @ w["W2"] + w["b2"]
    logits = logits - logits.max(axis=1, keepdims=True)
    return H, logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def loss_and_grads(w: Weights, X: np.ndarray, y: np.ndarray, activation: str) -> tuple[float, Weights]:
    """Mean softmax cross-entropy of a batch and its gradients."""
    H, logp = _forward(w, X, activation)
    m = X.shape[0]
    loss = -float(logp[np.arange(m), y].mean())
    d_logits = np.exp(logp)
    d_logits[np.arange(m), y] -= 1.0
    d_logits /= m
    dH = d_logits @ w["W2"].T
    dZ = dH * (H > 0) if activation == "relu" else dH * (1.0 - H * H)
    grads = {"W1": X.T @ dZ, "b1": dZ.sum(axis=0), "W2": H.T @ d_logits, "b2": d_logits.sum(axis=0)}
    return loss, grads


def evaluate(w: Weights, X: np.ndarray, y: np.ndarray, activation: str) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of the model on (X, y)."""
    _, logp = _forward(w, X, activation)
    return -float(logp[np.arange(len(y)), y].mean()), float((logp.argmax(axis=1) == y).mean())


def local_train(w: Weights, X: np.ndarray, y: np.ndarray, p: TrainParams, rng: np.random.Generator
                ) -> tuple[Weights, float]:
    """``local_epochs`` of minibatch SGD or Adam; returns new weights and the last epoch's mean loss."""
    w = {k: v.copy() for k, v in w.items()}
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in w.items()}
    step, total = 0, 0.0
    for _ in range(p.local_epochs):
        order, total = rng.permutation(len(y)), 0.0
        for start in range(0, len(y), p.batch_size):
            batch = order[start : start + p.batch_size]
            loss, grads = loss_and_grads(w, X[batch], y[batch], p.activation)
            total += loss * len(batch)
            step += 1
            for k, g in grads.items():
                w[k] -= _update(g, moments[k], step, p)
    return w, total / len(y)


def step_size(p: TrainParams) -> float:
    if p.learning_rate is not None:
        return p.learning_rate
    return 0.005 if p.optimizer == "adam" else 0.2


def _update(g: np.ndarray, moment: tuple[np.ndarray, np.ndarray], step: int, p: TrainParams) -> np.ndarray:
    if p.optimizer == "sgd":
        return step_size(p) * g
    m, v = moment
    m[...] = 0.9 * m + 0.1 * g
    v[...] = 0.999 * v + 0.001 * g * g
    return step_size(p) * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)


def fed_average(results: list[tuple[int, Weights]]) -> Weights:
    """Sample-weighted mean of (n, weights), summed in the given (shard) order in float64."""
    total = sum(n for n, _ in results)
    out = {k: np.zeros_like(v, dtype=np.float64) for k, v in results[0][1].items()}
    for n, w in results:
        for k in out:
            out[k] += float(n) * w[k]
    return {k: v / total for k, v in out.items()}


def finish_round(p: TrainParams, prep: Prepared, round_: int, shard_results: dict[int, dict[str, Any]]
                 ) -> tuple[Weights, dict[str, Any]]:
    """The new global model from all shards' results, and this round's history entry."""
    ordered = [shard_results[i] for i in range(p.shards)]
    weights = fed_average([(r["n"], r["weights"]) for r in ordered])
    loss = sum(r["n"] * r["loss"] for r in ordered) / sum(r["n"] for r in ordered)
    if not all(np.isfinite(v).all() for v in weights.values()):
        raise ValueError(f"training diverged in round {round_ + 1} (non-finite weights): lower learning_rate")
    test_loss, accuracy = evaluate(weights, prep.X_test, prep.y_test, p.activation)
    return weights, {"round": round_ + 1, "loss": loss, "test_loss": test_loss, "accuracy": accuracy}


def train_reference(params: TrainParams | dict[str, Any], data: str | Path | None = None
                    ) -> tuple[Weights, list[dict[str, Any]]]:
    """The same federated procedure, every shard and round in this process: (weights, history)."""
    p = params if isinstance(params, TrainParams) else KIND.parse_params(params)
    prep = prepare(p, *load_raw(p.dataset, data))
    weights = init_weights(prep.n_features, p.hidden, len(prep.classes), p.seed, p.activation)
    history: list[dict[str, Any]] = []
    for r in range(p.rounds):
        results = {}
        for i, (X, y) in enumerate(prep.shards):
            new, loss = local_train(weights, X, y, p, _rng(p.seed, _LOCAL, r, i))
            results[i] = {"n": len(y), "loss": loss, "weights": new}
        weights, entry = finish_round(p, prep, r, results)
        history.append(entry)
    return weights, history


def model_npz(weights: Weights, prep: Prepared, activation: str) -> bytes:
    """The model as .npz bytes (np.savez stamps its zip entries 1980-01-01: equal models, equal bytes)."""
    buf = io.BytesIO()
    np.savez(buf, **weights, mean=prep.mean, scale=prep.scale, classes=prep.classes,
             activation=np.array(activation))
    return buf.getvalue()


# ---------------------------------------------------------------- the kind


def _pack(weights: Weights, put: Any) -> dict[str, Any]:
    """Weights inline when small, else uploaded with ``put`` and named by blob id."""
    raw = values.dumps(weights)
    if len(raw) <= INLINE_LIMIT:
        return {"inline": raw}
    return {"blob": put(raw), "size": len(raw)}


def _check_weights(w: Any, like: Weights) -> Weights:
    """A worker's weights, refused unless they have the global model's names, shapes and dtype."""
    if not isinstance(w, dict) or set(w) != set(like):
        raise ValueError("a shard result does not carry the model's weights")
    for k, ref in like.items():
        if not isinstance(w[k], np.ndarray) or w[k].shape != ref.shape or w[k].dtype != np.float64:
            raise ValueError(f"a shard result's {k} is not a float64 array of shape {ref.shape}")
    return w


class TrainKind(Kind):
    name = "train"
    description = "Train an MLP classifier by federated averaging over fixed data shards"
    Params = TrainParams
    optional_inputs = ("data",)

    def parse_params(self, raw: dict[str, Any]) -> TrainParams:
        try:
            return super().parse_params(raw)
        except ParamError as exc:
            found = re.search(r"Invalid enum value .* at `\$\.(\w+)`", str(exc))
            if found is None:
                raise
            hint = typing.get_type_hints(TrainParams, include_extras=True)[found.group(1)]
            choices = typing.get_args(typing.get_args(hint)[0])
            raise ParamError(f"{exc} (choose one of: {', '.join(choices)})") from None

    def _prep(self, ctx: JobContext) -> Prepared:
        return _memo(ctx.cache, "prep", None, lambda: _master_prep(ctx))

    def check(self, ctx: JobContext) -> None:
        prep = self._prep(ctx)
        p: TrainParams = ctx.params
        size = (prep.n_features + 1) * p.hidden + (p.hidden + 1) * len(prep.classes)
        if size > MAX_MODEL_VALUES:
            raise ParamError(f"the model would have {size} weights (limit {MAX_MODEL_VALUES}): lower hidden")

    def plan(self, ctx: JobContext) -> Plan:
        p: TrainParams = ctx.params
        prep = self._prep(ctx)
        weights = init_weights(prep.n_features, p.hidden, len(prep.classes), p.seed, p.activation)
        return Plan(n_chunks=p.shards, state={"round": 0, "weights": weights, "history": []})

    def chunk(self, ctx: JobContext, index: int) -> bytes:
        round_ = ctx.state["round"]
        packed = _memo(ctx.cache, "packed", round_,  # the global model is packed once per round
                       lambda: _pack(ctx.state["weights"], lambda raw: ctx.outputs.write("model", [raw])))
        return values.dumps({"round": round_, "shard": index, "model": packed})

    def new_acc(self, ctx: JobContext) -> dict[int, dict[str, Any]]:
        return {}

    def merge(self, ctx: JobContext, acc: dict[int, dict[str, Any]], index: int, result: bytes
              ) -> dict[int, dict[str, Any]]:
        res = values.loads(result)
        packed = res["weights"]
        if "blob" in packed:
            assert ctx.blobs is not None
            bound = sum(v.nbytes for v in ctx.state["weights"].values()) + 4096
            if ctx.blobs.size(packed["blob"]) > bound:
                raise ValueError(f"shard {index} names a result blob larger than the model")
            with ctx.blobs.open(packed["blob"]) as f:
                packed = {"inline": f.read()}
        weights = _check_weights(values.loads(packed["inline"]), ctx.state["weights"])
        n, loss = res["n"], res["loss"]
        if n != len(self._prep(ctx).shards[index][1]) or not isinstance(loss, float):
            raise ValueError(f"shard {index} reported {n!r} samples and loss {loss!r}")
        acc[index] = {"n": n, "loss": loss, "weights": weights}
        return acc

    def progress(self, ctx: JobContext, acc: dict[int, dict[str, Any]]) -> dict[str, Any]:
        p: TrainParams = ctx.params
        return {"round": min(ctx.state["round"] + 1, p.rounds), "rounds": p.rounds,
                "shards_done": len(acc), "history": ctx.state["history"]}

    def finish_stage(self, ctx: JobContext, acc: dict[int, dict[str, Any]]) -> Plan | Done:
        p: TrainParams = ctx.params
        prep = self._prep(ctx)
        round_ = ctx.state["round"]
        weights, entry = finish_round(p, prep, round_, acc)
        history = [*ctx.state["history"], entry]
        if round_ + 1 < p.rounds:
            return Plan(n_chunks=p.shards, state={"round": round_ + 1, "weights": weights, "history": history})
        blob = ctx.outputs.write("model.npz", [model_npz(weights, prep, p.activation)])
        result = {"test_accuracy": entry["accuracy"], "test_loss": entry["test_loss"], "rounds": p.rounds,
                  "history": history, "classes": prep.classes.tolist(),
                  "train_samples": sum(len(y) for _, y in prep.shards), "test_samples": len(prep.y_test)}
        return Done(result, {"model.npz": blob})

    def run(self, params: TrainParams, payload: bytes, ctx: RunContext) -> bytes:
        task = values.loads(payload)
        X, y = _worker_prep(params, ctx).shards[task["shard"]]
        weights = _worker_model(task["model"], ctx)
        rng = _rng(params.seed, _LOCAL, task["round"], task["shard"])
        new, loss = local_train(weights, X, y, params, rng)
        put = ctx.blobs.put if ctx.blobs is not None else None
        return values.dumps({"n": len(y), "loss": loss, "weights": _pack(new, put)})


def _master_prep(ctx: JobContext) -> Prepared:
    p: TrainParams = ctx.params
    if "data" not in ctx.inputs.names():
        return prepare(p, *load_raw(p.dataset, None))
    if ctx.inputs.size("data") > MAX_DATA_BYTES:
        raise ParamError(f"input 'data' is larger than {MAX_DATA_BYTES >> 20} MiB")
    with ctx.inputs.open("data") as f:
        return prepare(p, *load_raw(p.dataset, f))


def _memo(cache: dict[Any, Any], slot: str, key: Any, make: Any) -> Any:
    """``make()`` kept in ``cache[slot]`` until asked for with another key (one value per slot)."""
    cached = cache.get(slot)
    if cached is None or cached[0] != key:
        cached = cache[slot] = (key, make())
    return cached[1]


def _worker_prep(p: TrainParams, ctx: RunContext) -> Prepared:
    """The prepared dataset, kept in the chunk process for the next rounds (one dataset at a time)."""
    path = ctx.input_paths.get("data")
    key = (str(path) if path else p.dataset, p.seed, p.test_fraction, p.shards)
    return _memo(ctx.cache, "rvidia.train.data", key, lambda: prepare(p, *load_raw(p.dataset, path)))


def _worker_model(packed: dict[str, Any], ctx: RunContext) -> Weights:
    """The round's global model, fetched from the blob store once per chunk process when large."""
    if "inline" in packed:
        return values.loads(packed["inline"])
    if ctx.blobs is None:
        raise RuntimeError("this worker has no blob store access to fetch the global model")
    blobs = ctx.blobs
    return _memo(ctx.cache, "rvidia.train.model", packed["blob"],
                 lambda: values.loads(blobs.read_range(packed["blob"], 0, packed["size"])))


KIND = TrainKind()

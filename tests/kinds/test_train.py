"""The ``train`` kind: the numpy MLP, parameter and input refusals, order-independent federated
averaging, and end-to-end runs on 1 and 3 workers that must match ``train_reference`` bit for bit."""

from __future__ import annotations

import hashlib
import io
import itertools
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest

import rvidia
from rvidia.client.api import ApiError
from rvidia.kinds.base import Done, JobContext, ParamError, Plan, RunContext
from rvidia.kinds.train import (
    KIND, INLINE_LIMIT, TrainParams, evaluate, init_weights, load_raw, local_train, loss_and_grads,
    model_npz, prepare, train_reference,
)
from rvidia.protocol import values

pytestmark = pytest.mark.timeout(120)


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _blobs_data(n: int = 240, features: int = 6, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated Gaussian blobs with labels 2, 5 and 7 (labels need not start at 0)."""
    rng = np.random.default_rng(seed)
    labels = np.array([2, 5, 7])
    which = rng.integers(0, 3, size=n)
    centres = 3.0 * rng.standard_normal((3, features))
    return centres[which] + rng.standard_normal((n, features)), labels[which]


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


class _Inputs:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def names(self) -> list[str]:
        return list(self.files)

    def blob_id(self, name: str) -> str:
        return hashlib.sha256(self.files[name]).hexdigest()

    def size(self, name: str) -> int:
        return len(self.files[name])

    def open(self, name: str) -> BinaryIO:
        return io.BytesIO(self.files[name])


class _Outputs:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def write(self, name: str, parts: Any) -> str:
        data = b"".join(parts)
        blob = hashlib.sha256(data).hexdigest()
        self.blobs[blob] = data
        return blob


def _ctx(files: dict[str, bytes] | None = None, **params: Any) -> JobContext:
    return JobContext(job_id="j1", params=KIND.parse_params(params), inputs=_Inputs(files or {}),
                      outputs=_Outputs(), results=lambda: iter(()))  # type: ignore[arg-type]


# ---------------------------------------------------------------- the model


def test_loss_decreases_and_fits_a_tiny_problem() -> None:
    p = TrainParams(local_epochs=30, batch_size=8, hidden=16)
    X, y = _blobs_data(80, 4)
    labels = np.unique(y, return_inverse=True)[1]
    w0 = init_weights(4, 16, 3, seed=0, activation="relu")
    w1, last_epoch_loss = local_train(w0, X, labels, p, np.random.default_rng(0))
    before, after = evaluate(w0, X, labels, "relu"), evaluate(w1, X, labels, "relu")
    assert after[0] < before[0] / 4 and last_epoch_loss < before[0] / 4
    assert after[1] >= 0.95


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_gradients_match_finite_differences(activation: str) -> None:
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((5, 3)), np.array([0, 1, 2, 1, 0])
    w = init_weights(3, 4, 3, seed=2, activation=activation)
    _, grads = loss_and_grads(w, X, y, activation)
    for name in w:
        for pos in [(0,) * w[name].ndim, tuple(s - 1 for s in w[name].shape)]:
            up = {k: v.copy() for k, v in w.items()}
            down = {k: v.copy() for k, v in w.items()}
            up[name][pos] += 1e-6
            down[name][pos] -= 1e-6
            numeric = (loss_and_grads(up, X, y, activation)[0] - loss_and_grads(down, X, y, activation)[0]) / 2e-6
            assert abs(numeric - grads[name][pos]) < 1e-6


def test_reference_is_deterministic_given_the_seed() -> None:
    params = {"rounds": 2, "shards": 3, "optimizer": "sgd"}
    w_a, h_a = train_reference(params)
    w_b, h_b = train_reference(params)
    w_c, _ = train_reference({**params, "seed": 1})
    assert h_a == h_b and all(np.array_equal(w_a[k], w_b[k]) for k in w_a)
    assert not np.array_equal(w_a["W1"], w_c["W1"])
    assert [e["round"] for e in h_a] == [1, 2]


def test_shipped_digits_match_scikit_learn() -> None:
    from sklearn.datasets import load_digits

    X, y = load_raw("digits", None)
    bunch = load_digits()
    assert np.array_equal(X, bunch.data) and np.array_equal(y, bunch.target)


def test_split_and_shards_are_fixed_by_the_seed() -> None:
    X, y = load_raw("digits", None)
    a, b = prepare(TrainParams(), X, y), prepare(TrainParams(), X, y)
    c = prepare(TrainParams(seed=9), X, y)
    assert [len(s[1]) for s in a.shards] == [169] * 4 + [168] * 4 and len(a.y_test) == 449
    assert np.array_equal(a.X_test, b.X_test) and not np.array_equal(a.X_test, c.X_test)


def test_model_npz_bytes_do_not_depend_on_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _blobs_data()
    prep = prepare(TrainParams(shards=2), X, y)
    w = init_weights(prep.n_features, 8, 3, 0, "tanh")
    first = model_npz(w, prep, "tanh")
    monkeypatch.setattr(time, "time", lambda: 2.0e9)  # np.savez would stamp this date in its zip
    assert model_npz(w, prep, "tanh") == first
    loaded = np.load(io.BytesIO(first))
    assert np.array_equal(loaded["W1"], w["W1"]) and loaded["classes"].tolist() == [2, 5, 7]
    assert str(loaded["activation"]) == "tanh"


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("raw, reason", [
    ({"dataset": "mnist"}, "choose one of: digits"),
    ({"model": "cnn"}, "choose one of: mlp"),
    ({"rounds": 0}, "rounds"),
    ({"shards": 0}, "shards"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"epochs": 3}, "unknown field"),
])
def test_bad_params_are_refused(raw: dict[str, Any], reason: str) -> None:
    with pytest.raises(ParamError, match=reason):
        KIND.parse_params(raw)


@pytest.mark.parametrize("files, params, reason", [
    ({"data": _npz(X=np.ones((10, 2)), y=np.arange(9))}, {}, r"y has shape \(9,\) but X has 10 rows"),
    ({"data": _npz(X=np.ones((10, 2)))}, {}, "lacks array"),
    ({"data": _npz(X=np.ones(10), y=np.arange(10))}, {}, "must be 2-D"),
    ({"data": _npz(X=np.ones((10, 2)), y=np.linspace(0, 1, 10))}, {}, "integer labels"),
    ({"data": _npz(X=np.full((10, 2), np.nan), y=np.arange(10))}, {}, "NaN"),
    ({"data": _npz(X=np.ones((10, 2)), y=np.zeros(10, int))}, {}, "two different labels"),
    ({"data": b"not a zip"}, {}, "not a readable .npz"),
    ({"data": _npz(X=np.ones((10, 2)), y=np.arange(10) % 2)}, {"shards": 9}, "shards=9"),
    ({"data": _npz(X=np.ones((10, 5000)), y=np.arange(10) % 2)}, {"hidden": 4096, "shards": 1}, "lower hidden"),
    ({"data": _npz(X=np.ones((10, 2)))[:40]}, {}, "not a readable .npz"),
    ({"data": _npy(np.ones((10, 2)))}, {}, "not a single array"),
    ({}, {"dataset": "iris", "hidden": 4096, "shards": 2}, None),
])
def test_bad_data_is_refused_in_check(files: dict[str, bytes], params: dict[str, Any], reason: str | None) -> None:
    ctx = _ctx(files, **params)
    if reason is None:
        KIND.check(ctx)  # a big hidden layer on iris is fine
        return
    with pytest.raises(ParamError, match=reason):
        KIND.check(ctx)


# ---------------------------------------------------------------- merge and stages, in process


def _run_stage(ctx: JobContext) -> dict[int, bytes]:
    """Every chunk of the current stage run as a worker would, keyed by index."""
    run_ctx = RunContext(job_id="j1", stage=ctx.stage, index=0, input_paths={}, cache={})
    return {i: KIND.run(ctx.params, KIND.chunk(ctx, i), run_ctx) for i in range(ctx.params.shards)}


def test_merge_is_order_independent_bit_for_bit() -> None:
    ctx = _ctx(rounds=1, shards=5)
    ctx.state = KIND.plan(ctx).state
    results = _run_stage(ctx)
    models = []
    for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]]:
        acc = KIND.new_acc(ctx)
        for index in order:
            acc = KIND.merge(ctx, acc, index, results[index])
        done = KIND.finish_stage(ctx, acc)
        assert isinstance(done, Done)
        models.append(ctx.outputs.blobs[done.outputs["model.npz"]])  # type: ignore[attr-defined]
        assert done.result["history"][0]["round"] == 1
    assert models[0] == models[1] == models[2]
    w_ref, _ = train_reference({"rounds": 1, "shards": 5})
    assert np.array_equal(np.load(io.BytesIO(models[0]))["W2"], w_ref["W2"])


def test_a_forged_shard_result_is_refused() -> None:
    ctx = _ctx(rounds=1, shards=2)
    ctx.state = KIND.plan(ctx).state
    forged = values.dumps({"n": 5, "loss": 0.1, "weights": {"inline": values.dumps({"W1": np.ones(3)})}})
    with pytest.raises(ValueError, match="weights"):
        KIND.merge(ctx, KIND.new_acc(ctx), 0, forged)


def test_stages_resume_from_the_persisted_state_like_a_restarted_master() -> None:
    params = {"rounds": 3, "shards": 3, "hidden": 16}
    first = _ctx(**params)
    state = KIND.plan(first).state
    for stage in range(3):
        ctx = _ctx(**params)  # a fresh master each round: empty cache, state read back from storage
        ctx.stage, ctx.state = stage, values.loads(values.dumps(state))
        acc = KIND.new_acc(ctx)
        for index, result in _run_stage(ctx).items():
            acc = KIND.merge(ctx, acc, index, result)
        assert KIND.progress(ctx, acc)["history"] == ctx.state["history"]
        outcome = KIND.finish_stage(ctx, acc)
        state = outcome.state if isinstance(outcome, Plan) else None
    assert isinstance(outcome, Done)
    weights, history = train_reference(params)
    assert outcome.result["history"] == history
    model = np.load(io.BytesIO(ctx.outputs.blobs[outcome.outputs["model.npz"]]))  # type: ignore[attr-defined]
    assert all(np.array_equal(model[k], weights[k]) for k in weights)


# ---------------------------------------------------------------- end to end


def _model(cluster: rvidia.LocalCluster, job: Any) -> bytes:
    return cluster.fetch(job.status()["outputs"]["model.npz"])


def test_defaults_reach_95_percent_and_progress_shows_the_rounds(three: rvidia.LocalCluster) -> None:
    job = three.submit("train")
    lengths: list[int] = []
    while (view := job.status())["state"] in ("queued", "running"):
        detail = view["progress"].get("detail")
        if detail:
            assert detail["rounds"] == 30 and detail["round"] == len(detail["history"]) + 1
            lengths.append(len(detail["history"]))
        time.sleep(0.05)
    result = job.result()
    assert result["test_accuracy"] >= 0.95 and result["rounds"] == 30
    assert lengths == sorted(lengths) and len(set(lengths)) >= 3, lengths
    weights, history = train_reference({})
    assert result["history"] == history and len(history) == 30
    model = np.load(io.BytesIO(_model(three, job)))
    assert all(np.array_equal(model[k], weights[k]) for k in weights)


def test_one_and_three_workers_give_identical_models(one: rvidia.LocalCluster,
                                                     three: rvidia.LocalCluster) -> None:
    params = {"rounds": 4, "seed": 7, "optimizer": "sgd", "activation": "tanh"}
    jobs = [cluster.submit("train", **params) for cluster in (one, three)]
    results = [job.result(timeout=60) for job in jobs]
    assert results[0] == results[1]
    models = [_model(cluster, job) for cluster, job in zip((one, three), jobs)]
    assert models[0] == models[1]
    weights, history = train_reference(params)
    assert results[0]["history"] == history
    X, y = load_raw("digits", None)
    assert models[0] == model_npz(weights, prepare(TrainParams(**params), X, y), "tanh")


def test_a_data_input_with_a_large_model_matches_the_reference(tmp_path: Path, one: rvidia.LocalCluster,
                                                               three: rvidia.LocalCluster) -> None:
    X, y = _blobs_data(300, 600)  # W1 alone is 300 KiB: the models travel through the blob store
    assert X.shape[1] * 64 * 8 > INLINE_LIMIT
    path = tmp_path / "data.npz"
    path.write_bytes(_npz(X=X.astype(np.float32), y=y))
    params = {"rounds": 3, "shards": 5}
    jobs = [cluster.submit("train", inputs={"data": path}, **params) for cluster in (one, three)]
    results = [job.result(timeout=60) for job in jobs]
    assert results[0] == results[1] and results[0]["classes"] == [2, 5, 7]
    weights, history = train_reference(params, path)
    assert results[0]["history"] == history and results[0]["test_accuracy"] > 0.9
    models = [np.load(io.BytesIO(_model(c, j))) for c, j in zip((one, three), jobs)]
    assert all(np.array_equal(models[0][k], models[1][k]) for k in weights)  # 1 and 3 workers: identical
    # Against the in-process reference: BLAS may pick another kernel for this larger matrix in
    # another process (alignment, threads), so the last bits may differ.
    assert all(np.allclose(m[k], weights[k], rtol=1e-9, atol=1e-12)
               for m, k in itertools.product(models, weights))


@pytest.mark.parametrize("params, inputs, reason", [
    ({"dataset": "mnist"}, {}, "dataset"),
    ({"rounds": 0}, {}, "rounds"),
    ({}, {"data": _npz(X=np.ones((10, 2)), y=np.arange(11))}, "y has shape"),
    ({}, {"table": _npz(X=np.ones((10, 2)))}, "no input named 'table'"),
])
def test_the_api_refuses_bad_jobs_with_422(three: rvidia.LocalCluster, params: dict[str, Any],
                                           inputs: dict[str, bytes], reason: str) -> None:
    with pytest.raises(ApiError, match=reason) as info:
        three.submit("train", inputs=inputs, **params)
    assert info.value.status == 422

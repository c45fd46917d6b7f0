"""Benchmark: the ``train`` kind on a LocalCluster against ``train_reference`` in one process, and
scikit-learn's ``MLPClassifier(hidden_layer_sizes=(64,))`` on the same split.

BLAS is held to one thread everywhere (set before numpy is imported; the local master and workers
inherit it). The cluster is warmed with a one-round job first, so the timed job pays no imports. The
cluster's model must equal the reference's bit for bit; the script stops if it does not.

    python benchmarks/kinds/bench_train.py --workers 2 --rounds 30 --shards 8 [--hidden 512 --local-epochs 8]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for benchmarks.common
from benchmarks.common import pin_blas_threads  # noqa: E402

pin_blas_threads()  # before numpy is imported

import io  # noqa: E402
import os  # noqa: E402
import warnings  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import rvidia  # noqa: E402
from benchmarks.common import Row, Runs, job_rows, parser, report, time_jobs, time_runs  # noqa: E402
from rvidia.kinds.train import KIND, load_raw, prepare, train_reference  # noqa: E402


def sklearn_mlp(params: dict[str, Any], repeats: int) -> tuple[float, Runs]:
    """Test accuracy and timed fits of scikit-learn's MLP trained on the kind's training split."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    p = KIND.parse_params(params)
    prep = prepare(p, *load_raw(p.dataset, None))
    X = np.concatenate([x for x, _ in prep.shards])
    y = np.concatenate([y for _, y in prep.shards])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits = time_runs(lambda: MLPClassifier(hidden_layer_sizes=(p.hidden,), random_state=p.seed).fit(X, y),
                         repeats)
    return float(fits.last.score(prep.X_test, prep.y_test)), fits


def main() -> None:
    ap = parser(__doc__, repeats=3)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--local-epochs", type=int, default=2)
    args = ap.parse_args()
    params = {"dataset": args.dataset, "rounds": args.rounds, "shards": args.shards, "hidden": args.hidden,
              "local_epochs": args.local_epochs}
    ref = time_runs(lambda: train_reference(params), args.repeats)
    weights, history = ref.last
    with rvidia.LocalCluster(workers=args.workers) as cluster:
        cluster.submit("train", **{**params, "rounds": 1}).result()  # warm: chunk processes import and load
        runs = time_jobs(cluster, "train", args.repeats, **params)
        model = np.load(io.BytesIO(cluster.fetch(runs.job.status()["outputs"]["model.npz"])))
    assert all(np.array_equal(model[k], weights[k]) for k in weights), "the cluster's model differs"
    assert runs.result["history"] == history, "the cluster's history differs from the reference's"
    sk_acc, sk = sklearn_mlp(params, args.repeats)
    accuracy = runs.result["test_accuracy"]
    report("train", f"train {args.dataset}: {args.rounds} rounds x {args.shards} shards, hidden {args.hidden}, "
                    f"{args.local_epochs} local epochs, BLAS threads 1, cpus {os.cpu_count()}",
           [Row("train_reference, one process", ref.median, "identical model and history", ref="reference"),
            Row(f"scikit-learn MLPClassifier({args.hidden},)", sk.median, f"test accuracy {sk_acc:.4f}",
                ref="sklearn"),
            *job_rows(runs, args.workers, f"{runs.median / args.rounds * 1000:.0f} ms a round, "
                                          f"test accuracy {accuracy:.4f}")],
           [f"accuracy rvidia - sklearn: {accuracy - sk_acc:+.4f}"],
           repeats=args.repeats, json_path=args.json, check="model and history bit-identical to train_reference",
           workload=f"{args.dataset}, {args.rounds} rounds x {args.shards} shards, hidden {args.hidden}, "
                    f"{args.local_epochs} local epochs")


if __name__ == "__main__":
    main()

"""Example: train a digit classifier by federated averaging on a local RVIDIA cluster.

Run with ``python examples/train.py``. It submits a ``train`` job with the default parameters
(dataset ``digits``, 30 rounds over 8 shards) to a LocalCluster of two workers, prints the accuracy
round by round as the job reports it, downloads ``model.npz`` and uses it here to classify the test
split with plain numpy, then trains scikit-learn's ``MLPClassifier(hidden_layer_sizes=(64,))`` on the
same split for comparison.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import rvidia
from rvidia.kinds.train import TrainParams, load_raw, prepare


def predict(model_path: Path, X_raw: np.ndarray) -> np.ndarray:
    """Labels from a downloaded model.npz: standardise, hidden layer, argmax of the output layer."""
    with np.load(model_path) as m:
        Z = (X_raw - m["mean"]) / m["scale"]
        pre = Z @ m["W1"] + m["b1"]
        hidden = np.maximum(pre, 0.0) if str(m["activation"]) == "relu" else np.tanh(pre)
        return m["classes"][(hidden @ m["W2"] + m["b2"]).argmax(axis=1)]  # type: ignore[no-any-return]


def show_rounds(history: list[dict[str, Any]], shown: int) -> int:
    """Print the rounds not shown yet; return how many are shown now."""
    for entry in history[shown:]:
        print(f"  round {entry['round']:2d}: train loss {entry['loss']:.4f}, test accuracy {entry['accuracy']:.4f}")
    return max(shown, len(history))


def run_job(folder: Path) -> tuple[dict[str, Any], Path, float]:
    with rvidia.LocalCluster(workers=2) as cluster:
        started = time.perf_counter()
        job = cluster.submit("train")
        shown = 0
        while (view := job.status())["state"] in ("queued", "running"):
            shown = show_rounds((view["progress"].get("detail") or {}).get("history", []), shown)
            time.sleep(0.1)
        result = job.result()
        show_rounds(result["history"], shown)
        seconds = time.perf_counter() - started
        model = job.download_outputs(folder)["model.npz"]
    return result, model, seconds


def sklearn_baseline(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray
                     ) -> tuple[float, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(64,), random_state=0).fit(X_train, y_train)
    return float(clf.score(X_test, y_test)), time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print("training on 2 local workers (30 rounds over 8 shards):")
        result, model, seconds = run_job(Path(tmp))
        # The same split the job used: it is fixed by the seed (0, the default).
        X_raw, y_raw = load_raw("digits", None)
        prep = prepare(TrainParams(), X_raw, y_raw)
        predicted = predict(model, X_raw[prep.test_rows])
        local_accuracy = float((predicted == y_raw[prep.test_rows]).mean())
    print(f"rvidia train: test accuracy {result['test_accuracy']:.4f} in {seconds:.1f} s "
          f"({result['train_samples']} training / {result['test_samples']} test samples)")
    print(f"model.npz applied here with numpy: test accuracy {local_accuracy:.4f}")
    X_train = np.concatenate([X for X, _ in prep.shards])
    y_train = np.concatenate([y for _, y in prep.shards])
    sk_accuracy, sk_seconds = sklearn_baseline(X_train, y_train, prep.X_test, prep.y_test)
    print(f"scikit-learn MLPClassifier(64,) on the same split: test accuracy {sk_accuracy:.4f} "
          f"in {sk_seconds:.1f} s")
    assert abs(local_accuracy - result["test_accuracy"]) < 1e-12


if __name__ == "__main__":
    main()

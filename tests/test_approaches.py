"""Behavioural checks: each Keras approach does what its scikit-learn counterpart does.

The stage functions run directly (``task.fn``) on real built-in data, with the
default config of each approach, so these check the shipped settings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import DataConfig, LinearHingeConfig, RFFConfig, ScaleConfig
from tasks.ingest import describe_source, ingest
from tasks.scale import scale
from tasks.store.tables import feature_matrix, read_table


def _scaled(dataset: str, root: Path):
    data = DataConfig(dataset=dataset)
    return scale.fn(ingest.fn(describe_source(data), data, root=str(root)), ScaleConfig(), root=str(root))


def _test_predictions(ref) -> np.ndarray:
    return np.asarray(json.loads(ref.file("predictions.json").read_text())["test"])


def _splits(scaled):
    frame, _ = read_table(scaled)
    return feature_matrix(frame, "train"), feature_matrix(frame, "test")


def test_linear_hinge_agrees_with_linear_svc_on_breast_cancer(tmp_path):
    from sklearn.svm import LinearSVC

    from tasks.linear_hinge import linear_hinge

    scaled = _scaled("breast_cancer", tmp_path)
    (X_train, y_train), (X_test, y_test) = _splits(scaled)
    config = LinearHingeConfig()
    ours = _test_predictions(linear_hinge.fn(scaled, config, root=str(tmp_path)))
    reference = LinearSVC(C=config.C, loss="squared_hinge", max_iter=100_000, random_state=0).fit(X_train, y_train)
    theirs = reference.predict(X_test)
    agreement = float(np.mean(ours == theirs))
    acc_ours, acc_theirs = float(np.mean(ours == y_test)), float(np.mean(theirs == y_test))
    assert agreement >= 0.95, f"agreement {agreement:.3f}"
    assert abs(acc_ours - acc_theirs) <= 0.02, f"accuracy {acc_ours:.3f} vs LinearSVC {acc_theirs:.3f}"


def test_rff_svm_is_within_two_points_of_the_rbf_svc_on_digits(tmp_path):
    from sklearn.svm import SVC

    from tasks.core.margin import rbf_gamma
    from tasks.rff_svm import rff_svm

    scaled = _scaled("digits", tmp_path)
    (X_train, y_train), (X_test, y_test) = _splits(scaled)
    config = RFFConfig()
    ref = rff_svm.fn(scaled, config, root=str(tmp_path))
    gamma = rbf_gamma(X_train, config.gamma)
    assert ref.params["gamma"] == pytest.approx(gamma)
    acc_ours = float(np.mean(_test_predictions(ref) == y_test))
    acc_svc = float(SVC(kernel="rbf", C=config.C, gamma=gamma).fit(X_train, y_train).score(X_test, y_test))
    assert abs(acc_ours - acc_svc) <= 0.02, f"rff_svm {acc_ours:.4f} vs SVC {acc_svc:.4f}"


@pytest.mark.parametrize("labels", [["no", "yes"], [-1, 1], ["cat", "dog", "eel"]])
def test_linear_hinge_trains_on_the_labels_as_given(tmp_path, labels):
    """Binary string, binary {-1, +1} and multi-class string labels: separable data is learnt exactly."""
    from tasks.linear_hinge import linear_hinge
    from tasks.schema import LABEL, SPLIT

    k = len(labels)
    rng = np.random.default_rng(0)
    y = np.arange(120) % k
    X = rng.normal(scale=0.3, size=(120, k)) + 3.0 * np.eye(k)[y]
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(k)])
    frame["target"] = np.asarray(labels, dtype=object)[y]
    csv = tmp_path / "toy.csv"
    frame.to_csv(csv, index=False)
    data = DataConfig(dataset=None, input=str(csv), label="target")
    dataset = ingest.fn(describe_source(data), data, root=str(tmp_path))
    scaled = scale.fn(dataset, ScaleConfig(), root=str(tmp_path))
    stored, meta = read_table(scaled)
    assert meta["classes"] == sorted(labels)
    ref = linear_hinge.fn(scaled, LinearHingeConfig(epochs=50), root=str(tmp_path))
    test = stored[stored[SPLIT] == "test"]
    assert np.array_equal(_test_predictions(ref), test[LABEL].to_numpy())

"""Metrics: accuracy and macro-F1, the per-class report, and the comparison of approaches on the same rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.catalog import APPROACHES, MAIN_APPROACH


def metric_value(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """One metric, ``accuracy`` or ``macro_f1``, of predictions against true labels.

    Labels may be class indices or original label values (compared as values).
    """
    from sklearn.metrics import accuracy_score, f1_score

    if metric == "accuracy":
        return float(accuracy_score(y_true, y_pred))
    if metric == "macro_f1":
        return float(f1_score(y_true, y_pred, average="macro", zero_division=0))
    raise ValueError(f"unknown metric {metric!r} (accuracy or macro_f1)")


def score(y_true: np.ndarray, y_pred: np.ndarray, classes: list[Any]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    Args:
        y_true, y_pred: (n,) class indices into ``classes``.
    Returns:
        JSON-ready dict; ``confusion[i][j]`` counts rows of class i predicted as j.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "n_test": int(len(y_true)),
        "classes": classes,
        "per_class": [
            {"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        ],
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def compare(y_test: np.ndarray, y_val: np.ndarray, models: dict[str, dict], classes: list[Any]) -> dict[str, Any]:
    """metrics.json content from each approach's predictions and timing.

    Args:
        models: approach -> {"predictions": {"val": [...], "test": [...]}, "timing": {...}}.
    """
    main = MAIN_APPROACH if MAIN_APPROACH in models else next(iter(models))
    approaches = {}
    for a in APPROACHES:
        if a.name not in models:
            continue
        name = a.name
        pred = np.asarray(models[name]["predictions"]["test"])
        s = score(y_test, pred, classes)
        approaches[name] = {
            "accuracy": s["accuracy"], "macro_f1": s["macro_f1"], "objective": a.objective,
            **models[name]["timing"], "confusion": s["confusion"],
        }
        if models[name].get("search"):
            approaches[name]["search"] = models[name]["search"]["chosen"]
        for extra in ("solver", "budget"):
            if models[name].get(extra):
                approaches[name][extra] = models[name][extra]
    head = score(y_test, np.asarray(models[main]["predictions"]["test"]), classes)
    val_pred = np.asarray(models[main]["predictions"]["val"])
    head["val_accuracy"] = float(np.mean(val_pred == y_val)) if len(y_val) else float("nan")
    return {**head, "main": main, "approaches": approaches}

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


Z95 = 1.959964  # the normal quantile of a two-sided 95 % interval


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of an accuracy of ``correct`` out of ``n`` rows (95 % by default): unlike
    the normal approximation it stays inside [0, 1] and is not empty at 100 % (E. B. Wilson, 1927)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def ranking(y_test: np.ndarray, predictions: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Approaches ranked by test accuracy (ties: the order given), each with its 95 % Wilson interval and its
    difference from the best on the same rows.

    The difference is paired: per test row, the best's correctness less this approach's; its standard error is
    that of the mean of those row differences. ``within_noise``: the difference is under 1.96 standard errors
    (no disagreement at all counts as within noise), so these rows cannot tell the two apart at 95 %.
    """
    correct = {n: np.asarray(p) == y_test for n, p in predictions.items()}
    order = sorted(correct, key=lambda n: -int(correct[n].sum()))  # stable: ties keep the catalog's order
    best = correct[order[0]].astype(float)
    n = len(y_test)
    rows = []
    for rank, name in enumerate(order, 1):
        d = best - correct[name]
        se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        low, high = wilson(int(correct[name].sum()), n)
        rows.append({"rank": rank, "approach": name, "accuracy": float(correct[name].mean()) if n else 0.0,
                     "low": low, "high": high, "difference": float(d.mean()) if n else 0.0, "difference_se": se,
                     "within_noise": bool(d.mean() <= Z95 * se) if n else True})
    return rows


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
    ranked = ranking(y_test, {n: np.asarray(models[n]["predictions"]["test"]) for n in approaches})
    head = score(y_test, np.asarray(models[main]["predictions"]["test"]), classes)
    val_pred = np.asarray(models[main]["predictions"]["val"])
    head["val_accuracy"] = float(np.mean(val_pred == y_val)) if len(y_val) else float("nan")
    return {**head, "main": main, "approaches": approaches, "ranking": ranked}

"""SVMs from scikit-learn: fitting, saving and loading an ``SVC``, and the C x gamma search.

``svc.search`` scores every (C, gamma factor) grid point by stratified k-fold CV on the
training rows only (validation and test rows are never read); `choose` picks the best
and `searched_config` returns the settings to fit and the record saved as ``search.json``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from tasks.config import SVCConfig
from tasks.core.margin import rbf_gamma
from tasks.core.metrics import metric_value
from tasks.errors import InputError


def fit_svc(X_train: np.ndarray, y_train: np.ndarray, config: SVCConfig, sample_weight: np.ndarray | None = None):
    """Fit ``SVC(kernel, C, gamma, class_weight)`` on (n, k) features and (n,) class indices (optionally weighted)."""
    from sklearn.svm import SVC

    return SVC(
        kernel=config.kernel, C=config.C, gamma=config.gamma, class_weight=config.class_weight,
        random_state=config.seed,
    ).fit(X_train, y_train, sample_weight=sample_weight)


def save_svc(model, path) -> None:
    import skops.io as sio

    sio.dump(model, path)


SVC_TYPES = ("sklearn.svm._classes.SVC",)
# What skops writes for plain values: containers, strings, numbers and NumPy arrays and scalars.
_PLAIN_TYPES = {f"builtins.{t}" for t in ("bytes", "bytearray", "dict", "list", "str", "tuple", "int", "float",
                                          "bool", "NoneType", "complex", "set", "frozenset", "slice")}
_NUMPY_NAMES = {"ndarray", "dtype", "bool_", "str_", "bytes_", "object_", "float16", "float32", "float64",
                "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}


def skops_types(path) -> set[str]:
    """Every type a skops file names (``module.Class``), read from its schema without loading anything."""
    import json
    import zipfile

    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if "__class__" in node:
                found.add(f"{node.get('__module__')}.{node['__class__']}")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    try:
        with zipfile.ZipFile(path) as z:
            walk(json.loads(z.read("schema.json")))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable skops file ({e})") from None
    return found


def check_skops_types(path, objects: tuple[str, ...] | list[str]) -> None:
    """Refuse a skops file that names any type but plain values, NumPy arrays and ``objects``.

    Raises:
        ValueError: naming the first type that is not allowed (or an unreadable file).
    """
    allowed = _PLAIN_TYPES | {f"numpy.{n}" for n in _NUMPY_NAMES} | set(objects)
    refused = sorted(skops_types(path) - allowed)
    if refused:
        raise ValueError(f"{path}: refusing to load untrusted type {refused[0]}")


def skops_load(path, objects: tuple[str, ...] | list[str]):
    """Load a skops file whose types are exactly plain values, NumPy arrays and ``objects``.

    skops trusts many scikit-learn types by default; this refuses anything not listed,
    before skops deserialises a byte.

    Raises:
        ValueError: naming the first type that is not allowed.
    """
    import skops.io as sio

    check_skops_types(path, objects)
    return sio.load(path, trusted=sorted(skops_types(path)))


def load_svc(path):
    """Load an ``.skops`` SVC: only the types an SVC is made of are accepted (`skops_load`)."""
    model = skops_load(path, SVC_TYPES)
    from sklearn.svm import SVC

    if type(model) is not SVC:
        raise ValueError(f"{path}: holds a {type(model).__name__}, not an SVC")
    return model


def fit_searched(train: tuple[np.ndarray, np.ndarray], config: SVCConfig, cv_rows: list[dict[str, Any]] | None,
                 sample_weight: np.ndarray | None = None):
    """Fit an SVC on ``train`` = (X, y) with C and gamma from the search rows when there are any.

    Returns:
        (model, the settings fitted, the search record or None, fit seconds).
    """
    fitted, search = searched_config(config, cv_rows)
    start = time.perf_counter()
    model = fit_svc(*train, fitted, sample_weight)
    return model, fitted, search, time.perf_counter() - start


class CVPoint(BaseModel):
    """One grid point; only what decides its score, so growing the grid keeps the old points cached."""

    model_config = ConfigDict(frozen=True)

    kernel: str
    C: float
    gamma_factor: float
    class_weight: Literal["balanced"] | None
    folds: int
    metric: str
    seed: int


def grid(config: SVCConfig) -> list[CVPoint]:
    """The C x gamma-factor points (C only for the linear kernel, which has no gamma)."""
    factors = [1.0] if config.kernel == "linear" else config.search_gamma_factor
    return [
        CVPoint(kernel=config.kernel, C=c, gamma_factor=f, class_weight=config.class_weight,
                folds=config.search_folds, metric=config.search_metric, seed=config.seed)
        for c in config.search_C for f in dict.fromkeys(factors)
    ]


def fold_count(y: np.ndarray, folds: int) -> int:
    """``folds``, lowered to the smallest class's size; at least 2.

    Raises:
        InputError: a class with a single training row cannot be cross-validated.
    """
    present = np.bincount(y)
    smallest = int(present[present > 0].min()) if y.size else 0
    if smallest < 2:
        raise InputError(f"svc.search: a class has only {smallest} training row(s); CV needs at least 2 per class")
    return min(folds, smallest)


def cv_scores(X: np.ndarray, y: np.ndarray, point: CVPoint) -> tuple[float, list[float]]:
    """(gamma used, per-fold scores) of ``SVC`` at ``point`` on (X, y)."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import SVC

    gamma = point.gamma_factor * rbf_gamma(X, "scale")
    splitter = StratifiedKFold(n_splits=fold_count(y, point.folds), shuffle=True, random_state=point.seed)
    scores = []
    for fit_rows, score_rows in splitter.split(X, y):
        model = SVC(kernel=point.kernel, C=point.C, gamma=gamma, class_weight=point.class_weight,
                    random_state=point.seed).fit(X[fit_rows], y[fit_rows])
        scores.append(metric_value(point.metric, y[score_rows], model.predict(X[score_rows])))
    return gamma, scores


def cv_row(X: np.ndarray, y: np.ndarray, point: CVPoint) -> dict[str, Any]:
    """One scored grid point as ``cv.json`` holds it: the point, the gamma used, fold scores, mean and std."""
    gamma, scores = cv_scores(X, y, point)
    return {**point.model_dump(), "gamma": gamma, "scores": scores,
            "mean": float(np.mean(scores)), "std": float(np.std(scores))}


def choose(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(best row, table sorted best first) from the ``cv.json`` rows of scored grid points.

    Best: highest mean score; ties to the smaller C, then the gamma factor nearest 1.
    """
    if not rows:
        raise ValueError("svc.search: no grid points were scored")
    table = sorted(rows, key=lambda r: (-round(r["mean"], 12), r["C"], abs(math.log(r["gamma_factor"]))))
    return table[0], table


def searched_config(config: SVCConfig, rows: list[dict[str, Any]] | None) -> tuple[SVCConfig, dict[str, Any] | None]:
    """``config`` with the chosen C and gamma when ``rows`` came from a search, and the record to save."""
    if not rows:
        return config, None
    best, table = choose(rows)
    gamma = best["gamma"] if config.kernel != "linear" else config.gamma
    chosen = config.model_copy(update={"C": best["C"], "gamma": gamma})
    columns = ["C", "gamma_factor", "gamma", "mean", "std", "scores"]
    record = {
        "metric": best["metric"], "folds": len(best["scores"]),
        "chosen": {"C": best["C"], "gamma": gamma, "gamma_factor": best["gamma_factor"], "mean": best["mean"]},
        "table": [{k: r[k] for k in columns} for r in table],
    }
    return chosen, record

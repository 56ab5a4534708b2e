"""``svc.search``: choose the SVC's C and gamma by stratified k-fold CV on the training rows.

Each grid point is one cached ``svc_cv`` task (the flow maps them through its task
runner), scoring one (C, gamma factor) pair on the folds of the training rows of a
``features`` or ``scaled`` artifact. `choose` reads the points back, picks the best
and returns the CV table that ``train_svc`` / ``raw_svc`` record as ``search.json``.
Validation and test rows are never read here.

Output artifact ``svc_cv``: ``cv.json`` with the point, the resolved gamma and the
per-fold scores.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from tasks.artifacts import ArtifactRef, ArtifactWriter, read_json
from tasks.cache import stage
from tasks.config import SVCConfig
from tasks.errors import InputError
from tasks.ingest import feature_matrix, read_dataset
from tasks.log import stage_logger


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

    from tasks.evaluate import metric_value
    from tasks.margin import rbf_gamma

    gamma = point.gamma_factor * rbf_gamma(X, "scale")
    splitter = StratifiedKFold(n_splits=fold_count(y, point.folds), shuffle=True, random_state=point.seed)
    scores = []
    for fit_rows, score_rows in splitter.split(X, y):
        model = SVC(kernel=point.kernel, C=point.C, gamma=gamma, class_weight=point.class_weight,
                    random_state=point.seed).fit(X[fit_rows], y[fit_rows])
        scores.append(metric_value(point.metric, y[score_rows], model.predict(X[score_rows])))
    return gamma, scores


@stage("svc_cv")
def svc_cv(data: ArtifactRef, point: CVPoint, root: str) -> ArtifactRef:
    """Score one grid point by stratified k-fold CV on ``data``'s training rows."""
    frame, _ = read_dataset(data)
    X, y = feature_matrix(frame, "train")
    gamma, scores = cv_scores(X, y, point)
    stage_logger().info("svc_cv on %s: C=%g gamma_factor=%g -> mean %s %.4f over %d folds",
                        data.kind, point.C, point.gamma_factor, point.metric, float(np.mean(scores)), len(scores))
    with ArtifactWriter(root, "svc_cv", {"data": data.sha256, "point": point.model_dump()}) as w:
        w.write_json("cv.json", {**point.model_dump(), "gamma": gamma, "scores": scores,
                                 "mean": float(np.mean(scores)), "std": float(np.std(scores))})
    return w.ref


def choose(points: list[ArtifactRef]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(best row, table sorted best first) from ``svc_cv`` artifacts.

    Best: highest mean score; ties to the smaller C, then the gamma factor nearest 1.
    """
    rows = [read_json(ref, "cv.json") for ref in points]
    if not rows:
        raise ValueError("svc.search: no grid points were scored")
    table = sorted(rows, key=lambda r: (-round(r["mean"], 12), r["C"], abs(math.log(r["gamma_factor"]))))
    return table[0], table


def searched_config(config: SVCConfig, points: list[ArtifactRef] | None) -> tuple[SVCConfig, dict[str, Any] | None]:
    """``config`` with the chosen C and gamma when ``points`` came from a search, and the record to save."""
    if not points:
        return config, None
    best, table = choose(points)
    gamma = best["gamma"] if config.kernel != "linear" else config.gamma
    chosen = config.model_copy(update={"C": best["C"], "gamma": gamma})
    columns = ["C", "gamma_factor", "gamma", "mean", "std", "scores"]
    record = {
        "metric": best["metric"], "folds": len(best["scores"]),
        "chosen": {"C": best["C"], "gamma": gamma, "gamma_factor": best["gamma_factor"], "mean": best["mean"]},
        "table": [{k: r[k] for k in columns} for r in table],
    }
    return chosen, record

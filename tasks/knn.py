"""Stage knn (approach ``knn``): k nearest neighbours among the training rows, Euclidean or DTW.

Output artifact ``knn``: ``references.npz`` (the training rows and their classes: the model),
``config.json`` (metric, k, DTW band, and the leave-one-out table it was chosen by),
``predictions.json``, ``timing.json``.
"""

from __future__ import annotations

import io
import time

import numpy as np

from tasks.config import KNNConfig
from tasks.core.layout import Layout
from tasks.core.neighbors import dtw, euclidean, vote
from tasks.store.artifacts import ArtifactRef
from tasks.store.cache import stage
from tasks.store.outputs import write_model_artifact
from tasks.store.runlog import stage_logger
from tasks.store.tables import split_matrices


def metrics_to_try(config: KNNConfig, layout: Layout, n_query: int, n_ref: int) -> tuple[list[str], int, str]:
    """(metrics, DTW band in steps, a note when DTW is left out)."""
    if layout.kind != "sequence":
        if config.metric == "dtw":
            return ["euclidean"], 0, f"knn.metric = 'dtw' needs sequences, the rows are a {layout.kind}: Euclidean"
        return ["euclidean"], 0, ""
    T = layout.shape[0]
    band = int(round(config.dtw_window * T))
    cells = n_query * n_ref * T * (2 * band + 1)
    if config.metric == "euclidean":
        return ["euclidean"], band, ""
    if config.metric == "auto" and cells > config.dtw_max_cells:
        return ["euclidean"], band, f"DTW left out: {cells:.2g} cells > knn.dtw_max_cells {config.dtw_max_cells:.2g}"
    return (["dtw"] if config.metric == "dtw" else ["euclidean", "dtw"]), band, ""


def distances(metric: str, Q: np.ndarray, R: np.ndarray, layout: Layout, band: int) -> np.ndarray:
    if metric == "euclidean":
        return euclidean(Q, R)
    shape = (-1, *layout.shape)
    return dtw(Q.reshape(shape), R.reshape(shape), band)


@stage("knn")
def knn(scaled: ArtifactRef, config: KNNConfig, root: str) -> ArtifactRef:
    """Choose metric and k by leave-one-out on the train rows; predict val and test from the train rows."""
    data, meta = split_matrices(scaled)
    (X, y), n_classes = data["train"], len(meta["classes"])
    layout = Layout.from_json(meta.get("layout"), X.shape[1])
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    queries = np.sort(rng.choice(len(y), size=min(len(y), config.select_rows), replace=False))
    metrics, band, note = metrics_to_try(config, layout, len(queries) + len(y), len(y))
    log = stage_logger()
    if note:
        log.info("knn: %s", note)
    table = []
    for metric in metrics:
        D = distances(metric, X[queries], X, layout, band)
        D[np.arange(len(queries)), queries] = np.inf  # leave each query row out
        for k in config.k_values:
            acc = float(np.mean(vote(D, y, min(k, len(y) - 1), n_classes) == y[queries]))
            table.append({"metric": metric, "k": k, "loo_accuracy": acc})
    best = max(range(len(table)), key=lambda i: (table[i]["loo_accuracy"], -i))
    metric, k = table[best]["metric"], table[best]["k"]
    fit_seconds = time.perf_counter() - start
    log.info("knn: chose %s k=%d (leave-one-out accuracy %.4f on %d training rows)%s", metric, k,
             table[best]["loo_accuracy"], len(queries), f", band {band} steps" if metric == "dtw" else "")

    def predict(rows: np.ndarray) -> np.ndarray:
        return vote(distances(metric, rows, X, layout, band), y, k, n_classes)

    def save(w) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, X=X.astype(np.float32), y=y)
        w.path("references.npz").write_bytes(buffer.getvalue())

    chosen = {"metric": metric, "k": k, "dtw_band": band if metric == "dtw" else None, "selection": table,
              "note": note or None}
    return write_model_artifact(root, "knn", {"scaled": scaled.sha256, "config": config.model_dump()}, save,
                                predict, data, fit_seconds, extra={"config.json": chosen})

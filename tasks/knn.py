"""Stage knn (approach ``knn``): k nearest neighbours among the training rows, Euclidean or DTW.

Output artifact ``knn``: ``references.npz`` (the training rows and their classes: the model),
``config.json`` (metric, k, DTW band, and the leave-one-out table it was chosen by),
``predictions.json``, ``timing.json``. Reads the ``dataset`` artifact too: DTW compares each
raw series z-normalised, not column-scaled rows.
"""

from __future__ import annotations

import time

import numpy as np

from tasks.catalog import skip_reason
from tasks.config import KNNConfig
from tasks.core.layout import Layout
from tasks.core.neighbors import dtw, euclidean, vote
from tasks.obs.runlog import stage_logger
from tasks.store.artifacts import ArtifactRef
from tasks.store.cache import stage
from tasks.store.kinds import CONFIG, REFERENCES
from tasks.store.outputs import write_model_artifact
from tasks.store.tables import batch_rows_of, read_meta, split_matrices


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


def znormal(X: np.ndarray, layout: Layout) -> np.ndarray:
    """Each series (row) less its mean, over its standard deviation, per channel: what DTW compares
    (the pipeline's column scaling would weigh time steps differently)."""
    S = X.reshape(-1, *layout.shape)
    sd = S.std(axis=1, keepdims=True)
    return (S - S.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)


def distances(metric: str, Q: dict[str, np.ndarray], R: dict[str, np.ndarray], band: int) -> np.ndarray:
    """Distances between query and reference rows, each given as ``{"scaled": ..., "series": ...}``."""
    if metric == "euclidean":
        return euclidean(Q["scaled"], R["scaled"])
    return dtw(Q["series"], R["series"], band)


@stage("knn", imports=())
def knn(dataset: ArtifactRef, scaled: ArtifactRef, config: KNNConfig, root: str) -> ArtifactRef | None:
    """Choose metric and k by leave-one-out on the train rows; predict val and test from the train rows.

    Euclidean distances are taken between scaled rows; DTW between the raw series, each z-normalised.
    Returns None (skipped, with a log line) past ``data.batch_rows`` training rows (`tasks.catalog.skip_reason`).
    """
    meta = read_meta(scaled)
    reason = skip_reason("knn", int(meta["split_sizes"]["train"]), batch_rows_of(meta))
    if reason:
        stage_logger().info("knn: skipped: %s", reason)
        return None
    data, meta = split_matrices(scaled)
    raw, _ = split_matrices(dataset)
    (X, y), n_classes = data["train"], len(meta["classes"])
    layout = Layout.from_meta(meta)
    sequence = layout.kind == "sequence"

    def rows(split: str, index=slice(None)) -> dict[str, np.ndarray]:
        return {"scaled": data[split][0][index], "series": znormal(raw[split][0][index], layout) if sequence else None}

    R = rows("train")
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    queries = np.sort(rng.choice(len(y), size=min(len(y), config.select_rows), replace=False))
    metrics, band, note = metrics_to_try(config, layout, len(queries) + len(y), len(y))
    log = stage_logger()
    if note:
        log.info("knn: %s", note)
    table = []
    for metric in metrics:
        D = distances(metric, rows("train", queries), R, band)
        D[np.arange(len(queries)), queries] = np.inf  # leave each query row out
        for k in config.k_values:
            acc = float(np.mean(vote(D, y, min(k, len(y) - 1), n_classes) == y[queries]))
            table.append({"metric": metric, "k": k, "loo_accuracy": acc})
    best = max(range(len(table)), key=lambda i: (table[i]["loo_accuracy"], -i))
    metric, k = table[best]["metric"], table[best]["k"]
    fit_seconds = time.perf_counter() - start
    log.info("knn: chose %s k=%d (leave-one-out accuracy %.4f on %d training rows)%s", metric, k,
             table[best]["loo_accuracy"], len(queries), f", band {band} steps" if metric == "dtw" else "")

    def predict(X_split: np.ndarray) -> np.ndarray:
        """The val or the test rows (DTW needs their raw series, so the split is found by identity)."""
        split = next(s for s in ("val", "test") if X_split is data[s][0])
        return vote(distances(metric, rows(split), R, band), y, k, n_classes)

    def save(w) -> None:
        np.savez(w.path(REFERENCES), X=X.astype(np.float32), y=y, **({"series": R["series"]} if sequence else {}))

    chosen = {"metric": metric, "k": k, "dtw_band": band if metric == "dtw" else None, "selection": table,
              "note": note or None}
    params = {"dataset": dataset.sha256, "scaled": scaled.sha256, "config": config.model_dump()}
    return write_model_artifact(root, "knn", params, save,
                                predict, data, fit_seconds, extra={CONFIG: chosen})

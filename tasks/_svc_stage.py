"""Shared body of the two SVC stages, ``train_svc`` (on encoder features) and ``raw_svc`` (on scaled raw
features), and of ``choose_solver``, the decision they fit with: resolve the solver, fit with the searched
or configured C and gamma, log, and write the model artifact.

Not a stage itself; only stage modules import it.
"""

from __future__ import annotations

import functools
import operator
import time
from typing import Any

import numpy as np

from tasks.config import SVCConfig
from tasks.core import nystroem
from tasks.core.svm import (
    PROBE_ROWS,
    PROBE_SAMPLE,
    class_weights,
    fit_svc,
    kernel_map,
    resolve_kernel,
    resolve_solver,
    save_svc,
    searched_config,
)
from tasks.obs.runlog import stage_logger
from tasks.store.artifacts import ArtifactRef, read_json
from tasks.store.kinds import CONFIG, CV, SEARCH, SOLVER, SVC_MODEL
from tasks.store.outputs import total_seconds, write_model_artifact
from tasks.store.tables import (
    batch_rows_of,
    feature_names,
    iter_row_groups,
    iter_split,
    labels,
    load_split,
    read_meta,
    row_group_parts,
)


def for_data(config: SVCConfig, meta: dict[str, Any]) -> SVCConfig:
    """``config`` with ``kernel = "auto"`` resolved for the rows whose ``meta.json`` is ``meta``: the features of the
    encoder kind it names (``extract_features`` writes it), or the scaled inputs (`tasks.core.svm.resolve_kernel`)."""
    return resolve_kernel(config, meta.get("encoder_kind"))


def solver_record(data_ref: ArtifactRef, config: SVCConfig) -> dict[str, Any]:
    """`tasks.core.svm.resolve_solver` for the training rows of ``data_ref``; the exact fit's cost, when it
    must be predicted, is measured on a seeded sample of at most `PROBE_SAMPLE` (and ``data.batch_rows``)
    training rows."""
    meta = read_meta(data_ref)
    config = for_data(config, meta)
    n_train, d = int(meta["split_sizes"]["train"]), len(feature_names(data_ref))
    sample = None
    if config.solver == "auto" and n_train > PROBE_ROWS:
        sample = load_split(data_ref, "train", max_rows=min(batch_rows_of(meta), PROBE_SAMPLE), seed=config.seed)
    return {**resolve_solver(config, n_train, d, sample), "n_train": n_train}


def map_partitions(fn, parts: list) -> list:
    """``[fn(p) for p in parts]``, on the Dask cluster's workers when this runs in a Dask worker (the Dask
    engine), else here; results in ``parts`` order either way."""
    try:
        from distributed import get_worker, worker_client

        get_worker()
    except (ImportError, ValueError):
        return [fn(p) for p in parts]
    with worker_client() as client:
        futures = client.map(fn, parts, pure=False)
        return [f.result() for f in futures]


def partition_moments(data_ref: ArtifactRef, kmap, n_classes: int, weights, batch: int,
                      part: tuple[int, int]):
    """`tasks.core.nystroem.Moments` of the training rows in row groups ``part`` (None when it has none)."""
    return nystroem.moments(iter_row_groups(data_ref, "train", *part, batch), kmap, n_classes, weights)


def fit_streamed(data_ref: ArtifactRef, config: SVCConfig):
    """The approx solver on ``data_ref``: centres from a seeded sample of ``data.batch_rows`` training rows, the
    sums streamed per row-group partition (on every Dask worker under the Dask engine) and added in partition
    order, lambda swept on the validation rows. Returns (model, record)."""
    meta = read_meta(data_ref)
    batch, n_classes = batch_rows_of(meta), len(meta["classes"])
    n_train, n_val = int(meta["split_sizes"]["train"]), int(meta["split_sizes"].get("val", 0))
    sample, _ = load_split(data_ref, "train", max_rows=batch, seed=config.seed, dtype=np.float32)
    kmap = kernel_map(sample, n_train, config)
    sampled = len(sample)
    del sample
    weights = class_weights(config, np.bincount(labels(data_ref, "train"), minlength=n_classes))
    parts = row_group_parts(data_ref)
    sums = [m for m in map_partitions(functools.partial(partition_moments, data_ref, kmap, n_classes, weights,
                                                        batch), parts) if m is not None]
    total = functools.reduce(operator.add, sums) if sums else None
    model, sweep = nystroem.fit(kmap, total, n_classes, config.C, iter_split(data_ref, "val", batch) if n_val else None)
    return model, {"components": model.n_components, "gamma": kmap.gamma if kmap.width else None,
                   "lambda": model.lambda_, "sweep": sweep, "partitions": len(parts),
                   "sampled_for_centres": sampled,
                   "memory_mb": round(nystroem.memory_bytes(kmap.width or 0, model.coef_.shape[1]) / 2**20, 1)}


def fit_svc_artifact(data_ref: ArtifactRef, config: SVCConfig, cv: list[ArtifactRef] | None, root: str,
                     kind: str, solver: ArtifactRef | None = None) -> ArtifactRef:
    """Fit an SVC on ``data_ref``'s train rows (C and gamma from ``cv`` when searched); write artifact ``kind``.

    ``solver``: the ``choose_solver`` artifact of ``data_ref`` (decided here when None). ``exact`` holds the
    training rows; ``approx`` holds one batch (and a sample of ``data.batch_rows`` rows for the centres and
    gamma) and streams the rest from disk.
    """
    log = stage_logger()
    meta = read_meta(data_ref)
    batch, n_train = batch_rows_of(meta), int(meta["split_sizes"]["train"])
    fitted, search = searched_config(for_data(config, meta), [read_json(ref, CV) for ref in cv or []])
    if search:
        log.info("%s: search chose C=%g gamma=%s (CV %s %.4f)", kind, fitted.C, fitted.gamma,
                 search["metric"], search["chosen"]["mean"])
    record = read_json(solver, SOLVER) if solver is not None else solver_record(data_ref, config)
    start = time.perf_counter()
    if record["solver"] == "exact":
        if n_train > batch:
            log.warning("%s: the exact solver holds all %d training rows (data.batch_rows = %d)", kind, n_train, batch)
        X, y = load_split(data_ref, "train")
        model = fit_svc(X, y, fitted)
        del X
        record = {**record, "support_vectors": int(model.n_support_.sum())}
        log.info("%s: solver exact (%s): %d support vectors on %d training rows", kind, record["reason"],
                 record["support_vectors"], n_train)
    else:
        model, details = fit_streamed(data_ref, fitted)
        record = {**record, **details}
        log.info("%s: solver approx (%s): %d Nystroem centres, lambda %g, %d training rows in %d partitions",
                 kind, record["reason"], model.n_components, model.lambda_, n_train, details["partitions"])
    fit_seconds = time.perf_counter() - start
    record["fit_seconds"] = round(fit_seconds, 3)
    predicted = record.get("predicted_seconds")
    if predicted is not None:
        log.info("%s: the %s fit took %.1f s (the exact fit was predicted %.1f s)", kind, record["solver"],
                 fit_seconds, predicted)
    params = {data_ref.kind: data_ref.sha256, "config": config.model_dump(), "cv": [r.sha256 for r in cv or []],
              "solver": solver.sha256 if solver is not None else None}
    return write_model_artifact(root, kind, params, lambda w: save_svc(model, w.path(SVC_MODEL)),
                                model.predict,  # streamed a batch at a time; NystroemRidge maps it in chunks
                                data_ref, fit_seconds, extra={CONFIG: fitted.model_dump(), SEARCH: search,
                                                              SOLVER: record},
                                inputs_seconds=total_seconds(data_ref))

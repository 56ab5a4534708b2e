"""Shared body of the two SVC stages, ``train_svc`` (on encoder features) and ``raw_svc`` (on scaled raw
features): resolve the solver, fit with the searched or configured C and gamma, log, and write the
model artifact.

Not a stage itself; only stage modules import it.
"""

from __future__ import annotations

import time

import numpy as np

from tasks.config import SVCConfig
from tasks.core.svm import (
    chunked_predict,
    fit_approx,
    fit_svc,
    in_memory_passes,
    resolve_solver,
    save_svc,
    searched_config,
)
from tasks.store.artifacts import ArtifactRef, read_json
from tasks.store.outputs import write_model_artifact
from tasks.store.runlog import stage_logger
from tasks.store.tables import batch_rows_of, labels, load_split, read_meta, shuffled_batches


def fit_svc_artifact(data_ref: ArtifactRef, config: SVCConfig, cv: list[ArtifactRef] | None, root: str,
                     kind: str) -> ArtifactRef:
    """Fit an SVC on ``data_ref``'s train rows (C and gamma from ``cv`` when searched); write artifact ``kind``.

    ``exact`` holds the training rows; ``approx`` holds one batch (and a sample of ``data.batch_rows``
    rows for the kernel map's basis and gamma) and streams the rest from disk.
    """
    log = stage_logger()
    meta = read_meta(data_ref)
    batch, n_train, k = batch_rows_of(meta), int(meta["split_sizes"]["train"]), len(meta["classes"])
    fitted, search = searched_config(config, [read_json(ref, "cv.json") for ref in cv or []])
    if search:
        log.info("%s: search chose C=%g gamma=%s (CV %s %.4f)", kind, fitted.C, fitted.gamma,
                 search["metric"], search["chosen"]["mean"])
    solver, why = resolve_solver(config, n_train)
    record = {"solver": solver, "reason": why, "n_train": n_train}
    start = time.perf_counter()
    if solver == "exact":
        if n_train > batch:
            log.warning("%s: svc.solver = exact holds all %d training rows (data.batch_rows = %d)", kind, n_train, batch)
        X, y = load_split(data_ref, "train")
        model = fit_svc(X, y, fitted)
        del X
        log.info("%s: solver exact (%s): %d support vectors on %d training rows", kind, why,
                 int(model.n_support_.sum()), n_train)
    else:
        sample, y_sample = load_split(data_ref, "train", max_rows=batch, seed=config.seed)
        if n_train <= batch:
            passes = in_memory_passes(sample, y_sample, batch, config.seed)
        else:
            def passes(i: int):
                return shuffled_batches(data_ref, "train", batch, seed=config.seed * 1009 + i)
        model = fit_approx(sample, passes, np.bincount(labels(data_ref, "train"), minlength=k), fitted)
        kernel_map = model.named_steps.get("map")
        record.update({"components": int(kernel_map.n_components) if kernel_map else 0,
                       "epochs": fitted.approx_epochs, "gamma": kernel_map.gamma if kernel_map else None,
                       "sampled_for_basis": int(len(y_sample))})
        del sample
        log.info("%s: solver approx (%s): Nystroem %d components, %d passes over %d training rows", kind, why,
                 record["components"], fitted.approx_epochs, n_train)
    fit_seconds = time.perf_counter() - start
    params = {data_ref.kind: data_ref.sha256, "config": config.model_dump(), "cv": [r.sha256 for r in cv or []]}
    return write_model_artifact(root, kind, params, lambda w: save_svc(model, w.path("svc.skops")),
                                chunked_predict(model),
                                data_ref, fit_seconds, extra={"config.json": fitted.model_dump(), "search.json": search,
                                                              "solver.json": record})

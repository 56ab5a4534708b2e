"""Shared body of the two SVC stages, ``train_svc`` (on encoder features) and ``raw_svc`` (on scaled raw
features): fit with the searched or configured C and gamma, log, and write the model artifact.

Not a stage itself; only stage modules import it.
"""

from __future__ import annotations

from tasks.config import SVCConfig
from tasks.core.svm import fit_searched, save_svc
from tasks.store.artifacts import ArtifactRef, read_json
from tasks.store.outputs import write_model_artifact
from tasks.store.runlog import stage_logger
from tasks.store.tables import split_matrices


def fit_svc_artifact(data_ref: ArtifactRef, config: SVCConfig, cv: list[ArtifactRef] | None, root: str,
                     kind: str) -> ArtifactRef:
    """Fit an SVC on ``data_ref``'s train rows (C and gamma from ``cv`` when searched); write artifact ``kind``."""
    data, _ = split_matrices(data_ref)
    rows = [read_json(ref, "cv.json") for ref in cv or []]
    model, fitted, search, fit_seconds = fit_searched(data["train"], config, rows)
    log = stage_logger()
    if search:
        log.info("%s: search chose C=%g gamma=%s (CV %s %.4f)", kind, fitted.C, fitted.gamma,
                 search["metric"], search["chosen"]["mean"])
    log.info("%s: %d support vectors on %d training rows", kind, int(model.n_support_.sum()), len(data["train"][1]))
    params = {data_ref.kind: data_ref.sha256, "config": config.model_dump(), "cv": [r.sha256 for r in cv or []]}
    return write_model_artifact(root, kind, params, lambda w: save_svc(model, w.path("svc.skops")), model.predict,
                                data, fit_seconds, extra={"config.json": fitted.model_dump(), "search.json": search})

"""Stage 5, train_svc: scikit-learn ``SVC`` fitted on the training features.

Output artifact ``svc``: ``svc.skops`` (loaded without unrestricted pickle),
``config.json``, ``predictions.json`` (val and test rows) and ``timing.json``.
`write_model_outputs` writes the last two for every model stage (`tasks.approaches` too).
"""

from __future__ import annotations

import time

import numpy as np

from tasks.artifacts import ArtifactRef, ArtifactWriter
from tasks.cache import stage
from tasks.config import SVCConfig
from tasks.ingest import split_matrices
from tasks.log import stage_logger


def fit_svc(X_train: np.ndarray, y_train: np.ndarray, config: SVCConfig):
    """Fit ``SVC(kernel, C, gamma, class_weight)`` on (n, k) features and (n,) class indices."""
    from sklearn.svm import SVC

    return SVC(
        kernel=config.kernel, C=config.C, gamma=config.gamma, class_weight=config.class_weight,
        random_state=config.seed,
    ).fit(X_train, y_train)


def save_svc(model, path) -> None:
    import skops.io as sio

    sio.dump(model, path)


def load_svc(path):
    """Load an ``.skops`` SVC, trusting only the types scikit-learn's SVC is made of."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    allowed = {"sklearn.svm._classes.SVC"}
    refused = [t for t in untrusted if t not in allowed]
    if refused:
        raise ValueError(f"{path}: refusing to load untrusted type {refused[0]}")
    return sio.load(path, trusted=untrusted)


def write_model_outputs(w: ArtifactWriter, predict, data: dict, fit_seconds: float) -> None:
    """``predictions.json`` (val and test class indices) and ``timing.json`` for a fitted model."""
    start = time.perf_counter()
    preds = {s: [int(v) for v in predict(data[s][0])] for s in ("val", "test")}
    predict_seconds = time.perf_counter() - start
    w.write_json("predictions.json", preds)
    w.write_json("timing.json", {"fit_seconds": round(fit_seconds, 4), "predict_seconds": round(predict_seconds, 4)})


def fit_and_write(data_ref: ArtifactRef, config: SVCConfig, cv: list[ArtifactRef] | None, root: str, kind: str,
                  params: dict) -> ArtifactRef:
    """Fit an SVC on ``data_ref``'s train rows (C and gamma from ``cv`` when searched) and write ``kind``.

    Files: ``svc.skops``, ``config.json`` (the settings fitted), ``predictions.json``,
    ``timing.json`` and, after a search, ``search.json`` (chosen point and CV table).
    """
    from tasks.search import searched_config

    data, _ = split_matrices(data_ref)
    fitted, search = searched_config(config, cv)
    start = time.perf_counter()
    model = fit_svc(*data["train"], fitted)
    fit_seconds = time.perf_counter() - start
    log = stage_logger()
    if search:
        log.info("%s: search chose C=%g gamma=%s (CV %s %.4f)", kind, fitted.C, fitted.gamma,
                 search["metric"], search["chosen"]["mean"])
    log.info("%s: %d support vectors on %d training rows", kind, int(model.n_support_.sum()), len(data["train"][1]))
    with ArtifactWriter(root, kind, {**params, "config": config.model_dump(), "cv": [r.sha256 for r in cv or []]}) as w:
        save_svc(model, w.path("svc.skops"))
        w.write_json("config.json", fitted.model_dump())
        if search:
            w.write_json("search.json", search)
        write_model_outputs(w, model.predict, data, fit_seconds)
    return w.ref


@stage("train_svc")
def train_svc(features: ArtifactRef, config: SVCConfig, root: str, cv: list[ArtifactRef] | None = None) -> ArtifactRef:
    """Fit on the ``features`` artifact's train rows; write the ``svc`` artifact.

    ``cv``: the ``svc_cv`` artifacts of a search over ``features`` (``svc.search``).
    """
    return fit_and_write(features, config, cv, root, "svc", {"features": features.sha256})

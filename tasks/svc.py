"""Stage 5, train_svc: scikit-learn ``SVC`` fitted on the training features.

Output artifact ``svc``: ``svc.skops`` (loaded without unrestricted pickle),
``config.json``, ``predictions.json`` (val and test rows) and ``timing.json``.
"""

from __future__ import annotations

import time

import numpy as np

from tasks.artifacts import ArtifactRef, ArtifactWriter
from tasks.cache import stage
from tasks.config import SVCConfig
from tasks.ingest import feature_matrix, read_dataset
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


@stage("train_svc")
def train_svc(features: ArtifactRef, config: SVCConfig, root: str) -> ArtifactRef:
    """Fit on the ``features`` artifact's train rows; write the ``svc`` artifact."""
    from tasks.approaches import write_model_outputs

    frame, _ = read_dataset(features)
    data = {s: feature_matrix(frame, s) for s in ("train", "val", "test")}
    start = time.perf_counter()
    model = fit_svc(*data["train"], config)
    fit_seconds = time.perf_counter() - start
    stage_logger().info("train_svc: %d support vectors on %d training rows", int(model.n_support_.sum()), len(data["train"][1]))
    with ArtifactWriter(root, "svc", {"features": features.sha256, "config": config.model_dump()}) as w:
        save_svc(model, w.path("svc.skops"))
        w.write_json("config.json", config.model_dump())
        write_model_outputs(w, model.predict, data, fit_seconds)
    return w.ref

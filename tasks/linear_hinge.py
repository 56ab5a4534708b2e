"""Stage linear_hinge (approach ``linear_hinge``): a linear Keras model with hinge loss and the SVM's L2 penalty.

Output artifact ``linear_hinge``: ``model.keras``, ``history.json``, ``predictions.json``, ``timing.json``.
"""

from __future__ import annotations

from tasks._rows import keras_rows
from tasks.config import LinearHingeConfig
from tasks.core.margin_models import CURVE_VAL_ROWS, build_linear_hinge, fit_keras_margin, keras_predictor
from tasks.core.networks import save_keras
from tasks.obs.runlog import epoch_progress
from tasks.store.artifacts import ArtifactRef
from tasks.store.cache import stage
from tasks.store.kinds import BUDGET, HISTORY, KERAS_MODEL
from tasks.store.outputs import write_model_artifact
from tasks.store.tables import batch_rows_of, load_split


@stage("linear_hinge")
def linear_hinge(scaled: ArtifactRef, config: LinearHingeConfig, root: str) -> ArtifactRef:
    """Fit on the ``scaled`` artifact's train rows; write the ``linear_hinge`` artifact."""
    X, y, _, meta = keras_rows(scaled, config, with_val=False)
    val = load_split(scaled, "val", max_rows=min(CURVE_VAL_ROWS, batch_rows_of(meta)), seed=config.seed)
    k, n, d = len(meta["classes"]), len(X), len(meta["feature_names"])
    model, fit_seconds, history, budget = fit_keras_margin(
        lambda: build_linear_hinge(d, k, n, config), X, y, k, config.loss, config,
        callbacks=(epoch_progress("linear_hinge"),), validation=val)
    return write_model_artifact(root, "linear_hinge", {"scaled": scaled.sha256, "config": config.model_dump()},
                                lambda w: save_keras(model, w.path(KERAS_MODEL)), keras_predictor(model), scaled, fit_seconds,
                                extra={HISTORY: history, BUDGET: budget})

"""Stage rff_svm (approach ``rff_svm``): random Fourier features + a linear squared-hinge head, an
approximate RBF-kernel SVM inside Keras.

Output artifact ``rff_svm``: ``model.keras``, ``history.json``, ``predictions.json``, ``timing.json``.
"""

from __future__ import annotations

from tasks._rows import keras_rows
from tasks.config import RFFConfig
from tasks.core.margin import TableRows, rbf_gamma
from tasks.core.margin_models import CURVE_VAL_ROWS, build_rff_svm, fit_keras_margin, keras_predictor
from tasks.core.networks import save_keras
from tasks.obs.runlog import epoch_progress
from tasks.store.artifacts import ArtifactRef
from tasks.store.cache import stage
from tasks.store.kinds import BUDGET, HISTORY, KERAS_MODEL
from tasks.store.outputs import write_model_artifact
from tasks.store.tables import batch_rows_of, load_split


@stage("rff_svm")
def rff_svm(scaled: ArtifactRef, config: RFFConfig, root: str) -> ArtifactRef:
    """Fit on the ``scaled`` artifact's train rows with gamma resolved on them; write the ``rff_svm`` artifact."""
    X, y, _, meta = keras_rows(scaled, config, with_val=False)
    val = load_split(scaled, "val", max_rows=min(CURVE_VAL_ROWS, batch_rows_of(meta)), seed=config.seed)
    k, n, d = len(meta["classes"]), len(X), len(meta["feature_names"])
    streamed = isinstance(X, TableRows)
    sample = load_split(scaled, "train", max_rows=batch_rows_of(meta), seed=config.seed)[0] if streamed else X
    gamma = rbf_gamma(sample, config.gamma)  # on a sample of data.batch_rows training rows when streamed
    del sample
    model, fit_seconds, history, budget = fit_keras_margin(lambda: build_rff_svm(d, k, n, gamma, config), X, y, k,
                                                           "squared_hinge", config,
                                                           callbacks=(epoch_progress("rff_svm"),), validation=val)
    params = {"scaled": scaled.sha256, "config": config.model_dump(), "gamma": gamma}
    return write_model_artifact(root, "rff_svm", params, lambda w: save_keras(model, w.path(KERAS_MODEL)),
                                keras_predictor(model), scaled, fit_seconds,
                                extra={HISTORY: history, BUDGET: budget})

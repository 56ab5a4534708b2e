"""Stage rff_svm (approach ``rff_svm``): random Fourier features + a linear squared-hinge head, an
approximate RBF-kernel SVM inside Keras.

Output artifact ``rff_svm``: ``model.keras``, ``history.json``, ``predictions.json``, ``timing.json``.
"""

from __future__ import annotations

from tasks.config import RFFConfig
from tasks.core.margin import rbf_gamma
from tasks.core.margin_models import build_rff_svm, fit_keras_margin, keras_predictor
from tasks.store.artifacts import ArtifactRef
from tasks.store.cache import stage
from tasks.store.outputs import write_model_artifact
from tasks.store.runlog import epoch_progress
from tasks.store.tables import split_matrices


@stage("rff_svm")
def rff_svm(scaled: ArtifactRef, config: RFFConfig, root: str) -> ArtifactRef:
    """Fit on the ``scaled`` artifact's train rows with gamma resolved on them; write the ``rff_svm`` artifact."""
    data, meta = split_matrices(scaled)
    k, (n, d) = len(meta["classes"]), data["train"][0].shape
    gamma = rbf_gamma(data["train"][0], config.gamma)
    model, fit_seconds, history = fit_keras_margin(lambda: build_rff_svm(d, k, n, gamma, config), data, k,
                                                   "squared_hinge", config,
                                                   callbacks=(epoch_progress(config.epochs, "rff_svm"),))
    params = {"scaled": scaled.sha256, "config": config.model_dump(), "gamma": gamma}
    return write_model_artifact(root, "rff_svm", params, lambda w: model.save(w.path("model.keras")),
                                keras_predictor(model), data, fit_seconds, extra={"history.json": history})

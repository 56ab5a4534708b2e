"""The approaches compared beside the main path, each a cached stage on the same scaled split.

Every model stage (these and ``train_svc``) writes, besides its model, ``predictions.json``
(class indices for the val and test rows) and ``timing.json`` (fit and predict seconds),
so `evaluate` scores all approaches the same way.

* ``raw_svc``      - scikit-learn ``SVC`` on the scaled raw features (the reference);
* ``linear_hinge`` - a linear Keras model minimising the linear SVM objective;
* ``deep_hinge``   - the encoder architecture trained end to end with squared hinge;
* ``rff_svm``      - random Fourier features (RBF kernel) + linear hinge head, in Keras.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tasks.artifacts import ArtifactRef, ArtifactWriter
from tasks.cache import stage
from tasks.config import EncoderConfig, LinearHingeConfig, RFFConfig, SVCConfig
from tasks.ingest import split_matrices
from tasks.margin import decide, fit_keras, glorot, hinge_targets, l2_for_svm, n_outputs, rbf_gamma, seeded_keras
from tasks.svc import fit_and_write, write_model_outputs

OBJECTIVES = {
    "raw_svc": "SVC dual (hinge loss + RBF/other kernel) on the scaled raw features",
    "linear_hinge": "linear model, hinge loss + L2 = 1/(2 C n): the linear SVM primal, fitted by Adam",
    "features_svc": "Keras encoder (cross-entropy) learns features; SVC maximises the margin on them",
    "deep_hinge": "the encoder network trained end to end with one-vs-rest squared hinge",
    "rff_svm": "random Fourier features (RBF kernel approximation) + linear squared-hinge SVM, in Keras",
}


def build_linear_hinge(n_features: int, n_classes: int, n_train: int, config: LinearHingeConfig):
    """inputs (batch, d) -> Dense(1 or k), L2 on the kernel = 1/(2 C n k_out)."""
    import keras

    k = n_outputs(n_classes, config.loss)
    inputs = keras.Input((n_features,), name="inputs")
    outputs = keras.layers.Dense(
        k, name="margin", kernel_initializer=glorot(config.seed, 0),
        kernel_regularizer=keras.regularizers.L2(l2_for_svm(config.C, n_train, k)),
    )(inputs)
    return keras.Model(inputs, outputs, name="linear_hinge")


def build_rff_svm(n_features: int, n_classes: int, n_train: int, gamma: float, config: RFFConfig):
    """inputs (batch, d) -> RandomFourierFeatures (batch, D) -> Dense(1 or k) squared-hinge head."""
    import keras

    from tasks.layers import RandomFourierFeatures

    k = n_outputs(n_classes, "squared_hinge")
    inputs = keras.Input((n_features,), name="inputs")
    z = RandomFourierFeatures(config.n_components, gamma, seed=config.seed, name="rff")(inputs)
    outputs = keras.layers.Dense(
        k, name="margin", kernel_initializer=glorot(config.seed, 0),
        kernel_regularizer=keras.regularizers.L2(l2_for_svm(config.C, n_train, k)),
    )(z)
    return keras.Model(inputs, outputs, name="rff_svm")


def fit_keras_margin(build, data: dict, n_classes: int, loss: str, config: Any) -> tuple[Any, float]:
    """Seed, build and fit a margin model on the train rows; returns (model, fit seconds)."""
    X, y = data["train"]
    with seeded_keras(config.seed):
        start = time.perf_counter()
        model = build()
        fit_keras(model, X, hinge_targets(y, n_classes, loss), loss, config.epochs, config.batch_size,
                  config.learning_rate)
        return model, time.perf_counter() - start


def keras_predictor(model, batch_size: int = 1024):
    def predict(X: np.ndarray) -> np.ndarray:
        return decide(model.predict(X.astype("float32"), batch_size=batch_size, verbose=0))

    return predict


@stage("raw_svc")
def raw_svc(scaled: ArtifactRef, config: SVCConfig, root: str, cv: list[ArtifactRef] | None = None) -> ArtifactRef:
    """SVC on the scaled raw features, with the same settings (and search) as the features SVC."""
    return fit_and_write(scaled, config, cv, root, "raw_svc", {"scaled": scaled.sha256})


@stage("linear_hinge")
def linear_hinge(scaled: ArtifactRef, config: LinearHingeConfig, root: str) -> ArtifactRef:
    """A linear Keras model with hinge loss and the SVM's L2 penalty."""
    data, meta = split_matrices(scaled)
    k, (n, d) = len(meta["classes"]), data["train"][0].shape
    model, fit_seconds = fit_keras_margin(lambda: build_linear_hinge(d, k, n, config), data, k, config.loss, config)
    with ArtifactWriter(root, "linear_hinge", {"scaled": scaled.sha256, "config": config.model_dump()}) as w:
        model.save(w.path("model.keras"))
        write_model_outputs(w, keras_predictor(model), data, fit_seconds)
    return w.ref


@stage("deep_hinge")
def deep_hinge(scaled: ArtifactRef, config: EncoderConfig, root: str) -> ArtifactRef:
    """The encoder architecture, trained end to end with one-vs-rest squared hinge."""
    from tasks.encoder import train

    data, meta = split_matrices(scaled)
    cfg = config.model_copy(update={"objective": "squared_hinge"})
    start = time.perf_counter()
    model, history = train(*data["train"], *data["val"], len(meta["classes"]), cfg, str(meta["source"]), name="deep_hinge")
    fit_seconds = time.perf_counter() - start
    with ArtifactWriter(root, "deep_hinge", {"scaled": scaled.sha256, "config": cfg.model_dump()}) as w:
        model.save(w.path("model.keras"))
        w.write_json("history.json", history)
        write_model_outputs(w, keras_predictor(model), data, fit_seconds)
    return w.ref


@stage("rff_svm")
def rff_svm(scaled: ArtifactRef, config: RFFConfig, root: str) -> ArtifactRef:
    """Random Fourier features + linear squared-hinge head: an approximate RBF SVM in Keras."""
    data, meta = split_matrices(scaled)
    k, (n, d) = len(meta["classes"]), data["train"][0].shape
    gamma = rbf_gamma(data["train"][0], config.gamma)
    model, fit_seconds = fit_keras_margin(
        lambda: build_rff_svm(d, k, n, gamma, config), data, k, "squared_hinge", config
    )
    params = {"scaled": scaled.sha256, "config": config.model_dump(), "gamma": gamma}
    with ArtifactWriter(root, "rff_svm", params) as w:
        model.save(w.path("model.keras"))
        write_model_outputs(w, keras_predictor(model), data, fit_seconds)
    return w.ref

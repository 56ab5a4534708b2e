"""Margin models built in Keras: a linear SVM (hinge loss + the SVM's L2 penalty) and an
approximate RBF-kernel SVM (random Fourier features + a linear hinge head).

Keras is imported inside the functions.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tasks.config import LinearHingeConfig, RFFConfig
from tasks.core.margin import decide, fit_keras, glorot, hinge_targets, l2_for_svm, n_outputs, seeded_keras


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

    from tasks.core.layers import RandomFourierFeatures

    k = n_outputs(n_classes, "squared_hinge")
    inputs = keras.Input((n_features,), name="inputs")
    z = RandomFourierFeatures(config.n_components, gamma, seed=config.seed, name="rff")(inputs)
    outputs = keras.layers.Dense(
        k, name="margin", kernel_initializer=glorot(config.seed, 0),
        kernel_regularizer=keras.regularizers.L2(l2_for_svm(config.C, n_train, k)),
    )(z)
    return keras.Model(inputs, outputs, name="rff_svm")


def fit_keras_margin(build, data: dict, n_classes: int, loss: str, config: Any,
                     callbacks: tuple = ()) -> tuple[Any, float, dict[str, list[float]]]:
    """Seed, build and fit a margin model on the train rows; returns (model, fit seconds, history).

    The seconds start once the Keras lock is held: waiting for other fits is not counted.
    """
    X, y = data["train"]
    with seeded_keras(config.seed):
        start = time.perf_counter()
        model = build()
        history = fit_keras(model, X, hinge_targets(y, n_classes, loss), loss, config.epochs, config.batch_size,
                            config.learning_rate, callbacks=callbacks)
        return model, time.perf_counter() - start, history


def keras_predictor(model, batch_size: int = 1024):
    """(n, d) rows -> (n,) class indices from a margin model's scores."""

    def predict(X: np.ndarray) -> np.ndarray:
        return decide(model.predict(X.astype("float32"), batch_size=batch_size, verbose=0))

    return predict

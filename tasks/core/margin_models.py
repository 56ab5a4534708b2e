"""Margin models built in Keras: a linear SVM (hinge loss + the SVM's L2 penalty) and an
approximate RBF-kernel SVM (random Fourier features + a linear hinge head).

Keras is imported inside the functions.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tasks.config import LinearHingeConfig, RFFConfig
from tasks.core.margin import (
    TableRows,
    budget_used,
    fit_keras,
    glorot,
    hinge_targets,
    l2_for_svm,
    n_outputs,
    padded_forward,
    predicted_classes,
    seeded_keras,
    step_budget,
)


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


# Validation rows the linear Keras approaches score after each epoch, for their curves only (they keep their
# last epoch: nothing is chosen on these rows).
CURVE_VAL_ROWS = 2048


def fit_keras_margin(build, X, y, n_classes: int, loss: str, config: Any, callbacks: tuple = (),
                     validation: tuple[np.ndarray, np.ndarray] | None = None,
                     ) -> tuple[Any, float, dict[str, list[float]], dict[str, Any]]:
    """Seed, build and fit a margin model on the train rows; returns (model, fit seconds, history, budget).

    ``X``: (n, d) rows and ``y`` their class indices, or a `tasks.core.networks.TableRows` streamed from disk
    (``y`` None). Length: `tasks.core.margin.step_budget`. ``validation``: (rows, class indices) scored after
    each epoch for the curves (``val_loss``); it changes no weight. The seconds start once the Keras lock is
    held: waiting for other fits is not counted.
    """
    streamed = isinstance(X, TableRows)
    budget = step_budget(X, config)
    if validation is not None and len(validation[1]) == 0:  # no val rows: no curve to draw
        validation = None

    def targets(t):
        return hinge_targets(t, n_classes, loss)

    with seeded_keras(config.seed):
        start = time.perf_counter()
        model = build()
        history = fit_keras(model, X, targets if streamed else targets(y), loss, budget["epochs"], config.batch_size,
                            config.learning_rate, callbacks=callbacks,
                            validation=None if validation is None else (validation[0], targets(validation[1])),
                            steps_per_epoch=budget["steps_per_epoch"] if streamed else None, seed=config.seed)
        return model, time.perf_counter() - start, history, budget_used(X, config, history)


def keras_predictor(model, batch_size: int = 1024):
    """(n, d) rows -> (n,) class indices from a margin model's scores.

    Rows are padded to a whole number of batches, so every call runs the same compiled step: a
    table streamed in batches of varying size does not compile a new one per remainder.
    """
    def predict(X: np.ndarray) -> np.ndarray:
        return predicted_classes(padded_forward(model.predict_on_batch, X, batch_size))
    return predict

"""Margin-classifier building blocks for Keras: hinge targets, decisions, the SVM's L2 factor,
seeded initializers, and one seeded fit at a time.

Keras converts {0, 1} labels to {-1, +1} only when a whole batch is {0, 1}, and passes
integer class ids through silently; these helpers always convert explicitly.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from tasks.store.progress import waiting

# Keras seeds (numpy, Python and the backend's global seed) are process-wide; fits that
# run concurrently in the flow's thread pool would interleave them. One fit at a time
# keeps every Keras result a function of its seed.
KERAS_FIT_LOCK = threading.Lock()


def glorot(seed: int, index: int):
    """A Glorot-uniform initializer with its own seed, so no weight depends on Keras' global RNG state."""
    import keras

    return keras.initializers.GlorotUniform(seed=seed * 1009 + index)


def hinge_targets(y: np.ndarray, n_classes: int, loss: str) -> np.ndarray:
    """Targets for a hinge loss from class indices.

    * ``squared_hinge``/``hinge``, binary: (n, 1) in {-1, +1} (class 1 is +1);
    * ``squared_hinge``/``hinge``, multi-class: (n, k) one-vs-rest in {-1, +1};
    * ``categorical_hinge``: (n, k) one-hot in {0, 1}.
    """
    y = np.asarray(y, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"class indices must be in [0, {n_classes}), got [{y.min()}, {y.max()}]")
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    if loss == "categorical_hinge":
        return onehot
    if n_classes == 2:
        return (2.0 * y - 1.0).astype(np.float32)[:, None]
    return 2.0 * onehot - 1.0


def n_outputs(n_classes: int, loss: str) -> int:
    """Output units of a margin head: 1 for a binary hinge, else one per class."""
    return 1 if (n_classes == 2 and loss != "categorical_hinge") else n_classes


def decide(scores: np.ndarray) -> np.ndarray:
    """Class indices from margin scores: sign for one output, argmax for several."""
    scores = np.asarray(scores)
    if scores.shape[1] == 1:
        return (scores[:, 0] > 0).astype(np.int64)
    return scores.argmax(axis=1).astype(np.int64)


def rbf_gamma(X_train: np.ndarray, gamma) -> float:
    """``gamma`` as scikit-learn's SVC resolves it: ``"scale"`` -> 1 / (d * X.var())."""
    if gamma == "scale":
        var = float(X_train.var())
        return 1.0 / (X_train.shape[1] * var) if var > 0 else 1.0
    return float(gamma)


def l2_for_svm(C: float, n_train: int, n_out: int) -> float:
    """Keras ``l2`` factor that makes mean hinge + l2 * ||W||^2 the SVM objective over C*n.

    Formula: SVM per output ``1/2 ||w||^2 + C sum_i loss_i``; divided by ``C n`` and with
    Keras averaging the loss over ``n_out`` outputs as well: ``l2 = 1 / (2 C n n_out)``.
    """
    return 1.0 / (2.0 * C * n_train * n_out)


@contextlib.contextmanager
def seeded_keras(seed: int):
    """Hold `KERAS_FIT_LOCK` and seed Keras (Python, NumPy, backend) for one build and fit.

    The time spent waiting for the lock is this thread's waiting time (`tasks.store.progress`),
    so it is not counted as the fit's own seconds.
    """
    import keras

    with waiting():
        KERAS_FIT_LOCK.acquire()
    try:
        keras.utils.set_random_seed(seed)
        yield
    finally:
        KERAS_FIT_LOCK.release()


def fit_keras(model, X_train, T_train, loss: str, epochs: int, batch_size: int, lr: float, *,
              validation=None, metrics=(), callbacks=(), steps_per_epoch: int | None = None,
              seed: int = 0) -> dict[str, list[float]]:
    """Compile with Adam, fit on explicit targets (shuffled), return the history as lists of floats.

    Args:
        X_train: (n, d) rows, or a `tasks.core.networks.TableRows` streamed from disk (then ``T_train`` is
            the function from class indices to targets, and ``steps_per_epoch`` is required).
        T_train: targets as the loss expects them (see `hinge_targets`).
        validation: optional ``(X_val, T_val)``. Call inside `seeded_keras`.
    """
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=list(metrics))
    val = None if validation is None else (validation[0].astype("float32"), validation[1])
    if hasattr(X_train, "minibatches"):
        hist = model.fit(X_train.minibatches(batch_size, seed, T_train), steps_per_epoch=steps_per_epoch,
                         validation_data=val, epochs=epochs, verbose=0, callbacks=list(callbacks))
    else:
        hist = model.fit(X_train.astype("float32"), T_train, validation_data=val, epochs=epochs,
                         batch_size=batch_size, shuffle=True, verbose=0, callbacks=list(callbacks))
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}

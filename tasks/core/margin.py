"""Margin-classifier building blocks for Keras: hinge targets, decisions, the SVM's L2 factor,
seeded initializers, and one seeded fit at a time.

Keras converts {0, 1} labels to {-1, +1} only when a whole batch is {0, 1}, and passes
integer class ids through silently; these helpers always convert explicitly.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from tasks.obs.progress import waiting

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


def predicted_classes(scores: np.ndarray) -> np.ndarray:
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


@functools.cache
def compilation_cache() -> str | None:
    """Point JAX's persistent compilation cache at ``$MARGINFLOW_JAX_CACHE`` (default
    ``${XDG_CACHE_HOME:-~/.cache}/marginflow/jax``; ``off`` disables it), once per process, and return it.

    Each new Keras model's training step is a new function to JAX, so within a process too a model of an
    architecture already trained compiles again unless its program is in this cache (a tiny MLP's fit on
    iris: 0.5 s, of which 0.37 s compiling, against 0.12 s with the entry stored); across processes it spares
    the compile as well (a small CNN's first epoch here: 5.6 s without, 3.2 s with). It holds compiled XLA
    code only, keyed by the program, so it never changes a result. Nothing else uses it (the Keras backend
    may not be JAX: then nothing is set). Compiles shorter than ``$MARGINFLOW_JAX_CACHE_MIN_S`` seconds
    (default 0.5) are not stored.
    """
    import os

    where = os.environ.get("MARGINFLOW_JAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "marginflow", "jax")
    if where == "off" or os.environ.get("KERAS_BACKEND", "jax") != "jax":
        return None
    import jax

    try:
        os.makedirs(where, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", where)
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ.get("MARGINFLOW_JAX_CACHE_MIN_S") or 0.5))
    except (OSError, AttributeError):  # an unwritable cache folder costs speed, never a run
        return None
    return where


@contextlib.contextmanager
def seeded_keras(seed: int):
    """Hold `KERAS_FIT_LOCK` and seed Keras (Python, NumPy, backend) for one build and fit.

    The time spent waiting for the lock is this thread's waiting time (`tasks.obs.progress`),
    so it is not counted as the fit's own seconds.
    """
    import keras

    if not KERAS_FIT_LOCK.acquire(blocking=False):  # another fit holds it: shown as waiting, counted as such
        with waiting("another Keras fit"):
            KERAS_FIT_LOCK.acquire()
    try:
        compilation_cache()
        keras.utils.set_random_seed(seed)
        yield
    finally:
        KERAS_FIT_LOCK.release()


def fit_keras(model, X_train, T_train, loss: str, epochs: int, batch_size: int, lr: float, *,
              validation=None, metrics=(), callbacks=(), steps_per_epoch: int | None = None,
              seed: int = 0) -> dict[str, list[float]]:
    """Compile with Adam, fit on explicit targets (shuffled), return the history as lists of floats.

    Args:
        X_train: (n, d) rows, or a `TableRows` streamed from disk (then ``T_train`` is
            the function from class indices to targets, and ``steps_per_epoch`` is required).
        T_train: targets as the loss expects them (see `hinge_targets`).
        validation: optional ``(X_val, T_val)``. Call inside `seeded_keras`.
    """
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=list(metrics))
    val = None if validation is None else (validation[0].astype("float32"), validation[1])
    val_batch = None if val is None else min(len(val[0]), VAL_BATCH)
    if isinstance(X_train, TableRows):
        batches, steps = X_train.minibatches(batch_size, seed, T_train), steps_per_epoch
    else:
        batches = full_batches(X_train.astype("float32"), T_train, batch_size, seed)
        steps = batches_per_pass(len(X_train), batch_size)
    hist = model.fit(batches, steps_per_epoch=steps, validation_data=val, validation_batch_size=val_batch,
                     epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks))
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}


# Validation rows per forward pass: up to this many validation rows are one batch, one compiled shape.
VAL_BATCH = 2048


def full_batches(X: np.ndarray, T: np.ndarray, batch_size: int, seed: int):
    """Endless ``(X, T)`` minibatches of exactly ``min(batch_size, n)`` rows from a stream of seeded
    permutations of the rows: a pass's last short batch is filled from the next pass, so every row is seen
    as often as Keras's own batching would show it and ``ceil(n / batch_size)`` steps make an epoch.

    Every step has one shape, so JAX compiles the training step once per model, not again for a last short
    batch (about 2 s for a small CNN here); the folds of a search, whose sizes differ, share that shape too.
    """
    n = len(X)
    size = min(batch_size, n)
    rng = np.random.default_rng(seed)
    order = np.zeros(0, dtype=np.int64)
    while True:
        while len(order) < size:
            order = np.concatenate([order, rng.permutation(n)])
        rows, order = order[:size], order[size:]
        yield X[rows], T[rows]


def batches_per_pass(n: int, batch_size: int) -> int:
    """Steps of `full_batches` that make one pass over ``n`` rows."""
    return max(math.ceil(n / batch_size), 1)


class TableRows:
    """A training split too large to hold, streamed for Keras through a bounded shuffle buffer.

    Built by the caller that knows where the rows are (`tasks._rows.keras_rows` over a ``scaled`` table):
    core code only pulls rows through the two functions it is given.

    Attributes:
        n: the split's rows; batch_rows: the most rows held at once (the shuffle buffer's).
        shuffled: ``seed -> iterator of (X float32, y)`` buffers, one pass over the split in a seeded order.
        sample: ``(max_rows, seed) -> (X, y)``, a seeded sample of the split.
    """

    def __init__(self, n: int, batch_rows: int, shuffled: Callable[[int], Iterator[tuple[np.ndarray, np.ndarray]]],
                 sample: Callable[[int, int], tuple[np.ndarray, np.ndarray]]):
        self.n, self.batch_rows, self.shuffled, self.sample = n, batch_rows, shuffled, sample

    def __len__(self) -> int:
        return self.n

    def minibatches(self, batch_size: int, seed: int, targets):
        """Endless ``(x float32 (batch_size, d), targets(y))`` minibatches, a new shuffle per pass over the split;
        the last incomplete minibatch of each buffer is dropped, so every step has the same shape."""
        epoch = 0
        while True:
            for X, y in self.shuffled(seed * 1009 + epoch):
                for at in range(0, len(y) - batch_size + 1, batch_size):
                    yield X[at:at + batch_size], targets(y[at:at + batch_size])
            epoch += 1


def step_budget(X_train, config) -> dict[str, Any]:
    """How long one Keras training on ``X_train`` (rows held in memory, or `TableRows`) runs:
    ``{"epochs", "steps_per_epoch", "max_steps", "how"}``.

    In memory: ``epochs`` passes of ``ceil(n / batch_size)`` steps, fewer when that would pass
    ``max_steps``. Streamed: an "epoch" is a validation check every ``max_steps // 20`` steps (or one
    pass, if shorter), ``ceil(max_steps / steps_per_epoch)`` of them. Early stopping may end either sooner.
    """
    n_train, streamed = len(X_train), isinstance(X_train, TableRows)
    per_pass = batches_per_pass(n_train, config.batch_size)
    if streamed:
        per_epoch = min(per_pass, max(config.max_steps // 20, 1))
        epochs = max(math.ceil(config.max_steps / per_epoch), 1)
        how = (f"streamed from disk: {per_epoch} steps of {config.batch_size} rows between validation checks, "
               f"at most {config.max_steps} steps ({config.max_steps * config.batch_size / max(n_train, 1):.2f} "
               f"passes over {n_train} rows)")
    else:
        per_epoch = per_pass
        epochs = max(min(config.epochs, math.ceil(config.max_steps / per_pass)), 1)
        how = f"in memory: at most {epochs} epochs of {per_pass} steps ({n_train} rows, batch {config.batch_size})"
    return {"epochs": epochs, "steps_per_epoch": per_epoch, "max_steps": config.max_steps, "how": how}


def budget_used(X_train, config, history: dict[str, list[float]]) -> dict[str, Any]:
    """`step_budget` with ``steps``, the optimisation steps the training with this ``history`` took."""
    budget = step_budget(X_train, config)
    return {**budget, "steps": len(history.get("loss", [])) * budget["steps_per_epoch"]}


def padded_forward(forward, X: np.ndarray, batch_size: int) -> np.ndarray:
    """``forward`` over ``X`` in batches of ``batch_size`` rows (fewer rows: the next power of two), the last one
    zero-padded and the padding's outputs dropped: a few input shapes, so JAX compiles the forward pass a few
    times, not once per remainder."""
    n = len(X)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    size = min(batch_size, 1 << (n - 1).bit_length())
    out = []
    for at in range(0, n, size):
        chunk = X[at:at + size].astype("float32")
        if len(chunk) < size:
            chunk = np.concatenate([chunk, np.zeros((size - len(chunk), X.shape[1]), np.float32)])
        out.append(np.asarray(forward(chunk))[:min(size, n - at)])
    return np.concatenate(out)

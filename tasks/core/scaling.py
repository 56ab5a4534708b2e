"""Scaling: a StandardScaler fitted on the training rows only, kept as plain JSON (mean, scale)."""

from __future__ import annotations

import numpy as np

from tasks.config import ScaleConfig

CHUNK_ROWS = 8192


def stream_scaler(batches, config: ScaleConfig) -> dict[str, list[float]]:
    """Mean and scale per feature, as scikit-learn's ``StandardScaler`` computes them, over batches of
    training rows (``partial_fit``): equal to fitting on all of them at once, to float tolerance,
    holding one batch at a time. A constant feature gets scale 1.

    Args:
        batches: iterable of (X (m, d), y) training batches.
    """
    from sklearn.preprocessing import StandardScaler

    s, d = StandardScaler(with_mean=config.with_mean, with_std=config.with_std), None
    for X, _ in batches:
        for at in range(0, len(X), CHUNK_ROWS):  # float64 sums, a chunk at a time
            s.partial_fit(X[at:at + CHUNK_ROWS].astype(np.float64))
        d = X.shape[1]
    if d is None:
        raise ValueError("scale: no training rows")
    mean = s.mean_ if s.mean_ is not None else np.zeros(d)
    scale = s.scale_ if s.scale_ is not None else np.ones(d)
    return {"mean": [float(v) for v in mean], "scale": [float(v) for v in scale]}


def fit_scaler(X_train: np.ndarray, config: ScaleConfig) -> dict[str, list[float]]:
    """Mean and scale per feature of rows held in memory (`stream_scaler` over one batch).

    Formula: ``z = (x - mean) / scale``; a constant feature gets scale 1.
    """
    return stream_scaler([(X_train, None)], config)


def apply_scaler(X: np.ndarray, scaler: dict[str, list[float]]) -> np.ndarray:
    """(n, d) -> (n, d) standardised rows, in X's precision (float32 rows stay float32)."""
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    return (X - np.asarray(scaler["mean"], dtype=dtype)) / np.asarray(scaler["scale"], dtype=dtype)

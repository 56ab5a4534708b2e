"""Scaling: a StandardScaler fitted on the training rows only, kept as plain JSON (mean, scale)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tasks.config import ScaleConfig
from tasks.store.tables import LABEL, SPLIT


def fit_scaler(X_train: np.ndarray, config: ScaleConfig) -> dict[str, list[float]]:
    """Mean and scale per feature, as scikit-learn's StandardScaler computes them.

    Formula: ``z = (x - mean) / scale``; a constant feature gets scale 1.

    Args:
        X_train: (n_train, d) training rows.
    Returns:
        ``{"mean": [d floats], "scale": [d floats]}``.
    """
    from sklearn.preprocessing import StandardScaler

    s = StandardScaler(with_mean=config.with_mean, with_std=config.with_std).fit(X_train)
    d = X_train.shape[1]
    mean = s.mean_ if s.mean_ is not None else np.zeros(d)
    scale = s.scale_ if s.scale_ is not None else np.ones(d)
    return {"mean": [float(v) for v in mean], "scale": [float(v) for v in scale]}


CHUNK_ROWS = 8192


def stream_scaler(batches, config: ScaleConfig) -> dict[str, list[float]]:
    """`fit_scaler` over batches of training rows (``StandardScaler.partial_fit``): equal to fitting
    on all of them at once, to float tolerance, holding one batch at a time.

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


def apply_scaler(X: np.ndarray, scaler: dict[str, list[float]]) -> np.ndarray:
    """(n, d) -> (n, d) standardised rows, in X's precision (float32 rows stay float32)."""
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    return (X - np.asarray(scaler["mean"], dtype=dtype)) / np.asarray(scaler["scale"], dtype=dtype)


def scale_frame(frame: pd.DataFrame, config: ScaleConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit on ``train`` rows, transform all rows; label and split columns pass through."""
    features = [c for c in frame.columns if c not in (LABEL, SPLIT)]
    X = frame[features].to_numpy(dtype=np.float64)
    scaler = fit_scaler(X[(frame[SPLIT] == "train").to_numpy()], config)
    out = pd.DataFrame(apply_scaler(X, scaler), columns=features)
    out[LABEL] = frame[LABEL].to_numpy()
    out[SPLIT] = frame[SPLIT].array
    return out, {"features": features, **scaler}

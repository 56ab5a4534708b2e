"""The dataset layout shared by the ``dataset``, ``scaled`` and ``features`` artifacts, and reading them by name.

Each of these artifacts holds one Parquet table (``<kind>.parquet``) whose columns are the
features, ``__label__`` (class index 0..k-1) and ``__split__`` (train / val / test), and a
``meta.json`` (feature names, the class list mapping index -> original label, split sizes,
source).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.store.artifacts import ArtifactRef, read_json

LABEL = "__label__"
SPLIT = "__split__"
SPLITS = ("train", "val", "test")
TABLE_FILES = {"dataset": "dataset.parquet", "scaled": "scaled.parquet", "features": "features.parquet"}


def table_file(kind: str) -> str:
    """The Parquet file name of a table artifact of ``kind``."""
    try:
        return TABLE_FILES[kind]
    except KeyError:
        raise ValueError(f"artifact kind {kind!r} holds no table (one of {', '.join(TABLE_FILES)})") from None


def read_table(ref: ArtifactRef):
    """The frame and metadata of a ``dataset``, ``scaled`` or ``features`` artifact."""
    import pandas as pd

    return pd.read_parquet(ref.file(table_file(ref.kind))), read_meta(ref)


def read_meta(ref: ArtifactRef) -> dict[str, Any]:
    return read_json(ref, "meta.json")


def feature_matrix(frame, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of one split (or all rows): X float64 (n, d), y int64 (n,)."""
    rows = frame if split is None else frame[frame[SPLIT] == split]
    X = rows.drop(columns=[LABEL, SPLIT]).to_numpy(dtype=np.float64)
    return X, rows[LABEL].to_numpy(dtype=np.int64)


def split_matrices(ref: ArtifactRef) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """``{"train"|"val"|"test": (X, y)}`` of a table artifact, and its metadata."""
    frame, meta = read_table(ref)
    return {s: feature_matrix(frame, s) for s in SPLITS}, meta

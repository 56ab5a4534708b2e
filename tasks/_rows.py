"""What a Keras stage trains on, read from a ``scaled`` table: rows held in memory, or streamed."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.core.margin import TableRows
from tasks.store.tables import batch_rows_of, load_split, read_meta, shuffled_batches


def keras_rows(ref, config, with_val: bool = True) -> tuple[Any, Any, tuple[np.ndarray, np.ndarray] | None,
                                                           dict[str, Any]]:
    """What a Keras stage trains on from a ``scaled`` table: ``(X_train, y_train, (X_val, y_val), meta)``.

    The training split is held when it has at most ``data.batch_rows`` rows, else a `TableRows`
    (``y_train`` None) streamed by `train`; validation is the val split, or a seeded sample of
    ``config.val_rows`` rows of it (and never more than ``data.batch_rows``; None without ``with_val``).
    Test rows are not read.
    """
    meta = read_meta(ref)
    batch, n = batch_rows_of(meta), int(meta["split_sizes"]["train"])
    if n > batch:
        X, y = TableRows(n, batch, lambda seed: shuffled_batches(ref, "train", batch, seed),
                         lambda rows, seed: load_split(ref, "train", max_rows=rows, seed=seed)), None
    else:
        X, y = load_split(ref, "train")
    val = load_split(ref, "val", max_rows=min(config.val_rows, batch), seed=config.seed) if with_val else None
    return X, y, val, meta

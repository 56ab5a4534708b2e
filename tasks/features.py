"""Stage 4, extract_features: the encoder's ``features`` layer for every row, in batches.

Output artifact ``features``: ``features.parquet`` with columns ``f000..`` (float32),
``__label__`` and ``__split__``; its Parquet metadata names the encoder digest.
Also ``meta.json`` carried over from the dataset.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.artifacts import ArtifactRef, ArtifactWriter
from tasks.cache import stage
from tasks.config import FeaturesConfig
from tasks.encoder import load_feature_model
from tasks.ingest import LABEL, SPLIT, feature_matrix, read_dataset


def embed(model, X: np.ndarray, batch_size: int) -> np.ndarray:
    """(n, d) rows -> (n, k) float32 features, ``batch_size`` rows per forward pass."""
    out = [np.asarray(model(X[i : i + batch_size].astype("float32"), training=False)) for i in range(0, len(X), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.output_shape[-1]), np.float32)


def features_frame(F: np.ndarray, labels: np.ndarray, split: pd.Series) -> pd.DataFrame:
    frame = pd.DataFrame(F, columns=[f"f{i:03d}" for i in range(F.shape[1])])
    frame[LABEL] = labels
    frame[SPLIT] = split.array
    return frame


@stage("extract_features")
def extract_features(
    scaled: ArtifactRef, encoder: ArtifactRef, config: FeaturesConfig, root: str
) -> ArtifactRef:
    """Embed every row of ``scaled`` with ``encoder``; write the ``features`` artifact."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame, meta = read_dataset(scaled)
    X, y = feature_matrix(frame)
    F = embed(load_feature_model(encoder), X, config.batch_size)
    table = pa.Table.from_pandas(features_frame(F, y, frame[SPLIT]), preserve_index=False)
    table = table.replace_schema_metadata({
        **(table.schema.metadata or {}),
        b"marginflow.encoder_sha256": encoder.sha256.encode(),
        b"marginflow.scaled_sha256": scaled.sha256.encode(),
    })
    params = {"scaled": scaled.sha256, "encoder": encoder.sha256, "config": config.model_dump()}
    with ArtifactWriter(root, "features", params) as w:
        pq.write_table(table, w.path("features.parquet"))
        w.write_json("meta.json", meta)
    return w.ref

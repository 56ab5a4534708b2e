"""Stage extract_features: the encoder's ``features`` layer for every row, in batches.

Output artifact ``features``: ``features.parquet`` with columns ``f000..`` (float32),
``__label__`` and ``__split__``; its Parquet metadata names the encoder digest. Also
``meta.json`` carried over from the dataset.
"""

from __future__ import annotations

from tasks.config import FeaturesConfig
from tasks.core.networks import embed, load_feature_model
from tasks.store.artifacts import ArtifactRef, ArtifactWriter
from tasks.store.cache import stage
from tasks.store.tables import LABEL, SPLIT, feature_matrix, read_table, table_file


@stage("extract_features")
def extract_features(scaled: ArtifactRef, encoder: ArtifactRef, config: FeaturesConfig, root: str) -> ArtifactRef:
    """Embed every row of ``scaled`` with ``encoder``; write the ``features`` artifact."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame, meta = read_table(scaled)
    X, y = feature_matrix(frame)
    F = embed(load_feature_model(encoder.file("encoder.keras")), X, config.batch_size)
    out = pd.DataFrame(F, columns=[f"f{i:03d}" for i in range(F.shape[1])])
    out[LABEL] = y
    out[SPLIT] = frame[SPLIT].array
    table = pa.Table.from_pandas(out, preserve_index=False)
    table = table.replace_schema_metadata({
        **(table.schema.metadata or {}),
        b"marginflow.encoder_sha256": encoder.sha256.encode(),
        b"marginflow.scaled_sha256": scaled.sha256.encode(),
    })
    params = {"scaled": scaled.sha256, "encoder": encoder.sha256, "config": config.model_dump()}
    with ArtifactWriter(root, "features", params) as w:
        pq.write_table(table, w.path(table_file("features")))
        w.write_json("meta.json", meta)
    return w.ref

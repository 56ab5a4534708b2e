"""Stage extract_features: the encoder's ``features`` layer for every row, in batches.

Reads ``scaled`` ``batch_rows`` rows at a time and writes each batch's features as row groups,
so memory stays flat at any size. Output artifact ``features``: ``features.parquet`` with the
features named ``f000..`` (float32, one list column: `tasks.store.tables`), ``__label__`` and
``__split__``; its Parquet metadata names the encoder digest. Also ``meta.json`` carried over from the dataset.
"""

from __future__ import annotations

from tasks.config import FeaturesConfig
from tasks.core.networks import embed, load_feature_model
from tasks.store.artifacts import ArtifactRef, ArtifactWriter
from tasks.store.cache import stage
from tasks.store.runlog import batch_progress
from tasks.store.tables import TableWriter, batch_rows_of, iter_split, labels_and_splits, read_meta, table_file


@stage("extract_features")
def extract_features(scaled: ArtifactRef, encoder: ArtifactRef, config: FeaturesConfig, root: str) -> ArtifactRef:
    """Embed every row of ``scaled`` with ``encoder``; write the ``features`` artifact."""
    meta = read_meta(scaled)
    batch = batch_rows_of(meta)
    model = load_feature_model(encoder.file("encoder.keras"))
    width = int(model.output_shape[-1])
    _, split = labels_and_splits(scaled)
    params = {"scaled": scaled.sha256, "encoder": encoder.sha256, "config": config.model_dump()}
    metadata = {b"marginflow.encoder_sha256": encoder.sha256.encode(),
                b"marginflow.scaled_sha256": scaled.sha256.encode()}
    with ArtifactWriter(root, "features", params) as w:
        with TableWriter(w.path(table_file("features")), [f"f{i:03d}" for i in range(width)], batch,
                         metadata=metadata) as out:
            done = batch_progress("extract_features", len(split), batch)
            for X, y in iter_split(scaled, None, batch):
                out.write(embed(model, X, config.batch_size), y, split[out.rows:out.rows + len(y)])
                done(out.rows)
        w.write_json("meta.json", meta)
    return w.ref

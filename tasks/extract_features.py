"""Stage extract_features: the encoder's ``features`` layer for every row, in batches.

Reads ``scaled`` ``batch_rows`` rows at a time and writes each batch's features as row groups,
so memory stays flat at any size. Output artifact ``features``: ``features.parquet`` with the
features named ``f000..`` (float32, one list column: `tasks.store.tables`), ``__label__`` and
``__split__``; its Parquet metadata names the encoder digest. Also ``meta.json`` carried over from the dataset
with ``encoder_kind`` (the encoder's resolved kind: ``svc.kernel = "auto"`` reads it),
and ``timing.json`` (the extraction's seconds; ``inputs_seconds``: the encoder's, `tasks.store.outputs.total_seconds`).
"""

from __future__ import annotations

from tasks.config import FeaturesConfig
from tasks.core.networks import embed, load_feature_model
from tasks.obs.progress import OwnTime
from tasks.obs.runlog import batch_progress
from tasks.store.artifacts import ArtifactRef, ArtifactWriter
from tasks.store.cache import stage
from tasks.store.kinds import ENCODER_MODEL, META, encoder_record
from tasks.store.outputs import total_seconds, write_timing
from tasks.store.tables import batch_rows_of, map_table, read_meta, table_file


@stage("extract_features")
def extract_features(scaled: ArtifactRef, encoder: ArtifactRef, config: FeaturesConfig, root: str) -> ArtifactRef:
    """Embed every row of ``scaled`` with ``encoder``; write the ``features`` artifact."""
    meta = read_meta(scaled)
    batch = batch_rows_of(meta)
    model = load_feature_model(encoder.file(ENCODER_MODEL))
    names = [f"f{i:03d}" for i in range(int(model.output_shape[-1]))]
    params = {"scaled": scaled.sha256, "encoder": encoder.sha256, "config": config.model_dump()}
    metadata = {b"marginflow.encoder_sha256": encoder.sha256.encode(),
                b"marginflow.scaled_sha256": scaled.sha256.encode()}
    with ArtifactWriter(root, "features", params) as w:
        with OwnTime() as took:
            map_table(scaled, w.path(table_file("features")), names, lambda X: embed(model, X, config.batch_size), batch,
                      metadata=metadata, progress=batch_progress("extract_features", meta["n_rows"], batch))
        w.write_json(META, {**meta, "encoder_kind": encoder_record(encoder).kind})
        write_timing(w, took.seconds, total_seconds(encoder))
    return w.ref

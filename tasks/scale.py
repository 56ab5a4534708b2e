"""Stage scale: a StandardScaler fitted on the training rows only, applied to every split.

Two streaming passes of ``batch_rows`` rows (`tasks.store.tables`): ``partial_fit`` over the
training rows, then each batch scaled and written as row groups. Output artifact ``scaled``:
``scaled.parquet`` (same layout as ``dataset``, float32), ``scaler.json`` (mean and scale per
feature: reloadable without pickle) and ``meta.json`` carried over.
"""

from __future__ import annotations

from tasks.config import ScaleConfig
from tasks.core.scaling import apply_scaler, stream_scaler
from tasks.store.artifacts import ArtifactRef, ArtifactWriter
from tasks.store.cache import stage
from tasks.store.kinds import META, SCALER
from tasks.store.tables import batch_rows_of, iter_split, map_table, read_meta, table_file


@stage("scale", imports=())
def scale(dataset: ArtifactRef, config: ScaleConfig, root: str) -> ArtifactRef:
    """Write the ``scaled`` artifact from a ``dataset`` artifact."""
    meta = read_meta(dataset)
    batch = batch_rows_of(meta)
    scaler = stream_scaler(iter_split(dataset, "train", batch), config)
    with ArtifactWriter(root, "scaled", {"dataset": dataset.sha256, "config": config.model_dump()}) as w:
        map_table(dataset, w.path(table_file("scaled")), meta["feature_names"], lambda X: apply_scaler(X, scaler),
                  batch)  # float32 rows, float32 arithmetic
        w.write_json(SCALER, {"features": meta["feature_names"], **scaler})
        w.write_json(META, meta)
    return w.ref

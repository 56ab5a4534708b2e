"""Stage scale: a StandardScaler fitted on the training rows only, applied to every split.

Output artifact ``scaled``: ``scaled.parquet`` (same layout as ``dataset``), ``scaler.json``
(mean and scale per feature: reloadable without pickle) and ``meta.json`` carried over.
"""

from __future__ import annotations

from tasks.config import ScaleConfig
from tasks.core.scaling import scale_frame
from tasks.store.artifacts import ArtifactRef, ArtifactWriter
from tasks.store.cache import stage
from tasks.store.tables import read_table, table_file


@stage("scale")
def scale(dataset: ArtifactRef, config: ScaleConfig, root: str) -> ArtifactRef:
    """Write the ``scaled`` artifact from a ``dataset`` artifact."""
    frame, meta = read_table(dataset)
    scaled, scaler = scale_frame(frame, config)
    with ArtifactWriter(root, "scaled", {"dataset": dataset.sha256, "config": config.model_dump()}) as w:
        scaled.to_parquet(w.path(table_file("scaled")), index=False)
        w.write_json("scaler.json", scaler)
        w.write_json("meta.json", meta)
    return w.ref

"""Stage ingest: read a built-in dataset or a user file, validate it, encode labels, split the rows.

Output artifact ``dataset``: ``dataset.parquet`` (float64 feature columns, ``__label__`` as
class index 0..k-1, ``__split__`` in train/val/test) and ``meta.json`` (feature names, the
class list mapping index -> original label, split sizes, source).
"""

from __future__ import annotations

from tasks.config import DataConfig
from tasks.core.dataset import describe_source, prepare
from tasks.store.artifacts import ArtifactRef, ArtifactWriter
from tasks.store.cache import stage
from tasks.store.runlog import stage_logger
from tasks.store.tables import table_file

__all__ = ["describe_source", "ingest"]


@stage("ingest")
def ingest(source: ArtifactRef, config: DataConfig, root: str) -> ArtifactRef:
    """Validate, encode labels, split, and write the ``dataset`` artifact."""
    frame, meta = prepare(config)
    meta["source_sha256"] = source.sha256
    layout = meta["layout"]
    stage_logger().info("ingest: %d rows read as a %s of shape %s (%s)", len(frame), layout["kind"], layout["shape"],
                        layout["reason"])
    with ArtifactWriter(root, "dataset", {"source": source.sha256, "config": config.model_dump()}) as w:
        frame.to_parquet(w.path(table_file("dataset")), index=False)
        w.write_json("meta.json", meta)
    return w.ref

"""Stage ingest: read a built-in dataset or a user file, validate it, encode labels, split the rows.

The source is read ``data.batch_rows`` rows at a time (pyarrow's streaming CSV and Parquet
readers), validated batch by batch, and written in row groups; memory does not grow with rows.
Output artifact ``dataset``: ``dataset.parquet`` (float32 features, `tasks.store.tables`, ``__label__`` as
class index 0..k-1, ``__split__`` in train/val/test) and ``meta.json`` (feature names, the
class list mapping index -> original label, split sizes, source, layout, batch_rows).
"""

from __future__ import annotations

from tasks.config import DataConfig
from tasks.core.dataset import describe_source, write_dataset
from tasks.store.artifacts import ArtifactRef, ArtifactWriter
from tasks.store.cache import stage
from tasks.store.runlog import stage_logger
from tasks.store.tables import table_file

__all__ = ["describe_source", "ingest"]


@stage("ingest", imports=())
def ingest(source: ArtifactRef, config: DataConfig, root: str) -> ArtifactRef:
    """Validate, encode labels, split, and write the ``dataset`` artifact."""
    with ArtifactWriter(root, "dataset", {"source": source.sha256, "config": config.model_dump()}) as w:
        meta = write_dataset(config, w.path(table_file("dataset")), w.path(".features.scratch.parquet"))
        meta["source_sha256"] = source.sha256
        w.write_json("meta.json", meta)
    layout = meta["layout"]
    stage_logger().info("ingest: %d rows (%s) read as a %s of shape %s (%s), %d rows at a time", meta["n_rows"],
                        ", ".join(f"{k} {v}" for k, v in meta["split_sizes"].items()), layout["kind"],
                        layout["shape"], layout["reason"], config.batch_rows)
    return w.ref

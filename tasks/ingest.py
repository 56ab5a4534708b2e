"""Stage ingest: read a built-in dataset or a user file, validate it, encode labels, split the rows.

The source is read ``data.batch_rows`` rows at a time (pyarrow's streaming CSV and Parquet
readers), validated batch by batch, and written in row groups; memory does not grow with rows.
Output artifact ``dataset``: ``dataset.parquet`` (float32 features, `tasks.store.tables`, ``__label__`` as
class index 0..k-1, ``__split__`` in train/val/test) and ``meta.json`` (feature names, the
class list mapping index -> original label, split sizes, source, layout, batch_rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.config import DataConfig
from tasks.core.dataset import feature_columns, scan
from tasks.core.layout import resolve_layout
from tasks.obs.runlog import stage_logger
from tasks.schema import LABEL, SPLIT, SPLITS
from tasks.store.artifacts import ArtifactRef, ArtifactWriter
from tasks.store.cache import stage
from tasks.store.kinds import META, SCRATCH
from tasks.store.sources import describe_source, file_columns, landing_files, preflight_full_bytes, source_batches
from tasks.store.tables import table_file

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["check_source", "describe_source", "ingest", "prepare", "scan_source"]


@stage("ingest", imports=())
def ingest(source: ArtifactRef, config: DataConfig, root: str) -> ArtifactRef:
    """Validate, encode labels, split, and write the ``dataset`` artifact."""
    with ArtifactWriter(root, "dataset", {"source": source.sha256, "config": config.model_dump()}) as w:
        meta = write_dataset(config, w.path(table_file("dataset")), w.path(SCRATCH))
        meta["source_sha256"] = source.sha256
        w.write_json(META, meta)
    layout = meta["layout"]
    stage_logger().info("ingest: %d rows (%s) read as a %s of shape %s (%s), %d rows at a time", meta["n_rows"],
                        ", ".join(f"{k} {v}" for k, v in meta["split_sizes"].items()), layout["kind"],
                        layout["shape"], layout["reason"], config.batch_rows)
    return w.ref


def scan_source(config: DataConfig, sink=None):
    """`tasks.core.dataset.scan` over the source's batches (`tasks.store.sources.source_batches`)."""
    return scan(config, source_batches(config, config.batch_rows), sink)


def write_dataset(config: DataConfig, path: Path, scratch: Path) -> dict[str, Any]:
    """Validate, encode and split the source and write it as the ``dataset`` table at ``path``.

    Two passes with at most ``data.batch_rows`` rows held at once: the first validates and writes the
    float32 features to ``scratch`` (removed after), the second adds each row's class index and split.

    Returns:
        the table's metadata.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.store.tables import FEATURES, HELD, TableWriter, feature_column, matrix, row_group_rows

    writer = None

    def sink(columns: list[np.ndarray]) -> None:
        nonlocal writer
        HELD.observe(len(columns[0]) if columns else 0)
        table = pa.Table.from_arrays([feature_column(np.stack(columns, axis=1))], names=[FEATURES])
        writer = writer or pq.ParquetWriter(str(scratch), table.schema)
        writer.write_table(table, row_group_size=row_group_rows(config.batch_rows))

    try:
        result = scan_source(config, sink)
    finally:
        if writer is not None:
            writer.close()
    try:
        at = 0
        with TableWriter(path, result.feature_names, config.batch_rows) as out:
            for batch in pq.ParquetFile(scratch, pre_buffer=False).iter_batches(batch_size=config.batch_rows):
                HELD.observe(batch.num_rows)
                out.write(matrix(batch, np.float32), result.codes[at:at + batch.num_rows],
                          result.split[at:at + batch.num_rows])
                at += batch.num_rows
    finally:
        scratch.unlink(missing_ok=True)
    return result.meta(config)


def check_source(config: DataConfig) -> Any:
    """Validate the source before a run; returns the rows' `tasks.core.layout.Layout`.

    A built-in or a source of at most `preflight_full_bytes` is scanned whole (`scan`); a larger one
    has its columns checked (label, split column, layout, shape) and its values are validated by the
    ``ingest`` stage as it streams them, which fails the same way and leaves no artifact behind.
    """
    if config.input is not None:
        path = Path(config.input)
        files = landing_files(path) if path.is_dir() else [path]
        if sum(f.stat().st_size for f in files if f.is_file()) > preflight_full_bytes():
            names = file_columns(files[0])
            features = feature_columns(names, str(files[0]), config.label, config.split_column)
            return resolve_layout(features, config.layout, config.shape)
    return scan_source(config).layout


def prepare(config: DataConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Everything ingest does except writing, for a source small enough to hold: the dataset frame
    (float32 features, ``__label__``, ``__split__``) and its metadata."""
    import pandas as pd

    parts: list[np.ndarray] = []
    result = scan_source(config, lambda columns: parts.append(np.stack(columns, axis=1)))
    X = np.concatenate(parts) if parts else np.zeros((0, len(result.feature_names)), np.float32)
    frame = pd.DataFrame(X, columns=result.feature_names)
    frame[LABEL] = result.codes
    frame[SPLIT] = pd.Categorical(np.asarray(SPLITS, dtype=object)[result.split], categories=list(SPLITS))
    return frame, result.meta(config)

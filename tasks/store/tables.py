"""The dataset layout shared by the ``dataset``, ``scaled`` and ``features`` artifacts, and reading them.

Each of these artifacts holds one Parquet table (``<kind>.parquet``) with three columns:
``__features__`` (each row's d features as one fixed-size list of float32; their names are in the
schema's metadata), ``__label__`` (class index 0..k-1) and ``__split__`` (train / val / test),
written in row groups of ``batch_rows / 16`` rows, and a ``meta.json`` (feature names, the class list mapping index -> original label,
split sizes, source, layout, ``batch_rows``).

One list column, not d columns: a Parquet footer describes every column of every row group, so
784 columns in the 800 row groups of a million rows make a 62 MB footer that takes 600 MB to open;
with one column the footer stays small at any size.

Two ways to read a table. Small tables are read whole into NumPy (`split_matrices`). Any table
can be streamed: `iter_split` yields one batch of at most ``batch_rows`` rows at a time, and
`load_split` reads one split whole when it has at most ``max_rows`` rows, else a seeded sample of
``max_rows`` of them, without ever holding the rest. Every array these functions build passes
through `HELD`, which records the most rows one of them held (the memory test counts with it).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from tasks.schema import LABEL, SPLIT, SPLITS
from tasks.store.artifacts import ArtifactRef, read_json
from tasks.store.kinds import DATASET_TABLE, FEATURES_TABLE, META, SCALED_TABLE

FEATURES = "__features__"
TABLE_FILES = {"dataset": DATASET_TABLE, "scaled": SCALED_TABLE, "features": FEATURES_TABLE}
DEFAULT_BATCH_ROWS = 20_000
# rows per Parquet row group = batch_rows // ROW_GROUPS_PER_BATCH: a shuffle buffer of batch_rows
# rows then mixes this many row groups drawn from anywhere in the file
ROW_GROUPS_PER_BATCH = 16


class RowMeter:
    """The largest number of rows any one array read from a table held (thread-safe)."""

    def __init__(self) -> None:
        self.peak, self._lock = 0, threading.Lock()

    def observe(self, n_rows: int) -> None:
        with self._lock:
            self.peak = max(self.peak, int(n_rows))

    def reset(self) -> None:
        with self._lock:
            self.peak = 0


HELD = RowMeter()


def table_file(kind: str) -> str:
    """The Parquet file name of a table artifact of ``kind``."""
    try:
        return TABLE_FILES[kind]
    except KeyError:
        raise ValueError(f"artifact kind {kind!r} holds no table (one of {', '.join(TABLE_FILES)})") from None


def read_meta(ref: ArtifactRef) -> dict[str, Any]:
    return read_json(ref, META)


def batch_rows_of(meta: dict[str, Any]) -> int:
    """The most rows a stage reading this table holds at once (``data.batch_rows`` at ingest)."""
    return int(meta.get("batch_rows") or DEFAULT_BATCH_ROWS)


def row_group_rows(batch_rows: int) -> int:
    return max(batch_rows // ROW_GROUPS_PER_BATCH, 1)


def parquet(ref: ArtifactRef):
    """The table's ``pyarrow.parquet.ParquetFile`` (opened without pre-buffering the whole file)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(ref.file(table_file(ref.kind)), pre_buffer=False)


def feature_names(ref: ArtifactRef) -> list[str]:
    """The names of the table's feature columns, in order (from the Parquet schema's metadata)."""
    import json

    return json.loads(parquet(ref).schema_arrow.metadata[b"marginflow.features"])


def _split_codes(column) -> np.ndarray:
    """A ``__split__`` column (dictionary-encoded or plain strings) -> (n,) int8 index into `SPLITS`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        column = column.cast(pa.string())
    codes = pc.index_in(column, value_set=pa.array(SPLITS)).to_numpy(zero_copy_only=False)
    return np.asarray(codes, dtype=np.int8)


def matrix(batch, dtype) -> np.ndarray:
    """(n, d) from the ``__features__`` column of a record batch or table."""
    import pyarrow as pa

    column = batch.column(FEATURES)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    d = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), d).astype(dtype, copy=False)


def labels_and_splits(ref: ArtifactRef) -> tuple[np.ndarray, np.ndarray]:
    """(y int64 (n,), split index int8 (n,) into `SPLITS`) of every row, reading only those two columns."""
    table = parquet(ref).read(columns=[LABEL, SPLIT])
    y = np.asarray(table.column(LABEL).to_numpy(), dtype=np.int64)
    return y, _split_codes(table.column(SPLIT).combine_chunks())


def labels(ref: ArtifactRef, split: str) -> np.ndarray:
    """(n_split,) class indices of one split."""
    y, s = labels_and_splits(ref)
    return y[s == SPLITS.index(split)]


def iter_split(ref: ArtifactRef, split: str | None, batch_rows: int, dtype=np.float32,
               rows: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(X (m, d), y (m,)) of one split (all rows when None), at most ``batch_rows`` rows at a time, in file order.

    ``rows``: optional sorted row positions (0-based, within the whole file) to keep as well.
    """
    pf = parquet(ref)
    offset = 0
    for batch in pf.iter_batches(batch_size=batch_rows, columns=[FEATURES, LABEL, SPLIT]):
        keep = np.ones(batch.num_rows, dtype=bool)
        if split is not None:
            keep &= _split_codes(batch.column(SPLIT)) == SPLITS.index(split)
        if rows is not None:
            lo, hi = np.searchsorted(rows, [offset, offset + batch.num_rows])
            mask = np.zeros(batch.num_rows, dtype=bool)
            mask[rows[lo:hi] - offset] = True
            keep &= mask
        offset += batch.num_rows
        if not keep.any():
            continue
        if not keep.all():
            import pyarrow as pa

            batch = batch.filter(pa.array(keep))
        HELD.observe(batch.num_rows)
        yield matrix(batch, dtype), np.asarray(batch.column(LABEL).to_numpy(), dtype=np.int64)


def _group_rows(pf, group: int, split: str):
    """Row group ``group`` of a table file (features, label, split), only the rows of ``split``."""
    import pyarrow as pa

    table = pf.read_row_group(group, columns=[FEATURES, LABEL, SPLIT])
    keep = _split_codes(table.column(SPLIT).combine_chunks()) == SPLITS.index(split)
    return table if keep.all() else table.filter(pa.array(keep))


def row_group_parts(ref: ArtifactRef, parts: int = 8) -> list[tuple[int, int]]:
    """The file's row groups as at most ``parts`` contiguous ranges ``(first, stop)``, fixed by the file alone
    (not by the workers), so sums over them add up the same wherever they are computed."""
    n = parquet(ref).num_row_groups
    bounds = np.linspace(0, n, min(parts, n) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def iter_row_groups(ref: ArtifactRef, split: str, first: int, stop: int, batch_rows: int,
                    dtype=np.float32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(X, y) of one split's rows in row groups ``first .. stop - 1``, in file order, at most ``batch_rows`` rows
    at a time (a row group holds fewer: `row_group_rows`)."""
    pf = parquet(ref)
    for g in range(first, stop):
        group = _group_rows(pf, g, split)
        for at in range(0, group.num_rows, batch_rows):
            part = group.slice(at, batch_rows)
            HELD.observe(part.num_rows)
            yield matrix(part, dtype), np.asarray(part.column(LABEL).to_numpy(), dtype=np.int64)


def shuffled_batches(ref: ArtifactRef, split: str, batch_rows: int, seed: int,
                     dtype=np.float32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One pass over a split in a seeded random order, holding at most ``batch_rows`` rows.

    A bounded shuffle buffer: the row groups are visited in a random order (a new one per
    ``seed``), and each buffer of up to ``batch_rows`` rows, filled from several row groups from
    anywhere in the file, is shuffled before it is yielded, so a file sorted by label still gives
    mixed batches.
    """
    import pyarrow as pa

    pf = parquet(ref)
    rng = np.random.default_rng(seed)
    pending: list = []
    held = 0

    def flush():
        table = pa.concat_tables(pending)
        order = rng.permutation(table.num_rows)
        HELD.observe(table.num_rows)
        X = matrix(table, dtype)[order]
        return X, np.asarray(table.column(LABEL).to_numpy(), dtype=np.int64)[order]

    for g in rng.permutation(pf.num_row_groups):
        group = _group_rows(pf, int(g), split)
        while group.num_rows:
            room = batch_rows - held
            pending.append(group.slice(0, room))
            held += min(room, group.num_rows)
            group = group.slice(room)
            if held >= batch_rows:
                yield flush()
                pending, held = [], 0
    if held:
        yield flush()


def sample_positions(split_codes: np.ndarray, split: str, max_rows: int | None, seed: int) -> np.ndarray:
    """Sorted file positions of the rows of ``split``: all of them, or a seeded sample of ``max_rows``."""
    where = np.flatnonzero(split_codes == SPLITS.index(split))
    if max_rows is None or len(where) <= max_rows:
        return where
    return np.sort(np.random.default_rng(seed).choice(where, size=max_rows, replace=False))


LOAD_BATCH_ROWS = 16_384  # rows of the file `load_split` reads at a time


def load_split(ref: ArtifactRef, split: str, max_rows: int | None = None, seed: int = 0,
               dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of one split: whole with at most ``max_rows`` rows, else a seeded sample of ``max_rows`` rows
    (file order kept); read `LOAD_BATCH_ROWS` rows at a time into the array returned, so that reading adds
    one such batch to the rows returned."""
    _, codes = labels_and_splits(ref)
    rows = sample_positions(codes, split, max_rows, seed)
    d = len(feature_names(ref))
    X, y, at = np.empty((len(rows), d), dtype=dtype), np.empty(len(rows), dtype=np.int64), 0
    HELD.observe(len(rows))
    for Xb, yb in iter_split(ref, None, max(min(len(rows), LOAD_BATCH_ROWS), 1), dtype=np.float32, rows=rows):
        X[at:at + len(yb)], y[at:at + len(yb)] = Xb, yb
        at += len(yb)
    return X, y


def read_table(ref: ArtifactRef):
    """The whole frame (pandas) and metadata of a small table artifact; streaming readers are above."""
    import pandas as pd

    table = parquet(ref).read()
    HELD.observe(table.num_rows)
    frame = pd.DataFrame(matrix(table, np.float32), columns=feature_names(ref))
    frame[LABEL] = table.column(LABEL).to_numpy()
    frame[SPLIT] = np.asarray(SPLITS, dtype=object)[_split_codes(table.column(SPLIT).combine_chunks())]
    return frame, read_meta(ref)


def feature_matrix(frame, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of one split (or all rows) of a `read_table` frame: X float64 (n, d), y int64 (n,)."""
    rows = frame if split is None else frame[frame[SPLIT] == split]
    X = rows.drop(columns=[LABEL, SPLIT]).to_numpy(dtype=np.float64)
    return X, rows[LABEL].to_numpy(dtype=np.int64)


def split_matrices(ref: ArtifactRef) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """``{"train"|"val"|"test": (X float64, y)}`` of a small table artifact read whole (once), and its metadata."""
    table = parquet(ref).read()
    HELD.observe(table.num_rows)
    X, y = matrix(table, np.float64), np.asarray(table.column(LABEL).to_numpy(), dtype=np.int64)
    codes = _split_codes(table.column(SPLIT).combine_chunks())
    return {s: (X[codes == i], y[codes == i]) for i, s in enumerate(SPLITS)}, read_meta(ref)


def feature_column(X: np.ndarray):
    """(m, d) rows -> the pyarrow fixed-size-list column a table stores them as (float32)."""
    import pyarrow as pa

    X = np.ascontiguousarray(X, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])


def map_table(ref: ArtifactRef, path, features: list[str], transform, batch_rows: int,
              metadata: dict[bytes, bytes] | None = None, progress=None) -> int:
    """Write at ``path`` the table ``ref`` with each batch's features replaced by ``transform(X)`` (float32
    (m, d) -> (m, k), ``features`` naming the k columns), labels and splits kept, ``batch_rows`` rows at a time;
    ``progress(rows done)`` after each batch. Returns the rows written."""
    with TableWriter(path, features, batch_rows, metadata=metadata) as out:
        for batch in parquet(ref).iter_batches(batch_size=batch_rows, columns=[FEATURES, LABEL, SPLIT]):
            HELD.observe(batch.num_rows)
            out.write(transform(matrix(batch, np.float32)), batch.column(LABEL).to_numpy(),
                      _split_codes(batch.column(SPLIT)))
            if progress is not None:
                progress(out.rows)
    return out.rows


class TableWriter:
    """Write a table artifact's Parquet file in row groups of `row_group_rows` rows.

    ``write(X, y, split_codes)`` appends rows (features as float32); the schema's metadata can
    carry ``metadata`` (bytes -> bytes). Close (or use as a context manager) to finish the file.
    """

    def __init__(self, path, features: list[str], batch_rows: int, metadata: dict[bytes, bytes] | None = None):
        import json

        import pyarrow as pa
        import pyarrow.parquet as pq

        fields = [pa.field(FEATURES, pa.list_(pa.float32(), len(features))), pa.field(LABEL, pa.int64()),
                  pa.field(SPLIT, pa.dictionary(pa.int8(), pa.string()))]
        self.schema = pa.schema(fields, metadata={**(metadata or {}),
                                                  b"marginflow.features": json.dumps(features).encode()})
        self.features, self.group = features, row_group_rows(batch_rows)
        self.writer = pq.ParquetWriter(str(path), self.schema)
        self.rows = 0

    def write(self, X: np.ndarray, y: np.ndarray, split_codes: np.ndarray) -> None:
        """Append rows: X (m, d), any float dtype (stored as float32), y (m,), split index (m,) into `SPLITS`."""
        import pyarrow as pa

        columns = [feature_column(X), pa.array(np.asarray(y, dtype=np.int64))]
        columns.append(pa.DictionaryArray.from_arrays(pa.array(np.asarray(split_codes, dtype=np.int8)),
                                                      pa.array(SPLITS)))
        self.writer.write_table(pa.Table.from_arrays(columns, schema=self.schema), row_group_size=self.group)
        self.rows += len(y)

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

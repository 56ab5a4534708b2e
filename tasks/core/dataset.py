"""Validating, encoding and splitting a source's rows, batch by batch: no file is opened here.

`scan` takes the source's batches (`tasks.store.sources.source_batches` reads them) and learns what the
``dataset`` table needs: feature names, classes, each row's class index and split, the rows' layout. All
validation happens here, so bad input fails before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.config import DataConfig
from tasks.core.layout import resolve_layout
from tasks.errors import InputError
from tasks.schema import BUILTIN_LABEL, BUILTIN_SPLIT, LABEL, SPLIT, SPLITS

MIN_PER_CLASS = 3  # one row for each of train, val and test



def encode_labels(y: np.ndarray, where: str) -> tuple[np.ndarray, list[Any]]:
    """Map labels to class indices 0..k-1 in sorted order.

    Returns:
        (codes of shape (n,), classes) where ``classes[codes[i]] == y[i]``.

    Raises:
        InputError: fewer than two classes.
    """
    import pandas as pd

    values = pd.Series(y)
    if values.dtype == object:
        values = values.astype(str)
    classes, codes = np.unique(values.to_numpy(), return_inverse=True)
    if len(classes) < 2:
        raise InputError(f"{where}: needs at least two classes, found {len(classes)}")
    return codes.astype(np.int64), [c.item() if hasattr(c, "item") else c for c in classes]


def split_rows(
    codes: np.ndarray,
    classes: list[Any],
    predefined: np.ndarray | None,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    where: str,
) -> np.ndarray:
    """Assign each row to train / val / test, stratified by class and seeded.

    A predefined split is kept; when it has no val rows, val is carved from train.
    ``test_fraction`` is a fraction of all rows, ``val_fraction`` of the rest.

    Raises:
        InputError: a class with too few rows to appear in every split.
    """
    from sklearn.model_selection import train_test_split

    n = len(codes)
    split = np.empty(n, dtype=object)
    idx = np.arange(n)
    if predefined is not None:
        split[:] = predefined
        pool = idx[predefined == "train"]
        if "val" in set(predefined):
            return split
        counts = np.bincount(codes[pool], minlength=len(classes))
        small = np.flatnonzero(counts < 2)
        if len(small):
            raise InputError(
                f"{where}: class {classes[small[0]]!r} has {counts[small[0]]} training rows; "
                "at least 2 are needed to carve a validation split"
            )
    else:
        counts = np.bincount(codes, minlength=len(classes))
        small = np.flatnonzero(counts < MIN_PER_CLASS)
        if len(small):
            raise InputError(
                f"{where}: class {classes[small[0]]!r} has {counts[small[0]]} rows; "
                f"at least {MIN_PER_CLASS} are needed to split into train/val/test"
            )
        try:
            rest, test = train_test_split(idx, test_size=test_fraction, stratify=codes, random_state=seed)
        except ValueError as e:
            raise InputError(f"{where}: cannot split into train/test ({e})") from None
        split[test] = "test"
        pool = rest
    try:
        train, val = train_test_split(pool, test_size=val_fraction, stratify=codes[pool], random_state=seed)
    except ValueError as e:
        raise InputError(f"{where}: cannot carve a validation split ({e})") from None
    split[train] = "train"
    split[val] = "val"
    return split


@dataclass
class Scan:
    """What the first pass over a source learns, holding no feature values.

    Attributes:
        feature_names: in file order.
        classes: original label values, sorted; ``codes`` (n,) index into them.
        split: (n,) int8 index into `SPLITS` per row.
        layout: the rows' `tasks.core.layout.Layout`.
    """

    feature_names: list[str]
    classes: list[Any]
    codes: np.ndarray
    split: np.ndarray
    layout: Any

    def meta(self, config: DataConfig) -> dict[str, Any]:
        return {
            "source": config.dataset or config.input,
            "label": config.label,
            "feature_names": self.feature_names,
            "classes": self.classes,
            "n_rows": int(len(self.codes)),
            "split_sizes": {s: int((self.split == i).sum()) for i, s in enumerate(SPLITS)},
            "layout": self.layout.to_json(),
            "batch_rows": config.batch_rows,
        }


def feature_columns(names: list[str], where: str, label: str, split_column: str | None) -> list[str]:
    """The feature columns of a source with columns ``names``, refusing a missing label or split column."""
    if label not in names:
        raise InputError(f"{where}: no label column {label!r} (columns: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''})")
    if split_column is not None and split_column not in names:
        raise InputError(f"{where}: no split column {split_column!r}")
    if split_column == label:
        raise InputError(f"{where}: column {label!r} cannot be both the label and the split column")
    features = [c for c in names if c not in (label, split_column)]
    for reserved in (LABEL, SPLIT):
        if reserved in features:
            raise InputError(f"{where}: column name {reserved!r} is reserved")
    if not features:
        raise InputError(f"{where}: no feature columns besides {label!r}")
    return features


def check_batch(batch, where: str, first_row: int, features: list[str], label: str,
                split_column: str | None) -> tuple[list[np.ndarray], Any, np.ndarray | None]:
    """Validate one record batch whose first row is data row ``first_row`` (1-based) of ``where``.

    Returns:
        (the d feature columns, each (m,) float32; the label column (pyarrow); split index int8 (m,) or None).
    Raises:
        InputError: naming the file, column and first bad row: a non-numeric column, NaN or infinite
            values, a value beyond float32, a missing label, an unknown split value.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    columns, first_bad = [], None  # (row, column index, what) of the earliest bad value, leftmost on ties
    for j, c in enumerate(features):
        col = batch.column(c)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)
                or pa.types.is_null(col.type) or pa.types.is_decimal(col.type)):
            raise InputError(f"{where}: column {c!r} is not numeric ({col.type})")
        values = col.to_numpy(zero_copy_only=False)
        if values.dtype != np.float32:  # one column at a time: no float64 copy of the whole batch
            wide = values.astype(np.float64, copy=False)
            with np.errstate(over="ignore"):  # values beyond float32 are found below and reported in one line
                values = wide.astype(np.float32)
            overflow = np.flatnonzero(np.isfinite(wide) & ~np.isfinite(values))
        else:
            wide, overflow = values, np.zeros(0, dtype=np.int64)
        bad = np.flatnonzero(~np.isfinite(wide))
        for rows, what in ((bad, None), (overflow, "range")):
            if len(rows) and (first_bad is None or rows[0] < first_bad[0]):
                row = int(rows[0])
                first_bad = (row, j, what or ("NaN" if np.isnan(wide[row]) else "infinite"), float(wide[row]))
        columns.append(values)
    if first_bad is not None:
        row, j, what, value = first_bad
        if what == "range":
            raise InputError(f"{where}: column {features[j]!r} has a value beyond float32's range "
                             f"({value:g} at row {first_row + row})")
        raise InputError(f"{where}: column {features[j]!r} has {what} values (first at row {first_row + row})")
    y = batch.column(label)
    if y.null_count:
        row = int(np.flatnonzero(y.is_null().to_numpy(zero_copy_only=False))[0])
        shown = "label column" if label != BUILTIN_LABEL else "label"
        raise InputError(f"{where}: {shown} {label!r} has missing values (first at row {first_row + row})")
    split = None
    if split_column is not None:
        values = pc.utf8_lower(pc.utf8_trim_whitespace(batch.column(split_column).cast(pa.string())))
        codes = pc.index_in(values, value_set=pa.array(SPLITS)).to_numpy(zero_copy_only=False)
        unknown = np.flatnonzero(np.isnan(codes.astype(np.float64)))
        if len(unknown):
            value = values[int(unknown[0])].as_py()
            raise InputError(f"{where}: split column {split_column!r} has value {value!r} (expected train, val or test)")
        split = codes.astype(np.int8)
    return columns, y, split


def _label_values(chunks: list) -> np.ndarray:
    """All label values; labels read as text become integers or floats when every value is one (as pandas reads them)."""
    import pyarrow as pa

    types = {c.type for c in chunks}
    if len(types) > 1:  # files of a landing folder that read the label differently (text in a CSV, numbers
        chunks = [c.cast(pa.string()) for c in chunks]  # or large strings in a Parquet file): compare as text
    y = pa.chunked_array(chunks) if chunks else pa.chunked_array([], pa.string())
    if pa.types.is_string(y.type) or pa.types.is_large_string(y.type):
        for target in (pa.int64(), pa.float64()):
            try:
                return y.cast(target).to_numpy()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
    if pa.types.is_dictionary(y.type):
        y = y.cast(y.type.value_type)
    return y.to_numpy()


def scan(config: DataConfig, sources, sink=None) -> Scan:
    """Validate the whole source batch by batch; encode labels and split the rows.

    ``sources``: ``(where, column names, record batches)`` per file of the source, as
    `tasks.store.sources.source_batches` yields them (``data.batch_rows`` rows a batch). ``sink(columns)``
    receives each batch's d float32 feature columns, in row order.

    Only the label and split of each row are kept; the features pass through. Raises `InputError`
    (one line naming file, column and row) on the first problem.
    """
    label = config.label if config.input is not None else BUILTIN_LABEL
    split_column = config.split_column if config.input is not None else None
    names_seen, labels_seen, splits_seen, where, n = None, [], [], None, 0
    for where, names, batches in sources:
        if config.input is None:
            split_column = BUILTIN_SPLIT if BUILTIN_SPLIT in names else None
        features = feature_columns(names, where, label, split_column)
        if names_seen is None:
            names_seen = features
            layout = resolve_layout(features, config.layout, config.shape)
        row = 1
        for batch in batches:
            columns, y, split = check_batch(batch, where, row, features, label, split_column)
            labels_seen.append(y)
            if split is not None:
                splits_seen.append(split)
            if sink is not None:
                sink(columns)
            del columns
            row += batch.num_rows
            n += batch.num_rows
        if row == 1 and config.input is not None and not Path(config.input).is_dir():
            raise InputError(f"{where}: file has no rows")
    if n == 0:
        raise InputError(f"{config.input}: no rows in any file")
    where = config.dataset if config.input is None else config.input
    codes, classes = encode_labels(_label_values(labels_seen), where)
    predefined = None
    if splits_seen:
        predefined = np.asarray(SPLITS, dtype=object)[np.concatenate(splits_seen)]
        for needed in ("train", "test"):
            if needed not in set(predefined):
                raise InputError(f"{where}: split column {split_column!r} has no {needed!r} rows")
    split = split_rows(codes, classes, predefined, config.test_fraction, config.val_fraction, config.seed, where)
    split_codes = np.zeros(len(split), dtype=np.int8)
    for i, s in enumerate(SPLITS):
        split_codes[split == s] = i
    return Scan(names_seen, classes, codes, split_codes, layout)

"""Data sources and validation: built-in datasets, user files and landing folders, labels, splits.

`prepare` does everything the ``ingest`` stage does except writing: the dataset frame
(float64 feature columns, ``__label__`` as class index 0..k-1, ``__split__``) and its
metadata. All validation happens here, so bad input fails before anything is written.
"""

from __future__ import annotations

import csv
import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import DataConfig
from tasks.core.layout import resolve_layout
from tasks.errors import InputError, first_line
from tasks.store.artifacts import ArtifactRef, sha256_file, sha256_text
from tasks.store.tables import LABEL, SPLIT, SPLITS

MIN_PER_CLASS = 3  # one row for each of train, val and test


@dataclass(frozen=True)
class Table:
    """A validated labelled table before encoding and splitting.

    Attributes:
        X: features, shape (n, d), float64, finite.
        y: original label values, shape (n,).
        feature_names: d column names, in file order.
        split: predefined split per row ("train"/"val"/"test"), or None.
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    split: np.ndarray | None = None


def describe_source(config: DataConfig) -> ArtifactRef:
    """A reference to the raw source; its digest covers a file's bytes, or a built-in's version."""
    if config.input is None:
        from importlib.metadata import version

        lib = "mnist1d" if config.dataset == "mnist1d" else "scikit-learn"
        digest = sha256_text(f"builtin:{config.dataset}:{lib}=={version(lib)}")
        return ArtifactRef(kind="source", path=f"builtin:{config.dataset}", sha256=digest)
    path = Path(config.input)
    if path.is_dir():
        files = landing_files(path)
        listing = "\n".join(f"{f.name} {sha256_file(f)}" for f in files)
        return ArtifactRef(kind="source", path=str(path.resolve()), sha256=sha256_text(f"folder:\n{listing}"))
    if not path.is_file():
        raise InputError(f"{config.input}: file not found")
    return ArtifactRef(kind="source", path=str(path.resolve()), sha256=sha256_file(path))


DATA_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz", ".tsv", ".tsv.gz")


def landing_files(folder: Path) -> list[Path]:
    """The data files of a landing folder, in name order (hidden files and other suffixes ignored).

    Raises:
        InputError: the folder holds no CSV or Parquet file.
    """
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(DATA_SUFFIXES))
    if not files:
        raise InputError(f"{folder}: no .csv, .csv.gz or .parquet files in this folder")
    return files


# --------------------------------------------------------------------------- built-ins


def load_builtin(name: str) -> Table:
    """A bundled dataset; mnist1d is generated locally with its official 4000/1000 split."""
    if name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        d = make_dataset(get_dataset_args())
        X = np.concatenate([d["x"], d["x_test"]]).astype(np.float64)
        y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
        split = np.array(["train"] * len(d["x"]) + ["test"] * len(d["x_test"]), dtype=object)
        return Table(X, y, [f"t{i:02d}" for i in range(X.shape[1])], split)
    from sklearn import datasets

    loader = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "iris": datasets.load_iris,
    }[name]
    bunch = loader()
    names = [str(n) for n in getattr(bunch, "feature_names", [])] or [
        f"x{i}" for i in range(bunch.data.shape[1])
    ]
    # labels by their names (setosa, class_0, malignant ...; digits' names are its digits)
    return Table(bunch.data.astype(np.float64), np.asarray(bunch.target_names)[bunch.target], names)


# --------------------------------------------------------------------------- labels and splits


def encode_labels(y: np.ndarray, where: str) -> tuple[np.ndarray, list[Any]]:
    """Map labels to class indices 0..k-1 in sorted order.

    Returns:
        (codes of shape (n,), classes) where ``classes[codes[i]] == y[i]``.

    Raises:
        InputError: fewer than two classes.
    """
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


# --------------------------------------------------------------------------- streaming ingest

BUILTIN_LABEL, BUILTIN_SPLIT = "__target__", "__given_split__"
CSV_CONVERSION = re.compile(r"In CSV column #(\d+): (?:Row #(\d+): )?CSV conversion error to \w+: invalid value '(.*)'")


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


def _unreadable(path, e: Exception) -> InputError:
    return InputError(f"{path}: unreadable file ({first_line(e)})")


def file_columns(p: Path) -> list[str]:
    """A file's column names, from the Parquet schema or the CSV header (duplicates refused)."""
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty")
    name = p.name.lower()
    if not name.endswith(DATA_SUFFIXES):
        raise InputError(f"{p}: unsupported format (use .csv, .csv.gz or .parquet)")
    try:
        if name.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            names = pq.read_schema(p).names
        else:
            opener = gzip.open if name.endswith(".gz") else open
            with opener(p, "rt", newline="", encoding="utf-8-sig") as f:  # a byte-order mark (Excel) is not a name
                names = next(csv.reader(f, delimiter="\t" if ".tsv" in name else ","), [])
            if not names:
                raise InputError(f"{p}: file is empty")
    except InputError:
        raise
    except Exception as e:  # OSError, gzip.BadGzipFile, UnicodeDecodeError, csv.Error, pyarrow's own types
        raise _unreadable(p, e) from None
    seen: set[str] = set()
    dupes = [c for c in names if c in seen or seen.add(c)]
    if dupes:
        raise InputError(f"{p}: duplicate column name {dupes[0]!r}")
    return [str(c) for c in names]


def _file_batches(p: Path, names: list[str], label: str, split_column: str | None, batch_rows: int):
    """pyarrow record batches of a file, at most ``batch_rows`` rows each.

    CSV features are read as float64 (a value that is not a number fails with its column and row), the
    label and split columns as strings (the label's type is inferred from all its values later).
    """
    import pyarrow as pa

    name = p.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            yield from pq.ParquetFile(p, pre_buffer=False).iter_batches(batch_size=batch_rows)
            return
        from pyarrow import csv as pacsv

        text = {label} | ({split_column} if split_column else set())
        types = {c: (pa.string() if c in text else pa.float64()) for c in names}
        reader = pacsv.open_csv(
            # the names as `file_columns` read them (a byte-order mark removed); the header line itself skipped
            p, read_options=pacsv.ReadOptions(block_size=1 << 22, column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter="\t" if ".tsv" in name else ","),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True))
        pending, held = [], 0
        for batch in reader:
            pending.append(batch)
            held += batch.num_rows
            while held >= batch_rows:
                table = pa.Table.from_batches(pending).combine_chunks()
                yield from table.slice(0, batch_rows).to_batches()
                rest = table.slice(batch_rows)
                pending, held = rest.to_batches(), rest.num_rows
        if held:
            yield from pa.Table.from_batches(pending).combine_chunks().to_batches()
    except InputError:
        raise
    except Exception as e:
        m = CSV_CONVERSION.search(str(e))
        if m:
            column = names[int(m.group(1))]
            row = int(m.group(2)) if m.group(2) else _first_non_number(p, names, column)
            at = f" at row {row}" if row else ""
            raise InputError(f"{p}: column {column!r} is not numeric (value {m.group(3)!r}{at})") from None
        raise _unreadable(p, e) from None


def _first_non_number(p: Path, names: list[str], column: str) -> int | None:
    """The data row (1-based) of the first value of a CSV column that is not a number (the error path only:
    pyarrow names the value but not its row). Reads that one column as text, a batch at a time."""
    import pyarrow as pa
    from pyarrow import csv as pacsv

    reader = pacsv.open_csv(p, read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
                            parse_options=pacsv.ParseOptions(delimiter="\t" if ".tsv" in p.name.lower() else ","),
                            convert_options=pacsv.ConvertOptions(include_columns=[column],
                                                                 column_types={column: pa.string()}))
    row = 1
    for batch in reader:
        text = batch.column(0).to_pandas()
        numbers = pd.to_numeric(text, errors="coerce")
        bad = np.flatnonzero((numbers.isna() & text.notna() & (text.str.strip() != "")).to_numpy())
        if len(bad):
            return row + int(bad[0])
        row += batch.num_rows
    return None


def source_batches(config: DataConfig, batch_rows: int):
    """``(where, columns, batches)`` per file of the source; ``batches`` yields pyarrow record batches.

    Built-ins are one in-memory batch whose label and split columns are `BUILTIN_LABEL` and
    `BUILTIN_SPLIT`. A landing folder's files must share the first file's columns.
    """
    import pyarrow as pa

    if config.input is None:
        t = load_builtin(config.dataset)
        arrays = [pa.array(t.X[:, j]) for j in range(t.X.shape[1])] + [pa.array(t.y)]
        names = [*t.feature_names, BUILTIN_LABEL]
        if t.split is not None:
            arrays.append(pa.array(t.split.astype(str)))
            names.append(BUILTIN_SPLIT)
        table = pa.Table.from_arrays(arrays, names=names)
        yield config.dataset, names, iter(table.to_batches(max_chunksize=batch_rows))
        return
    path = Path(config.input)
    files = landing_files(path) if path.is_dir() else [path]
    first = None
    for f in files:
        names = file_columns(f)
        if first is not None and names != first[1]:
            raise InputError(f"{f}: columns differ from {first[0].name} ({', '.join(names[:6])} ...)")
        first = first or (f, names)
        yield str(f), names, _file_batches(f, names, config.label, config.split_column, batch_rows)


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


def scan(config: DataConfig, sink=None) -> Scan:
    """Read and validate the whole source batch by batch (``data.batch_rows`` rows at a time); encode labels
    and split the rows. ``sink(columns)`` receives each batch's d float32 feature columns, in row order.

    Only the label and split of each row are kept; the features pass through. Raises `InputError`
    (one line naming file, column and row) on the first problem.
    """
    label = config.label if config.input is not None else BUILTIN_LABEL
    split_column = config.split_column if config.input is not None else None
    names_seen, labels_seen, splits_seen, where, n = None, [], [], None, 0
    for where, names, batches in source_batches(config, config.batch_rows):
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
        result = scan(config, sink)
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


# Sources up to this size are read whole before a run starts (`check_source`), so any bad value fails
# before anything is written; larger ones get their header checked, and their values in ingest.
def preflight_full_bytes() -> int:
    """Sources up to this size are read whole before a run (``MARGINFLOW_PREFLIGHT_BYTES``, default 256 MiB)."""
    import os

    try:
        return int(os.environ.get("MARGINFLOW_PREFLIGHT_BYTES") or 256 * 2**20)
    except ValueError:
        raise InputError(f"MARGINFLOW_PREFLIGHT_BYTES={os.environ['MARGINFLOW_PREFLIGHT_BYTES']!r}: not a number "
                         "of bytes") from None


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
    return scan(config).layout


def prepare(config: DataConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Everything ingest does except writing, for a source small enough to hold: the dataset frame
    (float32 features, ``__label__``, ``__split__``) and its metadata."""
    parts: list[np.ndarray] = []
    result = scan(config, lambda columns: parts.append(np.stack(columns, axis=1)))
    X = np.concatenate(parts) if parts else np.zeros((0, len(result.feature_names)), np.float32)
    frame = pd.DataFrame(X, columns=result.feature_names)
    frame[LABEL] = result.codes
    frame[SPLIT] = pd.Categorical(np.asarray(SPLITS, dtype=object)[result.split], categories=list(SPLITS))
    return frame, result.meta(config)

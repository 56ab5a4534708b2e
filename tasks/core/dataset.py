"""Data sources and validation: built-in datasets, user files and landing folders, labels, splits.

`prepare` does everything the ``ingest`` stage does except writing: the dataset frame
(float64 feature columns, ``__label__`` as class index 0..k-1, ``__split__``) and its
metadata. All validation happens here, so bad input fails before anything is written.
"""

from __future__ import annotations

import csv
import gzip
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


# --------------------------------------------------------------------------- user files


def _header_duplicates(path: Path, opener) -> list[str]:
    with opener(path, "rt", newline="") as f:
        header = next(csv.reader(f), [])
    seen: set[str] = set()
    return [c for c in header if c in seen or seen.add(c)]


def read_frame(path: str) -> pd.DataFrame:
    """Read CSV, gzipped CSV or Parquet, refusing empty, unreadable or duplicated-header files.

    A folder is a landing folder: its files (`landing_files`) are read and appended in name
    order; they must have the same columns.
    """
    p = Path(path)
    if p.is_dir():
        frames = []
        for f in landing_files(p):
            frame = read_frame(str(f))
            if frames and list(frame.columns) != list(frames[0].columns):
                raise InputError(f"{f}: columns differ from {landing_files(p)[0].name} "
                                 f"({', '.join(map(str, frame.columns[:6]))} ...)")
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)
    if not p.is_file():
        raise InputError(f"{path}: file not found")
    if p.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    name = p.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            names = pq.read_schema(p).names
            dupes = sorted({c for c in names if names.count(c) > 1})
            if dupes:
                raise InputError(f"{path}: duplicate column name {dupes[0]!r}")
            df = pq.read_table(p).to_pandas()
        elif name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
            opener = gzip.open if name.endswith(".gz") else open
            sep = "\t" if ".tsv" in name else ","
            dupes = _header_duplicates(p, opener) if sep == "," else []
            if dupes:
                raise InputError(f"{path}: duplicate column name {dupes[0]!r}")
            df = pd.read_csv(p, sep=sep)
        else:
            raise InputError(f"{path}: unsupported format (use .csv, .csv.gz or .parquet)")
    except InputError:
        raise
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: file is empty") from None
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, pd.errors.ParserError, ValueError) as e:
        first = first_line(e)
        raise InputError(f"{path}: unreadable file ({first})") from None
    except Exception as e:  # pyarrow raises its own types for corrupt files
        if type(e).__module__.startswith("pyarrow"):
            first = first_line(e)
            raise InputError(f"{path}: unreadable file ({first})") from None
        raise
    if len(df) == 0:
        raise InputError(f"{path}: file has no rows")
    return df


def validate_frame(df: pd.DataFrame, path: str, label: str, split_column: str | None) -> Table:
    """Check a user table and turn it into a `Table`.

    Raises:
        InputError: naming the file and column, for: no such label or split column,
            missing labels, non-numeric features, NaN/inf features, bad split values.
    """
    columns = [str(c) for c in df.columns]
    df.columns = columns
    if label not in columns:
        raise InputError(f"{path}: no label column {label!r} (columns: {', '.join(columns[:8])}{' ...' if len(columns) > 8 else ''})")
    if split_column is not None and split_column not in columns:
        raise InputError(f"{path}: no split column {split_column!r}")
    if split_column == label:
        raise InputError(f"{path}: column {label!r} cannot be both the label and the split column")
    feature_names = [c for c in columns if c not in (label, split_column)]
    for reserved in (LABEL, SPLIT):
        if reserved in feature_names:
            raise InputError(f"{path}: column name {reserved!r} is reserved")
    if not feature_names:
        raise InputError(f"{path}: no feature columns besides {label!r}")
    for c in feature_names:
        if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])):
            raise InputError(f"{path}: column {c!r} is not numeric ({df[c].dtype})")
    X = df[feature_names].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        what = "NaN" if np.isnan(X[row, col]) else "infinite"
        raise InputError(f"{path}: column {feature_names[col]!r} has {what} values (first at row {row + 1})")
    y_raw = df[label]
    if y_raw.isna().any():
        row = int(np.flatnonzero(y_raw.isna().to_numpy())[0])
        raise InputError(f"{path}: label column {label!r} has missing values (first at row {row + 1})")
    split = None
    if split_column is not None:
        split = df[split_column].astype(str).str.strip().str.lower().to_numpy(dtype=object)
        unknown = sorted(set(split) - set(SPLITS))
        if unknown:
            raise InputError(f"{path}: split column {split_column!r} has value {unknown[0]!r} (expected train, val or test)")
        for needed in ("train", "test"):
            if needed not in set(split):
                raise InputError(f"{path}: split column {split_column!r} has no {needed!r} rows")
    return Table(X, y_raw.to_numpy(), feature_names, split)


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


def load_table(config: DataConfig) -> tuple[Table, str]:
    """Read and validate the configured source; returns the table and a name for messages."""
    if config.input is None:
        return load_builtin(config.dataset), config.dataset
    df = read_frame(config.input)
    return validate_frame(df, config.input, config.label, config.split_column), config.input


def prepare(config: DataConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Everything ingest does except writing: the dataset frame and its metadata.

    All validation happens here, so bad input fails before anything is written; the rows'
    layout (`tasks.core.layout`) is resolved here too.
    """
    table, where = load_table(config)
    layout = resolve_layout([str(n) for n in table.feature_names], config.layout, config.shape)
    codes, classes = encode_labels(table.y, where)
    split = split_rows(
        codes, classes, table.split, config.test_fraction, config.val_fraction, config.seed, where
    )
    frame = pd.DataFrame(table.X, columns=table.feature_names)
    frame[LABEL] = codes
    frame[SPLIT] = pd.Categorical(split, categories=list(SPLITS))
    meta = {
        "source": config.dataset or config.input,
        "label": config.label,
        "feature_names": table.feature_names,
        "classes": classes,
        "n_rows": int(len(frame)),
        "split_sizes": {s: int((split == s).sum()) for s in SPLITS},
        "layout": layout.to_json(),
    }
    return frame, meta

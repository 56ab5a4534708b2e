"""The one reader of every source: built-in datasets, user files (CSV, TSV, Parquet, gzipped or not) and landing
folders of them. Ingest reads its rows here and predict reads its input here, so both accept the same files and
refuse the same ones (a missing file, an unsupported suffix, duplicate column names), in one line naming the file.

Files are read ``batch_rows`` rows at a time (pyarrow's streaming CSV and Parquet readers).
"""

from __future__ import annotations

import csv
import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.config import DataConfig
from tasks.errors import InputError, first_line
from tasks.schema import BUILTIN_LABEL, BUILTIN_SPLIT
from tasks.store.artifacts import ArtifactRef, sha256_file, sha256_text

CSV_CONVERSION = re.compile(r"In CSV column #(\d+): (?:Row #(\d+): )?CSV conversion error to \w+: invalid value '(.*)'")


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
        for table in _csv_tables(p, names, batch_rows, pacsv.ConvertOptions(column_types=types,
                                                                              strings_can_be_null=True)):
            yield from table.to_batches()
    except InputError:
        raise
    except Exception as e:
        m = CSV_CONVERSION.search(str(e))
        if m:
            column = names[int(m.group(1))]
            # pyarrow names the row only when it reads on one thread (a one-core machine, OMP_NUM_THREADS=1), and
            # counts the header line it skipped as row 1: the data row is one less
            row = int(m.group(2)) - 1 if m.group(2) else _first_non_number(p, names, column)
            at = f" at row {row}" if row else ""
            raise InputError(f"{p}: column {column!r} is not numeric (value {m.group(3)!r}{at})") from None
        raise _unreadable(p, e) from None


def _first_non_number(p: Path, names: list[str], column: str) -> int | None:
    """The data row (1-based) of the first value of a CSV column that is not a number (the error path only:
    pyarrow names the value but not its row). Reads that one column as text, a batch at a time."""
    import pandas as pd
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




def _csv_tables(path: Path, names: list[str], batch_rows: int, convert):
    """A CSV or TSV file as pyarrow tables of ``batch_rows`` rows (the last one shorter), read a block at a time;
    ``names`` as `file_columns` read them (a byte-order mark removed), the header line itself skipped."""
    import pyarrow as pa
    from pyarrow import csv as pacsv

    reader = pacsv.open_csv(
        path, read_options=pacsv.ReadOptions(block_size=1 << 22, column_names=names, skip_rows=1),
        parse_options=pacsv.ParseOptions(delimiter="\t" if ".tsv" in path.name.lower() else ","),
        convert_options=convert)
    pending, held = [], 0
    for batch in reader:
        pending.append(batch)
        held += batch.num_rows
        while held >= batch_rows:
            table = pa.Table.from_batches(pending).combine_chunks()
            yield table.slice(0, batch_rows)
            rest = table.slice(batch_rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending).combine_chunks()


def frames(path: Path, columns: list[str], batch_rows: int):
    """The named ``columns`` of a user file as pandas frames of at most ``batch_rows`` rows (what predict reads):
    the same reader as ingest's, CSV values typed as pyarrow infers them."""
    try:
        if path.name.lower().endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=batch_rows, columns=columns):
                yield batch.to_pandas()
            return
        from pyarrow import csv as pacsv

        convert = pacsv.ConvertOptions(include_columns=columns, strings_can_be_null=True)
        for table in _csv_tables(path, file_columns(path), batch_rows, convert):
            yield table.to_pandas()
    except InputError:
        raise
    except Exception as e:  # pyarrow raises its own types for a corrupt file
        raise _unreadable(path, e) from None


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

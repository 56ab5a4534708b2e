"""Batch prediction with a bundle: bounded memory, checked columns, atomic output.

The input (CSV, CSV.gz or Parquet) is read ``batch_rows`` rows at a time; its columns must
be the bundle's feature names (any order), plus optionally the label column the model was
trained with or the one named by ``label`` (ignored as a feature; with ``label``, the predictions
are scored against it), and the ``id_column``. Output, one row per input row in input order:

* ``<id_column>``  - with ``id_column``: its values, passed through;
* ``prediction``   - the label, in the original label values;
* ``score``        - two classes: the SVC decision value, positive for ``classes_[1]``;
* ``score_<class>`` - more classes: the one-vs-rest decision value per class.

The output is written to a temporary file beside the target and renamed into place, so an
error leaves no half-written file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.errors import InputError
from tasks.ops.bundle import Bundle, check_columns
from tasks.store.sources import file_columns, frames

OUTPUT_SUFFIXES = (".parquet", ".csv")


def _columns(path: Path) -> list[str]:
    """The input's column names, read as ingest reads them (`tasks.store.sources.file_columns`: CSV, TSV or Parquet,
    a byte-order mark removed, duplicates refused)."""
    return file_columns(path)


def batches(path: Path, columns: list[str], batch_rows: int) -> Iterator[pd.DataFrame]:
    """The ``columns`` of ``path``, ``batch_rows`` rows at a time (empty batches skipped), by ingest's reader.

    Raises:
        InputError: the file cannot be read past some point (a corrupt body, a malformed line).
    """
    for chunk in frames(path, columns, batch_rows):
        if len(chunk):
            yield chunk


def output_frame(model: Bundle, rows: pd.DataFrame, where: str) -> pd.DataFrame:
    for c in model.feature_names_in_:
        column = rows[c]
        if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
            numbers = pd.to_numeric(column, errors="coerce")
            bad = numbers.isna() & column.notna()
            if bad.any():
                raise InputError(f"{where}: column {c!r} is not numeric (first at row {int(rows.index[bad.to_numpy()][0]) + 1})")
            rows = rows.assign(**{c: numbers})
    X = rows[model.feature_names_in_].to_numpy(dtype=np.float64)
    if not np.isfinite(X).all():
        r, c = np.argwhere(~np.isfinite(X))[0]
        raise InputError(f"{where}: column {model.feature_names_in_[c]!r} has a missing or non-finite value "
                         f"(row {int(rows.index[r]) + 1})")
    big = np.abs(X) > np.finfo(np.float32).max  # the model computes in float32, as ingest stores the features
    if big.any():
        r, c = np.argwhere(big)[0]
        raise InputError(f"{where}: column {model.feature_names_in_[c]!r} has a value beyond float32 "
                         f"({X[r, c]:.3g}, row {int(rows.index[r]) + 1})")
    F = model.features(X)
    out = pd.DataFrame({"prediction": model.classes_[model.svc.predict(F).astype(np.int64)]})
    scores = model.svc.decision_function(F)
    if scores.ndim == 1:
        out["score"] = scores
    else:
        for i, c in enumerate(model.classes_):
            out[f"score_{c}"] = scores[:, i]
    return out


@dataclass
class Predicted:
    """What `predict_file` did: rows predicted and, with a label column, how many were right."""

    rows: int = 0
    labelled: int = 0  # rows with a label value (``label`` given)
    correct: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


def _same_labels(predicted: np.ndarray, given: pd.Series) -> tuple[int, int]:
    """(rows with a label, of them predicted right): labels compared as numbers when both sides are, else as text."""
    known = given.notna().to_numpy()
    p, g = pd.Series(predicted[known]), pd.Series(given.to_numpy()[known])
    pn, gn = pd.to_numeric(p, errors="coerce"), pd.to_numeric(g, errors="coerce")
    same = pn == gn if pn.notna().all() and gn.notna().all() else p.astype(str) == g.astype(str)
    return int(known.sum()), int(same.sum())


def predict_file(model: Bundle, input_path: str, output_path: str, batch_rows: int = 10_000,
                 progress=None, label: str | None = None, id_column: str | None = None) -> Predicted:
    """Predict every row of ``input_path`` into ``output_path``.

    ``label``: a column of true labels, not a feature: the predictions are scored against it. ``id_column``: a
    column copied to the output unchanged, first.

    Raises:
        InputError: missing input, unsupported format, a missing or unexpected column (``label`` or
            ``id_column`` named but absent, or a feature), or a non-finite feature value (nothing is written then).
    """
    src, dest = Path(input_path), Path(output_path)
    if not src.is_file():
        raise InputError(f"{input_path}: file not found")
    if not dest.name.lower().endswith(OUTPUT_SUFFIXES):
        raise InputError(f"{output_path}: output must end in .parquet or .csv")
    if dest.is_dir():
        raise InputError(f"{output_path}: is a folder")
    if not dest.parent.is_dir():
        raise InputError(f"{output_path}: folder {dest.parent} does not exist")
    if dest.resolve() == src.resolve():
        raise InputError(f"{output_path}: is the input file; write the predictions to another file")
    if not os.access(dest.parent, os.W_OK | os.X_OK):
        raise InputError(f"{output_path}: cannot write in {dest.parent} (not writable)")
    columns = _columns(src)
    for flag, name in (("--label", label), ("--id", id_column)):
        if name is not None and name not in columns:
            raise InputError(f"{input_path}: no column {name!r} ({flag}); its columns: {', '.join(columns[:8])}"
                             + (" ..." if len(columns) > 8 else ""))
        if name is not None and name in model.feature_names_in_:
            raise InputError(f"{flag} {name}: a feature column of this model, not a {flag[2:]} column")
    allowed = tuple(c for c in (model.label, label, id_column) if c)
    check_columns(columns, model.feature_names_in_, str(src), allowed_extra=allowed)
    read = list(dict.fromkeys([*model.feature_names_in_, *(c for c in (label, id_column) if c)]))
    done = Predicted()
    try:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}-", suffix=".tmp")
    except OSError as e:
        raise InputError(f"{output_path}: cannot write in {dest.parent} ({e.strerror or e})") from None
    os.close(fd)
    tmp, n, writer = Path(tmp_name), 0, None
    try:
        for rows in batches(src, read, batch_rows):
            rows.index = pd.RangeIndex(n, n + len(rows))
            out = output_frame(model, rows[model.feature_names_in_], str(src))
            if label is not None:
                labelled, correct = _same_labels(out["prediction"].to_numpy(), rows[label])
                done.labelled, done.correct = done.labelled + labelled, done.correct + correct
            if id_column is not None:
                out.insert(0, id_column, rows[id_column].to_numpy())
            if dest.name.lower().endswith(".parquet"):
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.Table.from_pandas(out, preserve_index=False)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
            else:
                out.to_csv(tmp, mode="a", header=n == 0, index=False)
            n += len(rows)
            if progress:
                progress(n)
        if writer is not None:
            writer.close()
            writer = None
        if n == 0:
            raise InputError(f"{input_path}: file has no rows")
        os.replace(tmp, dest)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    done.rows = n
    return done

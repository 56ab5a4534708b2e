"""Property-based tests (Hypothesis) of the input contract: whatever a user gives, marginflow either accepts it
with a valid result or refuses it with one line (`InputError`, exit 2) and writes nothing; never another
exception (exit 1, a traceback).

Three doors: a data file through everything ``ingest`` does before writing (`tasks.ingest.prepare` and the
preflight's `check_source`), ``--set`` overrides through the config loader, and rows through ``predict`` with a
small trained bundle. The number of examples per property is ``MARGINFLOW_FUZZ_EXAMPLES`` (30 in ``make test``;
``make fuzz`` runs thousands). Examples are derived from a fixed seed (``derandomize``), so a run is repeatable.
"""

from __future__ import annotations

import gzip
import math
import os
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tasks.errors import InputError

EXAMPLES = int(os.environ.get("MARGINFLOW_FUZZ_EXAMPLES", "30"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


def _one_line(e: InputError) -> None:
    text = str(e)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)


# --------------------------------------------------------------------------- data files

NAMES = st.one_of(st.sampled_from(["a", "b", "label", "x y", "é", "", "1", "t0", "t1", "px0", "Unnamed: 0"]),
                  st.text(alphabet=string.ascii_letters + string.digits + " _-éß,\"'", max_size=6))
CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64).map(repr),
    st.integers(min_value=-10**20, max_value=10**20).map(str),
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "1e39", "-1e400", "n/a", "NULL", " 3 ", "1,5", "0x10", "true",
                     "\"quoted\"", "yes", "🙂"]),
    st.text(alphabet=string.printable, max_size=5),
)


@st.composite
def tables(draw):
    n_cols = draw(st.integers(min_value=0, max_value=5))
    names = draw(st.lists(NAMES, min_size=n_cols, max_size=n_cols))
    label = draw(st.one_of(st.sampled_from(names) if names else st.just("label"), NAMES))
    n_rows = draw(st.integers(min_value=0, max_value=25))
    rows = [draw(st.lists(CELLS, min_size=n_cols, max_size=n_cols)) for _ in range(n_rows)]
    fmt = draw(st.sampled_from(["csv", "csv-bom", "csv.gz", "tsv", "csv-latin1", "csv-semicolon", "parquet"]))
    return names, rows, label, fmt


NUMBERS = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(repr)


@st.composite
def near_valid_tables(draw):
    """Mostly valid tables (numeric features, a label of 2-3 classes), each cell corrupted now and then: the
    accepting path and the values right at its edges."""
    n_cols = draw(st.integers(min_value=1, max_value=5))
    names = [f"f{i}" for i in range(n_cols)] + ["label"]
    n_rows = draw(st.integers(min_value=6, max_value=30))
    classes = draw(st.lists(st.one_of(st.integers(-3, 3).map(str), st.sampled_from(["yes", "no", "é", "1.5", ""])),
                            min_size=1, max_size=3, unique=True))
    rows = [[*draw(st.lists(NUMBERS, min_size=n_cols, max_size=n_cols)), classes[i % len(classes)]]
            for i in range(n_rows)]
    for _ in range(draw(st.integers(min_value=0, max_value=2))):  # a clean table, or one or two bad cells
        rows[draw(st.integers(0, n_rows - 1))][draw(st.integers(0, n_cols))] = draw(CELLS)
    fmt = draw(st.sampled_from(["csv", "csv-bom", "csv.gz", "tsv", "parquet"]))
    return names, rows, "label", fmt


def _write(tmp: Path, names: list[str], rows: list[list[str]], fmt: str) -> Path:
    if fmt == "parquet":
        frame = pd.DataFrame({f"{n}": [r[i] for r in rows] for i, n in enumerate(names)})
        for c in frame.columns:  # numbers where a whole column is numbers, as a writer of Parquet would store them
            try:
                frame[c] = pd.to_numeric(frame[c])
            except (ValueError, TypeError):
                pass
        path = tmp / "data.parquet"
        try:
            frame.to_parquet(path, index=False)
        except Exception:  # noqa: BLE001  (a frame pyarrow cannot store is not an input a user could have)
            path.write_bytes(b"PAR1 not really")
        return path
    sep = {"tsv": "\t", "csv-semicolon": ";"}.get(fmt, ",")

    def quote(v: str) -> str:
        return '"' + v.replace('"', '""') + '"' if any(ch in v for ch in (sep, '"', "\n", "\r")) else v

    text = "\n".join(sep.join(quote(v) for v in line) for line in [names, *rows]) + ("\n" if names else "")
    suffix = {"tsv": ".tsv", "csv.gz": ".csv.gz"}.get(fmt, ".csv")
    path = tmp / f"data{suffix}"
    data = text.encode("latin-1", errors="replace") if fmt == "csv-latin1" else text.encode()
    if fmt == "csv-bom":
        data = b"\xef\xbb\xbf" + data
    path.write_bytes(gzip.compress(data) if fmt == "csv.gz" else data)
    return path


@FUZZ
@given(table=st.one_of(tables(), near_valid_tables(), near_valid_tables()), split=st.booleans(), layout=st.sampled_from(["auto", "table", "sequence", "image"]))
def test_any_data_file_is_read_or_refused_in_one_line(tmp_path_factory, table, split, layout):
    from tasks.config import DataConfig
    from tasks.ingest import check_source, prepare

    names, rows, label, fmt = table
    tmp = tmp_path_factory.mktemp("fuzz")
    path = _write(tmp, names, rows, fmt)
    before = sorted(p.name for p in tmp.iterdir())
    try:
        config = DataConfig(dataset=None, input=str(path), label=label or "label", layout=layout,
                            split_column=names[0] if split and names and names[0] != label else None)
        check_source(config)
        frame, meta = prepare(config)
    except InputError as e:
        _one_line(e)
        event("refused")
    except ValueError as e:  # DataConfig's own validation (pydantic): what load_config turns into one line
        assert "validation error" in str(e).lower() or "data." in str(e), repr(e)
    else:  # accepted: a valid dataset
        event("accepted")
        X = frame[meta["feature_names"]].to_numpy(dtype=np.float32)
        assert np.isfinite(X).all() and len(frame) >= 2 and len(meta["classes"]) >= 2
    assert sorted(p.name for p in tmp.iterdir()) == before  # nothing written beside the source


# --------------------------------------------------------------------------- config overrides

def _keys() -> list[str]:
    from tasks.config import Config

    return [f"{section}.{key}" for section, field in Config.model_fields.items()
            for key in field.annotation.model_fields]


VALUES = st.one_of(
    st.integers(min_value=-2**65, max_value=2**65).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: "nan" if math.isnan(f) else
                                                     ("inf" if f == math.inf else "-inf" if f == -math.inf else repr(f))),
    st.sampled_from(["true", "false", "[]", "[1, 2]", "[0]", "['a']", "[1.5, -2]", "{a = 1}", "'rbf'", "'auto'",
                     "'scale'", "\"x\"", "1e400", "-0.0", "0", "1\n[encoder]\nkind='cnn2d'", "'a\\nb'", "[[1]]",
                     "2026-11-30", "'balanced'", "''", "\x00", "4294967295", "4294967296"]),
    st.text(max_size=8),
)


@FUZZ
@given(overrides=st.lists(st.tuples(st.one_of(st.sampled_from(_keys()), st.sampled_from(_keys()),
                                              st.sampled_from(_keys()), st.text(max_size=10)),
                                    st.one_of(VALUES, st.integers(0, 100).map(str), st.sampled_from(["0.5", "10.0"]))),
                          max_size=3))
def test_any_set_override_is_accepted_with_valid_values_or_refused_in_one_line(overrides):
    from tasks.config_text import load_config

    try:
        config = load_config(None, [f"{k}={v}" for k, v in overrides])
    except InputError as e:
        _one_line(e)
        event("refused")
        return
    event("accepted")
    for section in config.model_dump().values():  # accepted: every number finite, every seed in range
        for key, value in section.items():
            for v in value if isinstance(value, list) else [value]:
                assert not (isinstance(v, float) and not math.isfinite(v)), (key, v)
            if key == "seed":
                assert 0 <= value <= 2**32 - 1


# --------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def bundle(prefect_api, tmp_path_factory):
    from flows.pipeline import pipeline
    from tasks.ops.bundle import Bundle
    from tasks.ops.registry import Registry
    from tests.helpers import iris_csv, tiny_config

    where = tmp_path_factory.mktemp("fuzz-model")
    csv = iris_csv(where / "iris.csv")
    pipeline(config=tiny_config(csv, "evaluate.approaches=['features_svc']"), data_dir=str(where / "data"))
    return Bundle.load(Registry(where / "data").path("champion"))


@st.composite
def predict_rows(draw):
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    names = draw(st.one_of(st.just(columns), st.just([*columns, "species"]), st.permutations(columns),
                           st.lists(st.sampled_from([*columns, "species", "extra", ""]), max_size=6)))
    n_rows = draw(st.integers(min_value=0, max_value=12))
    number = st.floats(min_value=-10, max_value=10).map(repr)
    rows = [draw(st.lists(number, min_size=len(names), max_size=len(names))) for _ in range(n_rows)]
    for _ in range(draw(st.integers(min_value=0, max_value=2)) if rows and names else 0):  # clean, or a bad cell
        rows[draw(st.integers(0, n_rows - 1))][draw(st.integers(0, len(names) - 1))] = draw(CELLS)
    return names, rows, draw(st.sampled_from(["csv", "csv-bom", "csv.gz", "parquet"])), draw(
        st.sampled_from(["out.csv", "out.parquet", "out.txt", "data.csv"]))


@FUZZ
@given(case=predict_rows())
def test_any_file_to_predict_is_predicted_or_refused_in_one_line(bundle, tmp_path_factory, case):
    from tasks.ops.predict import predict_file

    names, rows, fmt, output = case
    tmp = tmp_path_factory.mktemp("fuzz-predict")
    path = _write(tmp, names, rows, fmt)
    out = tmp / output
    existed = out.exists()
    try:
        n = predict_file(bundle, str(path), str(out), batch_rows=5)
    except InputError as e:
        _one_line(e)
        event("refused")
        assert out.exists() == existed  # nothing written (and an input named like the output left alone)
    else:
        event("accepted")
        assert n.rows == len(rows) and out.is_file()
    assert not list(tmp.glob(".*.tmp"))

"""Bad input to the operations commands, one row per case: exit 2, one line naming the file,
column, key or version, and nothing written (the data root and the output folder unchanged)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from tasks.ops.registry import Registry
from tests.conftest import copy_root


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root in roots:
        if root.exists():
            for p in [root, *root.rglob("*")]:
                st = p.lstat()  # files by size and time; folders by presence (a temp file come and gone is fine)
                out[str(p)] = (st.st_size, st.st_mtime_ns) if p.is_file() else (-1, 0)
    return out


@pytest.fixture
def trained(trained_runs) -> Path:
    """A data root with one registered model (v0001, champion) trained on iris; read-only for the cases."""
    return trained_runs("evaluate.approaches=['features_svc']").data


def _iris_rows(tmp: Path) -> pd.DataFrame:
    from tests.helpers import iris_csv

    return pd.read_csv(iris_csv(tmp / "source.csv")).drop(columns=["species"])


def _csv(tmp: Path, name: str, frame: pd.DataFrame) -> Path:
    frame.to_csv(tmp / name, index=False)
    return tmp / name


def _root_copy(trained: Path, tmp: Path) -> Path:
    return copy_root(trained, tmp)


def _champion(trained: Path, tmp: Path, text: str) -> Path:
    root = _root_copy(trained, tmp)
    (root / "models" / "champion.json").write_text(text)
    return root


def _file_root(tmp: Path) -> Path:
    (tmp / "datafile").write_text("not a folder")
    return tmp / "datafile"


# (setup(trained, tmp) -> argv, needle); every row must exit 2 with one line and write nothing
CASES = {
    "run: data root is a file": (lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(_file_root(d))],
                                 "--data-dir {tmp}/datafile: not a folder"),
    "models: data root is a file": (lambda t, d: ["models", "--data-dir", str(_file_root(d))], "not a folder"),
    "promote: data root is a file": (lambda t, d: ["promote", "v0001", "--data-dir", str(_file_root(d))],
                                     "not a folder"),
    "predict: data root is a file": (lambda t, d: ["predict", "--input", str(_csv(d, "x.csv", _iris_rows(d))),
                                                   "--output", str(d / "o.csv"), "--data-dir", str(_file_root(d))],
                                     "not a folder"),
    "promote: no registry": (lambda t, d: ["promote", "v0001", "--data-dir", str(d / "nothing")],
                             "no model registry"),
    "promote: not a version": (lambda t, d: ["promote", "²", "--data-dir", str(_root_copy(t, d))],
                               "model version '²' not found"),
    "promote: unknown version": (lambda t, d: ["promote", "v0042", "--data-dir", str(_root_copy(t, d))],
                                 "model version 'v0042' not found"),
    "predict: header only": (lambda t, d: ["predict", "--input", str(_csv(d, "h.csv", _iris_rows(d).iloc[:0])),
                                           "--output", str(d / "o.csv"), "--data-dir", str(t)],
                             "h.csv: file has no rows"),
    "predict: text in a feature column": (
        lambda t, d: ["predict", "--input", str(_csv(d, "s.csv", _iris_rows(d).astype({"sepal_width": object})
                                                     .assign(sepal_width=lambda f: f.sepal_width.where(
                                                         f.index != 7, "wide")))),
                      "--output", str(d / "o.csv"), "--data-dir", str(t)],
        "s.csv: column 'sepal_width' is not numeric (first at row 8)"),
    "predict: corrupt parquet body": (lambda t, d: ["predict", "--input", str(_corrupt_parquet(d)), "--output",
                                                    str(d / "o.parquet"), "--data-dir", str(t)],
                                      "bad.parquet: unreadable file"),
    "predict: output is a folder": (lambda t, d: ["predict", "--input", str(_csv(d, "x.csv", _iris_rows(d))),
                                                  "--output", str(_folder(d / "out.csv")), "--data-dir", str(t)],
                                    "out.csv: is a folder"),
    "predict: champion.json truncated": (lambda t, d: _predict_champion(t, d, '{"version": "v00'),
                                         "champion.json: damaged"),
    "predict: champion.json empty": (lambda t, d: _predict_champion(t, d, ""), "champion.json: damaged"),
    "predict: champion.json a list": (lambda t, d: _predict_champion(t, d, "[1, 2]"), "champion.json: damaged"),
    "predict: champion.json no version": (lambda t, d: _predict_champion(t, d, "{}"), "champion.json: damaged"),
    "predict: champion.json a number": (lambda t, d: _predict_champion(t, d, '{"version": 7}'),
                                        "champion.json: damaged"),
    "predict: champion outside the registry": (
        lambda t, d: _predict_champion(t, d, '{"version": "../../other/models/v0001"}'), "champion.json: damaged"),
    "run: data shape does not fit the data": (
        lambda t, d: ["run", "--input", str(_labelled(d)), "--label", "species", "--data-dir", str(d / "fresh"),
                      "--set", "data.shape=[3,3,1]"],
        "data.shape [3, 3, 1] holds 9 values but the data has 4 feature columns"),
    "run: a table given a shape": (
        lambda t, d: ["run", "--input", str(_labelled(d)), "--label", "species", "--data-dir", str(d / "fresh"),
                      "--set", "data.layout='table'", "--set", "data.shape=[2, 2]"],
        "data.shape [2, 2]: data.layout = 'table' takes [4] or no shape"),
    "run: a 2-D CNN on a table": (
        lambda t, d: ["run", "--input", str(_labelled(d)), "--label", "species", "--data-dir", str(d / "fresh"),
                      "--set", "encoder.kind='cnn2d'"],
        "encoder.kind = 'cnn2d' needs image rows, but the data is a table"),
    "run: log file in a missing folder": (
        lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(d / "fresh"), "--log-file", str(d / "no" / "x.log")],
        "--log-file {tmp}/no/x.log: folder {tmp}/no does not exist"),
    "retrain: log file is a folder": (
        lambda t, d: ["retrain", "--dataset", "iris", "--data-dir", str(d / "fresh"), "--log-file", str(_folder(d / "l"))],
        "--log-file {tmp}/l: is a folder"),
    "compare: unknown version": (lambda t, d: ["compare", "1", "v0009", "--data-dir", str(_root_copy(t, d))],
                                 "model version 'v0009' not found"),
    "compare: no registry": (lambda t, d: ["compare", "1", "2", "--data-dir", str(d / "nothing")],
                             "model version '1' not found"),
    "dashboard: port out of range": (lambda t, d: ["dashboard", "--port", "70000"], "--port 70000: not a TCP port"),
    "dashboard: unknown host": (lambda t, d: ["dashboard", "--host", "no-such-host.invalid"],
                                "--host no-such-host.invalid: not an address of this machine"),
    # the wider probe's rows: each was an internal error, a traceback or a silent wrong result
    "predict: parquet with duplicate column names": (
        lambda t, d: ["predict", "--input", str(_duplicate_parquet(d)), "--output", str(d / "o.csv"),
                      "--data-dir", str(t)], "dup.parquet: duplicate column name 'sepal_length'"),
    "predict: a value beyond float32": (
        lambda t, d: ["predict", "--input", str(_csv(d, "big.csv", _iris_rows(d).assign(
            petal_width=lambda f: f.petal_width.where(f.index != 3, 1e39)))), "--output", str(d / "o.csv"),
                      "--data-dir", str(t)], "big.csv: column 'petal_width' has a value beyond float32 (1e+39, row 4)"),
    "predict: output is the input": (
        lambda t, d: ["predict", "--input", str(_csv(d, "x.csv", _iris_rows(d))), "--output", str(d / "x.csv"),
                      "--data-dir", str(t)], "x.csv: is the input file"),
    "predict: output inside the registry": (
        lambda t, d: ["predict", "--input", str(_csv(d, "x.csv", _iris_rows(d))), "--output",
                      str(_root_copy(t, d) / "models" / "p.csv"), "--data-dir", str(d / "data")],
        "inside the data root's models/ folder"),
    "predict: output in a folder that cannot be written": (
        lambda t, d: ["predict", "--input", str(_csv(d, "x.csv", _iris_rows(d))), "--output", "/proc/p.csv",
                      "--data-dir", str(t)], "/proc/p.csv: cannot write in /proc"),
    "run: more local workers than the machine holds": (
        lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(d / "fresh"), "--workers", "100000"],
        "--workers 100000: more than 4 worker processes per core"),
    "dashboard: an address of another machine": (lambda t, d: ["dashboard", "--host", "192.0.2.7", "--port", "4999"],
                                                 "--host 192.0.2.7: not an address of this machine"),
    "run: an empty data root": (lambda t, d: ["run", "--dataset", "iris", "--data-dir", ""], "--data-dir is empty"),
    "run: data root under /proc": (lambda t, d: ["run", "--dataset", "iris", "--data-dir", "/proc/marginflow-data"],
                                   "--data-dir /proc/marginflow-data: cannot write in /proc"),
    "run: data root under a regular file": (
        lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(_file_root(d) / "sub")],
        "--data-dir {tmp}/datafile/sub: {tmp}/datafile is a file, not a folder"),
    "models: data root under a regular file": (lambda t, d: ["models", "--data-dir", str(_file_root(d) / "sub")],
                                               "is a file, not a folder"),
    "run: learning rate inf": (lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(d / "fresh"), "--set",
                                             "encoder.learning_rate=inf"],
                               "config key encoder: learning_rate must be a finite number, got inf"),
    "run: svc.C inf": (lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(d / "fresh"), "--set", "svc.C=inf"],
                       "config key svc: C must be a finite number"),
    "run: svc.C nan": (lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(d / "fresh"), "--set", "svc.C=nan"],
                       "config key svc"),
    "run: a negative encoder seed": (lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(d / "fresh"), "--set",
                                                   "encoder.seed=-1"], "config key encoder.seed"),
    "run: a negative svc seed": (lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(d / "fresh"), "--set",
                                               "svc.seed=-1"], "config key svc.seed"),
    "run: a seed past 2**32 - 1": (lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(d / "fresh"), "--set",
                                                 "data.seed=4294967296"], "config key data.seed"),
    "run: a boolean for a number": (lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(d / "fresh"), "--set",
                                                  "encoder.epochs=true"], "config key encoder.epochs"),
    "run: a number for a boolean": (lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(d / "fresh"), "--set",
                                                  "svc.search=1"], "config key svc.search"),
    "run: one --set value carrying another section": (
        lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(d / "fresh"), "--set",
                      'svc.C=1\n[encoder]\nkind="cnn2d"'], "--set svc.C: the value must be one TOML value"),
    "run: a dask address that is not one": (
        lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(d / "fresh"), "--dask-address", "not an address"],
        "engine.address (--dask-address) must look like tcp://host:port, got 'not an address'"),
    "run: a dask address of an unknown host": (
        lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(d / "fresh"), "--dask-address",
                      "tcp://no-such-host.invalid:8786"], "--dask-address tcp://no-such-host.invalid:8786: unknown host"),
    "run: a dask address that never answers": (
        lambda t, d: ["run", "--dataset", "iris", "--data-dir", str(d / "fresh"), "--set", "engine.connect_timeout_s=1",
                      "--dask-address", "tcp://10.255.255.1:8786"], "--dask-address tcp://10.255.255.1:8786: "),
    "serve: an unknown time zone": (lambda t, d: ["serve", "--cron", "0 3 * * *", "--timezone", "Not/AZone",
                                                  "--dataset", "iris", "--data-dir", str(d / "fresh")],
                                    "--timezone Not/AZone: not a time zone"),
    "run: shifts on a table": (
        lambda t, d: ["run", "--input", str(_labelled(d)), "--label", "species", "--data-dir", str(d / "fresh"),
                      "--set", "encoder.augment_shift=2"],
        "encoder.augment_shift needs encoder.kind = 'cnn1d' or 'cnn2d'"),
    "run: rotations on a table": (
        lambda t, d: ["run", "--input", str(_labelled(d)), "--label", "species", "--data-dir", str(d / "fresh"),
                      "--set", "encoder.augment_rotate=10"],
        "encoder.augment_rotate needs encoder.kind = 'cnn2d' (rows must be images)"),
}


def _duplicate_parquet(tmp: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _iris_rows(tmp)
    table = pa.Table.from_arrays([pa.array(rows[c]) for c in rows.columns] + [pa.array(rows["sepal_length"])],
                                 names=[*rows.columns, "sepal_length"])
    pq.write_table(table, tmp / "dup.parquet")
    return tmp / "dup.parquet"


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _labelled(tmp: Path) -> Path:
    from tests.helpers import iris_csv

    return iris_csv(tmp / "labelled.csv")


def _corrupt_parquet(tmp: Path) -> Path:
    path = tmp / "bad.parquet"
    _iris_rows(tmp).to_parquet(path)
    blob = bytearray(path.read_bytes())
    for i in range(200, 600):  # the column chunks, keeping the footer that names the columns
        blob[i] = 0xAB
    path.write_bytes(bytes(blob))
    return path


def _predict_champion(trained: Path, tmp: Path, text: str) -> list[str]:
    root = _champion(trained, tmp, text)
    return ["predict", "--input", str(_csv(tmp, "x.csv", _iris_rows(tmp))), "--output", str(tmp / "o.csv"),
            "--data-dir", str(root)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_ops_input_exits_2_with_one_line_and_writes_nothing(case, trained, tmp_path, capsys):
    setup, needle = CASES[case]
    argv = setup(trained, tmp_path)
    before = _snapshot(tmp_path, trained)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and needle.format(tmp=tmp_path) in err, err
    assert _snapshot(tmp_path, trained) == before


@pytest.mark.parametrize("text", ['{"version": "v00', "", "[1, 2]", "{}", '{"version": 7}',
                                  '{"version": "../../other/models/v0001"}'])
def test_a_damaged_champion_is_reported_and_promote_repairs_it(trained, tmp_path, capsys, text):
    root = _champion(trained, tmp_path, text)
    assert main(["models", "--data-dir", str(root)]) == 0
    out = capsys.readouterr()
    assert "champion.json: damaged" in out.err and out.err.count("\n") == 1 and "v0001" in out.out
    assert main(["promote", "v0001", "--data-dir", str(root)]) == 0
    assert Registry(root).champion() == "v0001"
    assert json.loads((root / "models" / "champion.json").read_text())["version"] == "v0001"


def test_an_interrupted_first_registration_is_repaired_by_any_registry_command(trained, tmp_path, capsys):
    root = _root_copy(trained, tmp_path)
    (root / "models" / "champion.json").unlink()
    history = root / "models" / "history.jsonl"
    history.write_text("")  # the kill came after the rename, before the history line
    assert main(["models", "--data-dir", str(root)]) == 0
    out = capsys.readouterr()
    assert "repaired" in out.err and "* v0001" in out.out.replace("  ", " ").replace("*  ", "* ")
    events = [json.loads(x)["event"] for x in history.read_text().splitlines()]
    assert events == ["registered", "promoted"]
    assert os.path.exists(root / "models" / "champion.json")


def test_a_csv_with_a_byte_order_mark_is_read_as_its_encoding(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark: the first column keeps its plain name."""
    from tasks.config import DataConfig
    from tasks.ingest import prepare
    from tests.helpers import iris_csv

    path = iris_csv(tmp_path / "plain.csv")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    frame, meta = prepare(DataConfig(dataset=None, input=str(bom), label="species"))
    assert meta["feature_names"][0] == "sepal_length" and len(frame) == 150
    from tasks.ops.predict import _columns

    assert _columns(bom)[0] == "sepal_length"


def test_a_bad_value_deep_in_a_large_source_is_one_line_without_a_traceback(prefect_api, tmp_path):
    """A source too large to read before the run is validated by ingest as it streams: exit 2, the error as
    the last line, no traceback on the console, no artifact."""
    from tests.conftest import run_cli
    from tests.helpers import iris_csv

    frame = pd.read_csv(iris_csv(tmp_path / "iris.csv")).astype({"petal_length": object})
    frame.loc[140, "petal_length"] = "oops"
    frame.to_csv(tmp_path / "deep.csv", index=False)
    proc = run_cli("run", "--input", str(tmp_path / "deep.csv"), "--label", "species", "--data-dir",
                   str(tmp_path / "data"), env={"MARGINFLOW_PREFLIGHT_BYTES": "100"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"marginflow: error: {tmp_path / 'deep.csv'}: column "
                                                    "'petal_length' is not numeric (value 'oops' at row 141)")
    assert not list((tmp_path / "data" / "artifacts").rglob("*.parquet"))

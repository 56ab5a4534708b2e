"""Every bad input: exit code 2, one line naming the file and column, nothing written."""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from tests.conftest import run_cli

GOOD_ROWS = "a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(12))


def _csv(path, text):
    path.write_text(text)
    return path


CASES = {
    "missing file": (lambda d: d / "nope.csv", "nope.csv: file not found"),
    "empty file": (lambda d: _csv(d / "empty.csv", ""), "empty.csv: file is empty"),
    "header only": (lambda d: _csv(d / "head.csv", "a,b,label\n"), "head.csv: file has no rows"),
    "unsupported format": (lambda d: _csv(d / "data.xlsx", "x"), "data.xlsx: unsupported format"),
    "corrupt parquet": (lambda d: _csv(d / "bad.parquet", "this is not parquet"), "bad.parquet: unreadable file"),
    "corrupt gzip": (lambda d: _csv(d / "bad.csv.gz", "not gzip at all"), "bad.csv.gz: unreadable file"),
    "no label column": (lambda d: _csv(d / "nolabel.csv", GOOD_ROWS.replace("label", "target", 1)),
                        "nolabel.csv: no label column 'label'"),
    "non-numeric column": (lambda d: _csv(d / "text.csv", GOOD_ROWS.replace("\n0,", "\nzero,", 1)),
                           "text.csv: column 'a' is not numeric"),
    "NaN": (lambda d: _csv(d / "nan.csv", GOOD_ROWS.replace("\n3,0,1", "\n3,,1", 1)),
            "nan.csv: column 'b' has NaN values (first at row 4)"),
    "infinite": (lambda d: _csv(d / "inf.csv", GOOD_ROWS.replace("\n3,0,1", "\n3,inf,1", 1)),
                 "inf.csv: column 'b' has infinite values (first at row 4)"),
    "one class": (lambda d: _csv(d / "one.csv", "a,label\n" + "1,x\n" * 8), "one.csv: needs at least two classes"),
    "class too small": (lambda d: _csv(d / "small.csv", "a,label\n" + "1,x\n" * 10 + "2,y\n2,y\n"),
                        "small.csv: class 'y' has 2 rows"),
    "duplicate csv column": (lambda d: _csv(d / "dup.csv", "a,a,label\n" + "1,2,0\n1,2,1\n" * 6),
                             "dup.csv: duplicate column name 'a'"),
}


def _dup_parquet(d):
    table = pa.table([pa.array([1.0, 2.0] * 6), pa.array([3.0, 4.0] * 6), pa.array([0, 1] * 6)],
                     names=["a", "a", "label"])
    pq.write_table(table, d / "dup.parquet")
    return d / "dup.parquet"


CASES["duplicate parquet column"] = (_dup_parquet, "dup.parquet: duplicate column name 'a'")


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_exits_2_with_one_line_and_writes_nothing(case, tmp_path, capsys):
    make, needle = CASES[case]
    path = make(tmp_path)
    data = tmp_path / "data"
    code = main(["run", "--input", str(path), "--label", "label", "--data-dir", str(data)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and needle in err, err
    assert not data.exists()


def test_bad_split_column(tmp_path, capsys):
    path = _csv(tmp_path / "split.csv", "a,label,part\n" + "1,0,train\n2,1,train\n" * 4 + "3,0,later\n")
    code = main(["run", "--input", str(path), "--label", "label", "--split-column", "part",
                 "--data-dir", str(tmp_path / "data")])
    assert code == 2
    assert "split.csv: split column 'part' has value 'later'" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--set", "svc.C=-1"], "config key svc.C"),
        (["--set", "svc.kernal=rbf"], "config key svc.kernal: unknown key"),
        (["--input", "x.csv"], "data.input needs data.label"),
        (["--refresh", "bogus"], "--refresh bogus: unknown stage"),
    ],
)
def test_bad_config_exits_2(argv, needle, tmp_path, capsys):
    code = main(["run", "--data-dir", str(tmp_path / "data"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "data").exists()


def test_gzipped_csv_is_read(tmp_path):
    from tasks.config import DataConfig
    from tasks.ingest import prepare

    path = tmp_path / "ok.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write(GOOD_ROWS)
    frame, meta = prepare(DataConfig(dataset=None, input=str(path), label="label"))
    assert meta["feature_names"] == ["a", "b"] and len(frame) == 12


def test_bad_input_through_the_installed_command(tmp_path):
    proc = run_cli("run", "--input", str(tmp_path / "absent.csv"), "--label", "y", "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"marginflow: error: {tmp_path / 'absent.csv'}: file not found"]
    assert proc.stdout == "" and not (tmp_path / "d").exists()


def test_usage_error_exits_2(tmp_path):
    proc = run_cli("stage", "nonsense")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr

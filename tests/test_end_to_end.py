"""End to end: the installed CLI as a user types it, against the session's Prefect server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flows.pipeline import pipeline
from flows.plan import MAIN_PATH, STAGES
from tasks.config import load_config
from tests.conftest import run_cli
from tests.helpers import TINY, without_timings

pytestmark = pytest.mark.slow

# the demo's command with the Keras trainings cut to 400 steps each (the default, 4000, makes this
# module's cold run the suite's slowest fixture; the steps budget itself is tested in tests/test_large.py)
DIGITS = ("--dataset", "digits", "--set", "encoder.max_steps=400", "--set", "rff.max_steps=400",
          "--set", "linear_hinge.max_steps=400")


@pytest.fixture(scope="module")
def digits_dir(prefect_api, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("digits") / "data"


@pytest.fixture(scope="module")
def digits_cold(digits_dir) -> dict:
    proc = run_cli("run", *DIGITS, "--data-dir", str(digits_dir), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_cold_run_on_digits(digits_cold, digits_dir):
    out = digits_cold
    assert [s for s in out["stages"] if "." not in s] == list(STAGES)
    assert "4 encoder_candidates" in out["stages"]["train_encoder.candidates"]["artifact"]  # digits: images
    assert {s["status"] for s in out["stages"].values()} == {"ran"}
    for name, s in out["stages"].items():
        assert "." in name or Path(s["artifact"]).is_dir() and Path(s["artifact"]).is_relative_to(digits_dir)
    m = out["metrics"]
    assert m["source"] == "digits" and m["n_test"] == 450
    assert m["accuracy"] >= 0.95, m["accuracy"]
    assert len(m["confusion"]) == 10 and sum(map(sum, m["confusion"])) == 450
    report = Path(out["report"]).read_text()
    assert "test accuracy" in report and "Confusion matrix" in report


def test_second_run_is_all_cached_and_same_metrics(digits_cold, digits_dir):
    proc = run_cli("run", *DIGITS, "--data-dir", str(digits_dir), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert {s["status"] for s in out["stages"].values()} == {"cached"}
    assert out["metrics"] == digits_cold["metrics"]


def test_human_output_ends_with_the_table_the_metrics_and_the_report_paths(digits_cold, digits_dir):
    proc = run_cli("run", *DIGITS, "--data-dir", str(digits_dir))
    assert proc.returncode == 0
    assert re.search(r"^train_encoder +cached", proc.stdout, re.M)
    assert "| test accuracy |" not in proc.stdout  # the report is a file, not printed
    tail = proc.stdout.strip().splitlines()[-4:]
    assert tail[0].startswith("digits: test accuracy ")
    html, md = Path(tail[1].removeprefix("report: ")), Path(tail[2].strip())
    assert html.name == "report.html" and md.name == "report.md" and html.parent == md.parent
    assert html.is_file() and "| test accuracy |" in md.read_text()
    assert tail[3].startswith("model: v0001")


def test_cache_survives_a_fresh_prefect_home_and_temporary_server(digits_cold, digits_dir, tmp_path):
    """No PREFECT_API_URL and a new PREFECT_HOME: a temporary server, yet every stage hits."""
    env = {"PREFECT_HOME": str(tmp_path / "home"), "PREFECT_API_URL": ""}
    proc = run_cli("run", *DIGITS, "--data-dir", str(digits_dir), "--json", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {s["status"] for s in json.loads(proc.stdout)["stages"].values()} == {"cached"}


def test_stage_command_reruns_only_that_stage(digits_cold, digits_dir):
    proc = run_cli("stage", "train_svc", *DIGITS, "--data-dir", str(digits_dir), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert {k: v["status"] for k, v in out["stages"].items()} == {
        **dict.fromkeys((s.name for s in MAIN_PATH), "cached"), "train_encoder.candidates": "cached", "train_svc": "ran"}
    assert out["metrics"] is None


def test_two_runs_from_empty_data_dirs_give_identical_metrics(prefect_api, tmp_path):
    config = load_config(None, [*TINY, "encoder.dropout=0.2"], {"data.dataset": "wine"})
    files = []
    for name in ("a", "b"):
        result = pipeline(config=config, data_dir=str(tmp_path / name))
        files.append(json.loads((Path(result.stages["evaluate"].artifact) / "metrics.json").read_text()))
    assert without_timings(files[0]) == without_timings(files[1])
    assert files[0]["approaches"]["features_svc"]["accuracy"] > 0.5

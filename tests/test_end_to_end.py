"""End to end: the installed CLI as a user types it, against the session's Prefect server (the commands whose
subject is not the process itself run in the test process, `tests.helpers.run_main`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flows.pipeline import pipeline
from flows.plan import MAIN_PATH, STAGES
from tasks.config_text import load_config
from tests.conftest import run_cli
from tests.helpers import TINY, run_main, without_timings

pytestmark = pytest.mark.slow

# the demo's command with the Keras trainings cut to 150 steps each (the default, 4000, makes this
# module's cold run the suite's slowest fixture; the steps budget itself is tested in tests/test_large.py)
DIGITS = ("--dataset", "digits", "--set", "encoder.max_steps=150", "--set", "rff_svm.max_steps=150",
          "--set", "linear_hinge.max_steps=150")


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
    # digits: images, 3 networks and identity, successive halving over 3 rungs
    assert out["stages"]["train_encoder.candidates"]["artifact"].startswith("10 encoder_candidate tasks for 4 candidates")
    assert {s["status"] for s in out["stages"].values()} == {"ran"}
    for name, s in out["stages"].items():
        assert "." in name or Path(s["artifact"]).is_dir() and Path(s["artifact"]).is_relative_to(digits_dir)
    m = out["metrics"]
    assert m["source"] == "digits" and m["n_test"] == 450
    assert m["accuracy"] >= 0.95, m["accuracy"]
    assert len(m["confusion"]) == 10 and sum(map(sum, m["confusion"])) == 450
    report = Path(out["report"]).read_text()
    assert "test accuracy" in report and "Confusion matrix" in report


def test_the_report_ranks_the_approaches_with_intervals_and_says_what_was_bundled(digits_cold):
    from tasks.core.metrics import wilson

    m = digits_cold["metrics"]
    ranked = m["ranking"]
    assert [r["rank"] for r in ranked] == list(range(1, len(m["approaches"]) + 1))
    assert [r["accuracy"] for r in ranked] == sorted((r["accuracy"] for r in ranked), reverse=True)
    for r in ranked:
        assert (r["low"], r["high"]) == wilson(round(r["accuracy"] * m["n_test"]), m["n_test"])
        assert r["low"] < r["accuracy"] < r["high"] or r["accuracy"] == 1.0
    report = Path(digits_cold["report"]).read_text()
    section = report[report.index("## Which approach"):report.index("## Encoder")]
    best = ranked[0]
    assert f"Best on these 450 test rows: **{best['approach']}**, {100 * best['accuracy']:.1f} %" in section
    assert "Bundled and registered: **features_svc**" in section and "main path by design" in section
    for r in ranked:  # one row per approach, with its interval
        assert re.search(rf"^\| {r['rank']} \| {r['approach']} \| {r['accuracy']:.4f} \| {r['low']:.4f} – "
                         rf"{r['high']:.4f} \|", section, re.M), r
    html = Path(digits_cold["report_html"]).read_text()
    prose = re.sub(r"<code>.*?</code>|<pre>.*?</pre>|<img [^>]*>", "", html, flags=re.S)
    assert "**" not in prose and "`" not in prose and "<strong>features_svc</strong>" in html
    assert "<table>" in html and "text-align:right" in html


_PROBE = """
import json, sys
from tasks.ops import bundle
loads = []
original = bundle.Bundle.__init__
def counted(self, *a, **k):
    loads.append(str(a[0]) if a else "?")
    original(self, *a, **k)
bundle.Bundle.__init__ = counted
from flows.cli import main
code = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"keras", "jax", "skops", "tensorflow", "torch"})
print("PROBE " + json.dumps({"code": code, "heavy": heavy, "bundle_loads": loads}))
"""


def test_second_run_is_all_cached_imports_no_model_library_and_loads_no_bundle(digits_cold, digits_dir):
    """The same command again: every stage cached, the same metrics, and with the model already registered no
    Keras, JAX or skops import and no bundle load."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _PROBE, "run", *DIGITS, "--data-dir", str(digits_dir), "--json"],
                          capture_output=True, text=True, timeout=300)
    probe = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("PROBE "))[6:])
    assert probe == {"code": 0, "heavy": [], "bundle_loads": []}, (probe, proc.stderr[-2000:])
    out = json.loads(proc.stdout[:proc.stdout.index("PROBE ")])
    assert {s["status"] for s in out["stages"].values()} == {"cached"}, {k: s for k, s in out["stages"].items()
                                                                         if s["status"] != "cached"}
    assert out["metrics"] == digits_cold["metrics"] and out["model"] == "v0001"


def test_an_svc_change_reruns_only_the_stages_that_read_svc(digits_cold, digits_dir):
    """With the default encoder.kind = "auto": the search scores candidates with its own SVC, so svc.C
    reruns exactly the two SVCs (and their solver decisions), evaluate and bundle (the README's list); no Keras
    fit."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _PROBE, "run", *DIGITS, "--set", "svc.C=3", "--data-dir",
                           str(digits_dir), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout[:proc.stdout.index("PROBE ")])
    ran = {name for name, s in out["stages"].items() if s["status"] == "ran"}
    assert ran == {"train_svc", "raw_svc", "evaluate", "bundle", "train_svc.solver", "raw_svc.solver"}, ran
    probe = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("PROBE "))[6:])
    # the new version's encoder is byte-identical to a registered one: its SVC loads, Keras is not imported
    assert probe["heavy"] == ["skops"] and len(probe["bundle_loads"]) == 1, probe


def test_human_output_ends_with_the_table_the_metrics_and_the_report_paths(digits_cold, digits_dir):
    proc = run_main("run", *DIGITS, "--data-dir", str(digits_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^train_encoder +cached", proc.stdout, re.M)
    assert "| test accuracy |" not in proc.stdout  # the report is a file, not printed
    tail = proc.stdout.strip().splitlines()[-4:]
    assert tail[0].startswith("digits: test accuracy ")
    html, md = Path(tail[1].removeprefix("report: ")), Path(tail[2].strip())
    assert html.name == "report.html" and md.name == "report.md" and html.parent == md.parent
    assert html.is_file() and "| test accuracy |" in md.read_text()
    assert tail[3].startswith("model: v0001 (already registered")


def test_cache_survives_a_fresh_prefect_home_and_temporary_server(digits_cold, digits_dir, prefect_home):
    """No PREFECT_API_URL and a new PREFECT_HOME (no record of any run): a temporary server, yet every stage hits."""
    env = {"PREFECT_HOME": str(prefect_home), "PREFECT_API_URL": ""}
    proc = run_cli("run", *DIGITS, "--data-dir", str(digits_dir), "--json", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {s["status"] for s in json.loads(proc.stdout)["stages"].values()} == {"cached"}


def test_stage_command_reruns_only_that_stage(digits_cold, digits_dir):
    proc = run_main("stage", "train_svc", *DIGITS, "--data-dir", str(digits_dir), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert {k: v["status"] for k, v in out["stages"].items()} == {
        **dict.fromkeys((s.name for s in MAIN_PATH), "cached"), "train_encoder.candidates": "cached", "train_encoder.scores": "cached",
        "train_svc.solver": "cached", "train_svc": "ran"}
    assert out["metrics"] is None


def test_two_runs_from_empty_data_dirs_give_identical_metrics(prefect_api, tmp_path):
    config = load_config(None, [*TINY, "encoder.dropout=0.2"], {"data.dataset": "wine"})
    files, models = [], []
    for name in ("a", "b"):
        result = pipeline(config=config, data_dir=str(tmp_path / name))
        files.append(json.loads((Path(result.stages["evaluate"].artifact) / "metrics.json").read_text()))
        models.append(json.loads((Path(result.stages["bundle"].artifact) / "manifest.json").read_text()))
    assert without_timings(files[0]) == without_timings(files[1])
    # the same model, byte for byte (Keras's save times and object ids fixed): the same registry identity
    assert models[0]["files"]["encoder.keras"] == models[1]["files"]["encoder.keras"]
    assert files[0]["approaches"]["features_svc"]["accuracy"] > 0.5

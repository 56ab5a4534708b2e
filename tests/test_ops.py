"""Operations: the bundle, the registry, retrain's promotion rule, and predict."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from flows.pipeline import pipeline
from flows.retrain import retrain
from tasks.errors import InputError
from tasks.ops.bundle import Bundle, BundleError
from tasks.ops.promotion import decide
from tasks.ops.registry import Registry
from tests.conftest import ROOT, copy_root
from tests.helpers import TINY, run_main, tiny_config

GOOD = ["evaluate.approaches=['features_svc']"]
BAD = [*GOOD, "svc.C=0.001", "encoder.epochs=1"]  # a tiny C: the SVC predicts nearly one class


@pytest.fixture
def csv(trained_runs):
    """The shared run's iris CSV (read-only): a run on a copy of its root with it is all cache hits."""
    return trained_runs(*GOOD).csv


@pytest.fixture
def trained(trained_runs, tmp_path):
    """A copy of a root with one tiny run on iris (v0001 registered); returns (data root, the run's result, whose
    artifacts are the shared root's: read them, do not change them)."""
    shared = trained_runs(*GOOD)
    return copy_root(shared.data, tmp_path), shared.result


# ---------------------------------------------------------------- bundle


def test_bundle_predicts_what_the_pipeline_predicted(trained, csv):
    data, result = trained
    assert result.model == "v0001" and result.model_is_new
    model = Bundle.load(Registry(data).path("champion"))
    frame = pd.read_csv(csv)
    dataset = pd.read_parquet(result.artifacts["ingest"].file("dataset.parquet"))
    test = (dataset["__split__"] == "test").to_numpy()
    expected = json.loads(result.artifacts["train_svc"].file("predictions.json").read_text())["test"]
    features = frame.drop(columns=["species"])
    assert model.predict_index(features[test]).tolist() == expected
    assert list(model.classes_) == ["setosa", "versicolor", "virginica"]
    assert set(model.predict(features)) <= set(model.classes_)
    assert model.decision_function(features).shape == (150, 3)
    assert model.score(features[test], frame["species"][test]) == pytest.approx(model.metrics["accuracy"])
    with pytest.raises(InputError, match="unexpected column 'species'"):
        model.predict(frame)


def test_tampered_or_incomplete_bundle_is_refused(trained, tmp_path):
    data, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(Registry(data).path("v0001"), copy)
    for f in copy.iterdir():
        f.chmod(0o644)
    blob = bytearray((copy / "svc.skops").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (copy / "svc.skops").write_bytes(bytes(blob))
    with pytest.raises(BundleError, match=r"svc.skops: SHA-256 differs"):
        Bundle.load(copy)
    (copy / "encoder.keras").unlink()
    with pytest.raises(BundleError, match="encoder.keras: incomplete bundle"):
        Bundle.load(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        Bundle.load(copy)


def test_registered_versions_are_read_only_and_reruns_do_not_duplicate(trained, csv):
    data, result = trained
    files = list(Registry(data).path("v0001").iterdir())
    assert files and all(not (f.stat().st_mode & 0o222) for f in files)
    again = pipeline(config=tiny_config(csv, *GOOD), data_dir=str(data))
    assert (again.model, again.model_is_new) == ("v0001", False)
    assert Registry(data).names() == ["v0001"]


# ---------------------------------------------------------------- promotion


def test_decide_uses_the_tolerance():
    assert decide(0.90, 0.90, 0.0) and decide(0.91, 0.90, 0.0)
    assert not decide(0.89, 0.90, 0.0)
    assert decide(0.89, 0.90, 0.02) and not decide(0.87, 0.90, 0.02)


def test_first_is_promoted_better_is_promoted_worse_is_not(prefect_api, csv, tmp_path):
    data = str(tmp_path / "data")
    first = retrain(config=tiny_config(csv, *BAD), data_dir=data)
    assert first.promoted and first.champion_after == first.challenger == "v0001"
    better = retrain(config=tiny_config(csv, *GOOD), data_dir=data)
    assert better.promoted and better.champion_after == "v0002"
    assert better.challenger_score > better.champion_score
    worse = retrain(config=tiny_config(csv, *BAD, "svc.seed=1"), data_dir=data)
    assert not worse.promoted and worse.challenger == "v0003" and worse.champion_after == "v0002"
    assert worse.challenger_score < worse.champion_score
    same = retrain(config=tiny_config(csv, *GOOD), data_dir=data)
    assert not same.promoted and same.challenger == "v0002" and "Nothing new" in same.reason
    stored = Registry(data).version("v0002").metrics  # nothing new: the champion's stored scores, not n/a
    assert same.challenger_score == same.champion_score == stored["accuracy"] and same.n_rows == stored["n_test"] > 0
    events = [e["event"] for e in Registry(data).history()]
    assert events.count("decision") == 4 and events.count("promoted") == 2


def test_landing_folder_is_combined_in_name_order(prefect_api, csv, tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    frame = pd.read_csv(csv)
    frame.iloc[75:].to_parquet(landing / "b.parquet", index=False)
    frame.iloc[:75].to_csv(landing / "a.csv", index=False)
    (landing / "notes.txt").write_text("ignored")
    from tasks.config import DataConfig
    from tasks.ingest import prepare
    from tasks.schema import LABEL, SPLIT

    data = DataConfig(dataset=None, input=str(landing), label="species")
    combined, meta = prepare(data)
    features = [c for c in frame.columns if c != "species"]
    np.testing.assert_array_equal(combined[features].to_numpy(), frame[features].to_numpy(np.float32))
    assert np.asarray(meta["classes"], dtype=object)[combined[LABEL]].tolist() == frame["species"].tolist()
    assert len(combined[SPLIT]) == len(frame)
    frame.iloc[:3, :2].to_csv(landing / "c.csv", index=False)
    with pytest.raises(ValueError, match="c.csv: columns differ"):
        prepare(data)


def test_concurrent_promotions_leave_a_consistent_registry(trained, csv):
    data, _ = trained
    pipeline(config=tiny_config(csv, *GOOD, "svc.C=1.0"), data_dir=str(data))
    assert Registry(data).names() == ["v0001", "v0002"]
    script = (
        "import sys; from tasks.ops.registry import Registry\n"
        "r = Registry(sys.argv[1])\n"
        "for i in range(25): r.promote(sys.argv[2])\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(data), v], cwd=ROOT) for v in ("v0001", "v0002")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    registry = Registry(data)
    assert registry.champion() in ("v0001", "v0002")
    history = registry.history()
    promotions = [e for e in history if e["event"] == "promoted"]
    assert len(promotions) == 1 + 50  # the first model, then every promotion of both processes
    assert not list((data / "models").glob(".champion-*"))


# ---------------------------------------------------------------- predict (CLI)


def test_predict_reproduces_evaluate_and_refuses_bad_columns(trained, csv, tmp_path):
    data, result = trained
    out = tmp_path / "pred.csv"
    proc = run_main("predict", "--input", str(csv), "--output", str(out), "--data-dir", str(data), "--batch-rows", "40")
    assert proc.returncode == 0, proc.stderr
    pred = pd.read_csv(out)
    assert list(pred.columns) == ["prediction", "score_setosa", "score_versicolor", "score_virginica"]
    dataset = pd.read_parquet(result.artifacts["ingest"].file("dataset.parquet"))
    test = (dataset["__split__"] == "test").to_numpy()
    classes = np.array(["setosa", "versicolor", "virginica"])
    expected = classes[json.loads(result.artifacts["train_svc"].file("predictions.json").read_text())["test"]]
    assert pred["prediction"][test].tolist() == expected.tolist()

    frame = pd.read_csv(csv)
    frame.drop(columns=["petal_width"]).to_csv(tmp_path / "missing.csv", index=False)
    frame.assign(extra=1.0).to_parquet(tmp_path / "extra.parquet", index=False)
    for bad, needle in [("missing.csv", "missing column 'petal_width'"), ("extra.parquet", "unexpected column 'extra'")]:
        target = tmp_path / f"{bad}.out.parquet"
        proc = run_main("predict", "--input", str(tmp_path / bad), "--output", str(target), "--data-dir", str(data))
        assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not target.exists() and not list(tmp_path.glob(".*.tmp"))
    proc = run_main("predict", "--input", str(csv), "--output", str(out), "--data-dir", str(data), "--model", "v0042")
    assert proc.returncode == 2 and "model version 'v0042' not found" in proc.stderr


def test_predict_scores_a_named_label_column_and_passes_an_id_through(trained, csv, tmp_path):
    data, result = trained
    frame = pd.read_csv(csv)
    frame.insert(0, "row_id", [f"r{i}" for i in range(len(frame))])
    frame = frame.rename(columns={"species": "truth"})
    frame.loc[3, "truth"] = None  # a row without a label is predicted, not scored
    frame.to_csv(tmp_path / "labelled.csv", index=False)
    out = tmp_path / "pred.parquet"
    proc = run_main("predict", "--input", str(tmp_path / "labelled.csv"), "--output", str(out), "--data-dir",
                   str(data), "--label", "truth", "--id", "row_id", "--batch-rows", "40")
    assert proc.returncode == 0, proc.stderr
    pred = pd.read_parquet(out)
    assert list(pred.columns[:2]) == ["row_id", "prediction"] and pred["row_id"].tolist() == frame["row_id"].tolist()
    known = frame["truth"].notna()
    accuracy = float((pred["prediction"][known] == frame["truth"][known]).mean())
    assert f"accuracy {accuracy:.4f} on the {int(known.sum())} rows with a label in 'truth'" in proc.stdout
    # without --label, a column the model does not know is refused, naming it; a named column must exist
    plain = run_main("predict", "--input", str(tmp_path / "labelled.csv"), "--output", str(tmp_path / "p.csv"),
                    "--data-dir", str(data), "--id", "row_id")
    assert plain.returncode == 2 and "unexpected column 'truth'" in plain.stderr
    absent = run_main("predict", "--input", str(csv), "--output", str(tmp_path / "p.csv"), "--data-dir", str(data),
                     "--id", "key")
    assert absent.returncode == 2 and "no column 'key' (--id)" in absent.stderr and not (tmp_path / "p.csv").exists()


def test_stage_then_run_registers_no_copy_and_compare_says_what_differs(trained, csv):
    data, result = trained
    args = ("--input", str(csv), "--label", "species", "--data-dir", str(data),
            *(a for kv in [*TINY, *GOOD] for a in ("--set", kv)))
    assert run_main("stage", "features_svc", *args, "--quiet").returncode == 0
    again = run_main("run", *args, "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["model"] == result.model and [v.version for v in Registry(data).versions()] == [
        result.model]
    other = run_main("run", *args, "--set", "svc.C=3", "--json")
    assert json.loads(other.stdout)["model"] == "v0002"
    text = run_main("compare", "1", "2", "--data-dir", str(data)).stdout
    assert "data: the same" in text and "code: the same" in text and "config: 1 key(s) differ" in text
    assert "model files that differ: svc.skops" in text and "different data or code" not in text
    decided = run_main("retrain", *args, "--set", "svc.C=3")  # v0002 against the champion, v0001: both scores shown
    assert decided.returncode == 0, decided.stderr[-2000:]
    scores = re.search(r"^accuracy on 38 test rows: challenger (\d\.\d{4}), champion (\d\.\d{4})", decided.stdout, re.M)
    assert scores, decided.stdout
    assert f"Challenger accuracy {scores[1]} vs champion {scores[2]}" in decided.stdout


def test_an_altered_version_is_flagged_and_cannot_be_promoted(trained, csv):
    data, _ = trained
    pipeline(config=tiny_config(csv, *GOOD, "svc.C=1.0"), data_dir=str(data))
    target = Registry(data).path("v0002") / "labels.json"
    target.chmod(0o644)
    target.write_text(target.read_text().replace("setosa", "SETOSA"))
    flagged = {v.version: v.problem for v in Registry(data).versions()}
    assert flagged["v0001"] is None and "labels.json: SHA-256 differs" in flagged["v0002"]
    with pytest.raises(BundleError, match="labels.json: SHA-256 differs"):
        Registry(data).promote("v0002")
    assert Registry(data).champion() == "v0001"
    proc = run_main("models", "--data-dir", str(data))
    assert proc.returncode == 0 and "REFUSED" in proc.stdout


def test_concurrent_registrations_give_distinct_versions_and_no_duplicates(trained, csv, tmp_path):
    data, first = trained
    second = pipeline(config=tiny_config(csv, *GOOD, "svc.C=1.0"), data_dir=str(data))
    bundles = [str(first.artifacts["bundle"].dir), str(second.artifacts["bundle"].dir)]
    script = (
        "import sys; from tasks.ops.registry import Registry\n"
        "for b in sys.argv[2:]: Registry(sys.argv[1]).register(b)\n"
    )
    fresh = tmp_path / "fresh"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(fresh), *order], cwd=ROOT)
             for order in (bundles, bundles[::-1])]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    registry = Registry(fresh)
    assert registry.names() == ["v0001", "v0002"]  # each bundle once, whichever process came first
    assert {v.problem for v in registry.versions()} == {None}
    assert registry.champion() == "v0001"
    assert not list((fresh / "models" / ".staging").iterdir())


def test_retrain_decides_against_the_champion_of_the_moment_and_never_overwrites_a_promotion(
        prefect_api, csv, tmp_path, monkeypatch):
    """A version promoted by hand while a retrain runs is the one its challenger must beat; and a promotion made
    while the retrain scores is not overwritten: the decision is made again against it."""
    from flows.pipeline import pipeline
    from tasks.config import RetrainConfig
    from tasks.ops import promotion

    data = str(tmp_path / "data")
    bad = pipeline(config=tiny_config(csv, *BAD), data_dir=data)  # v0001, champion
    good = pipeline(config=tiny_config(csv, *GOOD), data_dir=data)  # v0002
    third = pipeline(config=tiny_config(csv, *BAD, "svc.seed=1"), data_dir=data)  # v0003, the challenger
    assert (bad.model, good.model, third.model) == ("v0001", "v0002", "v0003")
    Registry(data).promote("v0002")  # by hand, after the retrain "began" with v0001 as champion
    decision = promotion.choose(third.artifacts["ingest"], "v0003", "v0001", RetrainConfig(), data)
    assert decision.champion_before == "v0002" and not decision.promoted and decision.champion_after == "v0002"
    assert "promoted meanwhile" in decision.reason

    scored = promotion.score_models
    calls = []

    def score_while_someone_promotes(dataset, models, metric):
        calls.append(dict(models))
        if len(calls) == 1:  # another process promotes v0001 while this decision scores against v0002
            Registry(data).promote("v0001")
        return scored(dataset, models, metric)

    monkeypatch.setattr(promotion, "score_models", score_while_someone_promotes)
    Registry(data).promote("v0002")
    decision = promotion.choose(good.artifacts["ingest"], "v0003", "v0002", RetrainConfig(tolerance=1.0), data)
    assert len(calls) == 2 and calls[1]["champion"].endswith("v0001")  # decided again against the new champion
    assert decision.champion_before == "v0001" and decision.promoted and Registry(data).champion() == "v0003"
    history = [e for e in Registry(data).history() if e.get("event") == "promoted"]
    assert [e["version"] for e in history[-2:]] == ["v0001", "v0003"] and history[-1]["previous"] == "v0001"

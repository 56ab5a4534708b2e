"""Flow tests: the cache through real Prefect flow runs against the session's server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.pipeline import pipeline
from flows.plan import MAIN_PATH, STAGES
from tasks.catalog import NAMES
from tests.conftest import copy_root
from tests.helpers import iris_csv, statuses, tiny_config, without_timings

SOLVER_ROWS = ("train_svc.solver", "raw_svc.solver")  # each SVC stage's choose_solver task
ALL_RAN = dict.fromkeys((*STAGES, *SOLVER_ROWS), "ran")
ALL_CACHED = dict.fromkeys((*STAGES, *SOLVER_ROWS), "cached")


def _metrics(result) -> dict:
    return json.loads((Path(result.stages["evaluate"].artifact) / "metrics.json").read_text())


@pytest.fixture
def csv(trained_runs):
    """The shared complete run's iris CSV (read-only)."""
    return trained_runs().csv


@pytest.fixture
def first(trained_runs, tmp_path):
    """A copy of a complete tiny run on iris (every approach; the session's shared one); returns (config,
    data_dir, the result of running it again on the copy: every stage a cache hit, artifacts in the copy)."""
    shared = trained_runs()
    assert statuses(shared.result) == ALL_RAN  # the shared run was a cold one
    data = copy_root(shared.data, tmp_path)
    config = tiny_config(shared.csv)
    result = pipeline(config=config, data_dir=str(data))
    assert statuses(result) == ALL_CACHED
    return config, data, result


def test_second_identical_run_is_all_cached(first, trained_runs):
    config, data, result = first  # the copy's run was the second identical one: all cached (asserted in first)
    again = pipeline(config=config, data_dir=str(data))
    assert statuses(again) == ALL_CACHED
    assert again.artifacts == result.artifacts
    assert {k: a.sha256 for k, a in result.artifacts.items()} == {
        k: a.sha256 for k, a in trained_runs().result.artifacts.items()}


def test_changing_svc_C_reruns_only_svc_and_evaluate(first, csv):
    _, data, _ = first
    result = pipeline(config=tiny_config(csv, "svc.C=0.5"), data_dir=str(data))
    # raw_svc is the same SVC settings on the raw features, so it follows svc.C too; so do their solver
    # decisions (C is part of the exact fit's cost)
    assert statuses(result) == {**ALL_CACHED, "train_svc": "ran", "raw_svc": "ran", "evaluate": "ran", "bundle": "ran",
                                **dict.fromkeys(SOLVER_ROWS, "ran")}


def test_changing_one_byte_of_the_input_reruns_everything(prefect_api, tmp_path):
    csv, data = iris_csv(tmp_path / "iris.csv"), tmp_path / "data"  # its own CSV: the shared one is read-only
    config = tiny_config(csv)
    assert statuses(pipeline(config=config, data_dir=str(data))) == ALL_RAN
    text = csv.read_text()
    csv.write_text(text.replace("5.1,3.5,1.4,0.2", "5.2,3.5,1.4,0.2", 1))
    assert csv.read_text() != text
    assert statuses(pipeline(config=config, data_dir=str(data))) == ALL_RAN


def test_deleted_artifact_file_makes_its_stage_recompute(first):
    config, data, result = first
    svc_file = Path(result.stages["train_svc"].artifact) / "svc.skops"
    svc_file.unlink()
    again = pipeline(config=config, data_dir=str(data))
    assert statuses(again)["train_svc"] == "ran"
    assert all(statuses(again)[s] == "cached" for s in STAGES if s not in ("train_svc", "evaluate", "bundle"))
    assert again.artifacts["train_svc"].is_intact()
    assert without_timings(_metrics(again))["accuracy"] == without_timings(_metrics(result))["accuracy"]


def test_altered_artifact_file_makes_its_stage_recompute(first):
    config, data, result = first
    features = Path(result.stages["extract_features"].artifact) / "features.parquet"
    features.write_bytes(features.read_bytes()[:-10] + b"0123456789")
    again = pipeline(config=config, data_dir=str(data))
    assert statuses(again)["extract_features"] == "ran"
    assert again.artifacts["extract_features"].is_intact()


def test_refresh_choose_solver_decides_again_and_nothing_else_reruns(first):
    """--refresh choose_solver (a task inside the SVC stages): the decisions run again; the same decision
    writes the same artifact, so the fits are cache hits."""
    config, data, _ = first
    result = pipeline(config=config, data_dir=str(data), refresh=["choose_solver"])
    assert statuses(result) == {**ALL_CACHED, **dict.fromkeys(SOLVER_ROWS, "ran")}
    with pytest.raises(ValueError, match="unknown stage or task 'choose_solvers'"):
        pipeline.fn(config=config, data_dir=str(data), refresh=["choose_solvers"])


def test_refresh_forces_recomputation(first):
    config, data, _ = first
    assert statuses(pipeline(config=config, data_dir=str(data), refresh=["all"])) == ALL_RAN
    only_svc = statuses(pipeline(config=config, data_dir=str(data), refresh=["svc"]))
    upstream = [s for s in STAGES if s not in ("evaluate", "bundle")]
    assert {s: only_svc[s] for s in upstream} == {**dict.fromkeys(upstream, "cached"), "train_svc": "ran"}


def test_stage_reruns_one_stage_from_existing_artifacts(first):
    config, data, _ = first
    result = pipeline(config=config, data_dir=str(data), refresh=["train_svc"], until="train_svc")
    assert statuses(result) == {**dict.fromkeys((s.name for s in MAIN_PATH), "cached"), "train_svc.solver": "cached",
                                "train_svc": "ran"}


def test_side_approach_stage_runs_alone(first):
    config, data, _ = first
    result = pipeline(config=config, data_dir=str(data), refresh=["rff_svm"], until="rff_svm")
    assert statuses(result) == {"ingest": "cached", "scale": "cached", "rff_svm": "ran"}


def test_every_approach_is_scored(first):
    metrics = _metrics(first[2])
    assert set(metrics["approaches"]) == set(NAMES)
    for a in metrics["approaches"].values():
        assert 0.0 <= a["accuracy"] <= 1.0 and a["objective"] and a["fit_seconds"] >= 0
        assert sum(map(sum, a["confusion"])) == metrics["n_test"]
    report = Path(first[2].stages["evaluate"].artifact)
    html = (report / "report.html").read_text()
    # the bar chart, one grid of confusion matrices, training curves of the encoder and each Keras approach
    curves = {p.name for p in report.glob("curves_*.png")}
    assert curves == {"curves_encoder.png", "curves_linear_hinge.png", "curves_deep_hinge.png", "curves_rff_svm.png"}
    assert html.count("data:image/png;base64,") == len(list(report.glob("*.png"))) == 1 + 1 + 4
    for name in ("linear_hinge", "rff_svm", "deep_hinge"):  # every Keras approach is drawn with its validation curve
        history = json.loads((Path(first[2].stages[name].artifact) / "history.json").read_text())
        assert len(history["val_loss"]) == len(history["loss"]) > 0, name
    timing = {n: a["inputs_seconds"] for n, a in metrics["approaches"].items()}
    assert timing["features_svc"] > 0 and timing["deep_hinge"] > 0  # the encoder (and extraction) they needed
    assert timing["raw_svc"] == timing["knn"] == timing["linear_hinge"] == 0


def test_selected_approaches_only(trained_runs):
    result = trained_runs("evaluate.approaches=['features_svc', 'raw_svc']").result
    assert set(result.stages) == {*(s.name for s in MAIN_PATH), "train_svc", "raw_svc", "evaluate", "bundle",
                                  *SOLVER_ROWS}
    assert set(_metrics(result)["approaches"]) == {"raw_svc", "features_svc"}


def test_string_labels_are_reported_by_name(first):
    metrics = _metrics(first[2])
    assert metrics["classes"] == ["setosa", "versicolor", "virginica"]
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["n_test"] == 38


SEARCH = ["svc.search=true", "svc.search_C=[0.1, 10.0]", "svc.search_gamma_factor=[0.5, 2.0]", "svc.search_folds=3",
          "evaluate.approaches=['features_svc', 'raw_svc']"]


def test_svc_search_maps_the_grid_records_the_table_and_caches(trained_runs, csv, tmp_path):
    data = copy_root(trained_runs().data, tmp_path)  # a finished run: the encoder and the stages before it hit
    result = pipeline(config=tiny_config(csv, *SEARCH), data_dir=str(data))
    assert statuses(result)["train_svc.cv"] == statuses(result)["raw_svc.cv"] == "ran"
    assert statuses(result)["train_encoder"] == "cached"
    for stage in ("train_svc", "raw_svc"):
        search = json.loads((Path(result.stages[stage].artifact) / "search.json").read_text())
        table = search["table"]
        assert len(table) == 4 and search["folds"] == 3
        assert {(r["C"], r["gamma_factor"]) for r in table} == {(0.1, 0.5), (0.1, 2.0), (10.0, 0.5), (10.0, 2.0)}
        assert search["chosen"]["mean"] == max(r["mean"] for r in table) == table[0]["mean"]
        fitted = json.loads((Path(result.stages[stage].artifact) / "config.json").read_text())
        assert (fitted["C"], fitted["gamma"]) == (search["chosen"]["C"], search["chosen"]["gamma"])
    again = pipeline(config=tiny_config(csv, *SEARCH), data_dir=str(data))
    assert set(statuses(again).values()) == {"cached"}
    grown = pipeline(config=tiny_config(csv, *SEARCH, "svc.search_C=[0.1, 10.0, 100.0]"), data_dir=str(data))
    # the four old points come from the cache; the two new ones and the SVCs after them run
    assert statuses(grown)["train_svc.cv"] == "ran" and statuses(grown)["ingest"] == "cached"


def test_search_never_reads_the_test_rows(tmp_path):
    from tasks.core.svm import CVPoint
    from tasks.schema import LABEL, SPLIT
    from tasks.store.artifacts import ArtifactWriter
    from tasks.store.tables import TableWriter
    from tasks.svc_cv import svc_cv

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    frame[LABEL] = np.arange(60) % 2
    frame[SPLIT] = np.where(np.arange(60) < 40, "train", "test")
    def write(frame, w):
        codes = np.where(frame[SPLIT] == "train", 0, 2)
        with TableWriter(w.path("scaled.parquet"), ["a", "b"], 100) as out:
            out.write(frame[["a", "b"]].to_numpy(), frame[LABEL].to_numpy(), codes)
        w.write_json("meta.json", {"classes": [0, 1], "split_sizes": {"train": 40, "val": 0, "test": 20}})

    with ArtifactWriter(str(tmp_path), "scaled", {"t": 1}) as w:
        write(frame, w)
    point = CVPoint(kernel="rbf", C=1.0, gamma_factor=1.0, class_weight=None, folds=4, metric="accuracy", seed=0)
    before = json.loads((svc_cv.fn(w.ref, point, root=str(tmp_path)).file("cv.json")).read_text())
    frame.loc[frame[SPLIT] == "test", ["a", "b"]] = 99.0  # poison the test rows
    with ArtifactWriter(str(tmp_path), "scaled", {"t": 2}) as w2:
        write(frame, w2)
    after = json.loads((svc_cv.fn(w2.ref, point, root=str(tmp_path)).file("cv.json")).read_text())
    assert before["scores"] == after["scores"] and len(before["scores"]) == 4


def test_default_config_learns_from_a_few_dozen_rows(prefect_api, tmp_path):
    """Shipped defaults (no TINY overrides) on 45 rows of iris: every approach beats chance clearly."""
    from tasks.config_text import load_config

    small = pd.read_csv(iris_csv(tmp_path / "all.csv")).groupby("species").head(15)
    small.to_csv(tmp_path / "small.csv", index=False)
    config = load_config(None, [], {"data.input": str(tmp_path / "small.csv"), "data.label": "species",
                                    "data.dataset": None})
    metrics = _metrics(pipeline(config=config, data_dir=str(tmp_path / "d")))
    assert metrics["n_test"] == 12
    scores = {name: a["accuracy"] for name, a in metrics["approaches"].items()}
    assert min(scores.values()) >= 0.75, scores

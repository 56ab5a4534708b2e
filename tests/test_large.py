"""Large data: batched ingest, partial_fit scaling, the approx solver, and rows held at once (#9)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.config import DataConfig, ScaleConfig, SVCConfig
from tasks.errors import InputError
from tasks.ingest import describe_source, ingest
from tasks.scale import scale
from tasks.schema import LABEL, SPLIT
from tasks.store.tables import HELD, read_table


def _table(n: int, seed: int = 0, d: int = 6) -> pd.DataFrame:
    """Rows of three separable classes with string labels, in label order (a sorted file)."""
    rng = np.random.default_rng(seed)
    y = np.sort(rng.integers(0, 3, n))
    X = rng.normal(0.0, 1.0, (n, d)) + 3.0 * y[:, None] * (np.arange(d) % 2 == 0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(d)])
    frame["kind"] = np.asarray(["ash", "birch", "cedar"])[y]
    return frame


def _ingest(path, root, batch_rows: int, **extra):
    data = DataConfig(dataset=None, input=str(path), label="kind", batch_rows=batch_rows, **extra)
    return ingest.fn(describe_source(data), data, root=str(root))


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_batched_ingest_equals_reading_whole(suffix, tmp_path):
    frame = _table(1000)
    path = tmp_path / f"rows{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path, index=False, row_group_size=300)
    else:
        frame.to_csv(path, index=False)
    whole = _ingest(path, tmp_path / "whole", batch_rows=100_000)
    batched = _ingest(path, tmp_path / "batched", batch_rows=64)
    a, meta_a = read_table(whole)
    b, meta_b = read_table(batched)
    pd.testing.assert_frame_equal(a, b)  # the same rows, values, labels, split and dtypes
    assert all(str(t) == "float32" for t in b.drop(columns=[LABEL, SPLIT]).dtypes)
    assert meta_b["batch_rows"] == 64 and {**meta_a, "batch_rows": 64} == meta_b
    np.testing.assert_array_equal(b.drop(columns=[LABEL, SPLIT]).to_numpy(), frame.drop(columns="kind").to_numpy(np.float32))
    assert np.asarray(meta_b["classes"])[b[LABEL]].tolist() == frame["kind"].tolist()
    # the split is stratified: every class in every split, in the configured shares
    counts = pd.crosstab(b[LABEL], b[SPLIT])
    assert (counts > 0).all().all() and abs(meta_b["split_sizes"]["test"] - 250) <= 3
    # written in row groups of batch_rows // 16 rows
    import pyarrow.parquet as pq

    assert pq.ParquetFile(batched.file("dataset.parquet")).metadata.num_row_groups >= 1000 // 64


@pytest.mark.parametrize("arrow_threads", [None, 1])  # on one thread pyarrow names the row itself
@pytest.mark.parametrize(("bad", "needle"), [
    ("nan", "column 'x3' has NaN values (first at row 1000)"),
    ("text", "column 'x3' is not numeric (value 'oops' at row 1000)"),
])
def test_bad_value_in_the_last_batch_names_its_row_and_writes_nothing(bad, needle, arrow_threads, tmp_path):
    import pyarrow as pa

    frame = _table(1000).astype({"x3": object})
    frame.loc[999, "x3"] = "" if bad == "nan" else "oops"
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    root = tmp_path / "data"
    cores = pa.cpu_count()
    if arrow_threads:  # as on a one-core machine or under OMP_NUM_THREADS=1
        pa.set_cpu_count(arrow_threads)
    try:
        with pytest.raises(InputError) as e:
            _ingest(path, root, batch_rows=64)
    finally:
        pa.set_cpu_count(cores)
    assert str(e.value) == f"{path}: {needle}"
    leftovers = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    assert not [p for p in leftovers if "dataset" in str(p) or p.suffix == ".parquet"], leftovers


def test_partial_fit_scaling_equals_whole_data_scaling(tmp_path):
    from sklearn.preprocessing import StandardScaler

    frame = _table(3000, d=10)
    frame.iloc[:, :10] *= np.linspace(1, 1e3, 10)  # columns of very different scale
    path = tmp_path / "rows.parquet"
    frame.to_parquet(path, index=False)
    dataset = _ingest(path, tmp_path, batch_rows=100)
    scaled = scale.fn(dataset, ScaleConfig(), root=str(tmp_path))
    raw, _ = read_table(dataset)
    train = raw[raw[SPLIT] == "train"].drop(columns=[LABEL, SPLIT]).to_numpy(np.float64)
    whole = StandardScaler().fit(train)
    stored = json.loads(scaled.file("scaler.json").read_text())
    np.testing.assert_allclose(stored["mean"], whole.mean_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stored["scale"], whole.scale_, rtol=1e-9)
    out, _ = read_table(scaled)
    expected = whole.transform(raw.drop(columns=[LABEL, SPLIT]).to_numpy(np.float64)).astype(np.float32)
    np.testing.assert_allclose(out.drop(columns=[LABEL, SPLIT]).to_numpy(), expected, rtol=1e-5, atol=1e-5)
    assert out[SPLIT].tolist() == raw[SPLIT].tolist() and out[LABEL].tolist() == raw[LABEL].tolist()


def test_approx_and_exact_agree_on_a_separable_problem():
    from sklearn.datasets import make_blobs

    from tasks.core.svm import fit_any

    X, y = make_blobs(n_samples=1200, centers=3, n_features=8, cluster_std=2.0, random_state=0)
    train, test = slice(0, 800), slice(800, None)
    config = SVCConfig()
    exact = fit_any(X[train], y[train], config, "exact", 3)
    approx = fit_any(X[train], y[train], config, "approx", 3)
    agree = np.mean(exact.predict(X[test]) == approx.predict(X[test]))
    assert agree >= 0.95, agree
    assert approx.decision_function(X[test]).shape == (400, 3)
    # class weights: "balanced" resolves from the counts and still fits
    weighted = fit_any(X[train], y[train], config.model_copy(update={"class_weight": "balanced"}), "approx", 3)
    assert np.mean(weighted.predict(X[test]) == y[test]) >= 0.9


def test_the_search_scores_points_with_the_solver_the_fit_uses(tmp_path):
    from tasks.choose_solver import choose_solver
    from tasks.core.svm import grid
    from tasks.raw_svc import raw_svc
    from tasks.store.outputs import read_model_outputs
    from tasks.svc_cv import svc_cv

    path = tmp_path / "rows.parquet"
    _table(600).to_parquet(path, index=False)
    scaled = scale.fn(_ingest(path, tmp_path, batch_rows=100), ScaleConfig(), root=str(tmp_path))
    config = SVCConfig(search=True, search_C=[0.01, 10.0], search_gamma_factor=[1.0], search_folds=3,
                       solver="approx", approx_components=64)
    decided = choose_solver.fn(scaled, config, root=str(tmp_path))
    cv = [svc_cv.fn(scaled, point, root=str(tmp_path), solver=decided) for point in grid(config)]
    rows = [json.loads(ref.file("cv.json").read_text()) for ref in cv]
    assert {r["solver"] for r in rows} == {"approx"} and all(len(r["scores"]) == 3 for r in rows)
    outputs = read_model_outputs(raw_svc.fn(scaled, config, root=str(tmp_path), cv=cv, solver=decided))
    best = max(rows, key=lambda r: r["mean"])
    assert outputs["solver"]["solver"] == "approx" and outputs["search"]["chosen"]["C"] == best["C"]


def test_rows_held_at_once_never_exceed_the_batch(prefect_api, tmp_path):
    """The whole pipeline on a file 15 x the batch: no array read from a table holds more than batch_rows rows."""
    from flows.pipeline import pipeline
    from tasks.config_text import load_config

    path = tmp_path / "rows.parquet"
    _table(3000, d=16).to_parquet(path, index=False)
    batch = 200
    config = load_config(None, [
        f"data.batch_rows={batch}", "encoder.kind='mlp'", "encoder.hidden=[16]", "encoder.max_steps=60",
        "linear_hinge.max_steps=30", "rff_svm.max_steps=30", "rff_svm.n_components=64", "svc.solver='approx'",
        "svc.approx_components=50",
    ], {"data.input": str(path), "data.label": "kind", "data.dataset": None})
    HELD.reset()
    result = pipeline(config=config, data_dir=str(tmp_path / "data"))
    assert 0 < HELD.peak <= batch, HELD.peak
    assert result.stages["knn"].status == "skipped"  # it holds every training row
    metrics = json.loads(result.artifacts["evaluate"].file("metrics.json").read_text())
    assert metrics["approaches"]["features_svc"]["solver"]["solver"] == "approx"
    assert "knn" in metrics["skipped"] and metrics["accuracy"] > 0.9
    budget = metrics["approaches"]["deep_hinge"]["budget"]
    assert budget["steps"] <= 60 and "streamed" in budget["how"]
    # the bundle records the solver; a bundle written before solvers were recorded still loads, and says
    # what its svc.skops holds
    import shutil

    from tasks.ops.bundle import Bundle
    from tasks.ops.predict import predict_file

    model = Bundle.load(result.artifacts["bundle"].dir)
    assert model.solver == "approx" and model.manifest["solver"]["solver"] == "approx"
    out = tmp_path / "predictions.parquet"
    assert predict_file(model, str(path), str(out), batch_rows=batch).rows == 3000
    predicted = pd.read_parquet(out)
    assert set(predicted.columns) == {"prediction", "score_ash", "score_birch", "score_cedar"}
    assert np.mean(predicted["prediction"] == pd.read_parquet(path)["kind"]) > 0.9
    old = tmp_path / "old-bundle"
    shutil.copytree(result.artifacts["bundle"].dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["solver"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert Bundle.load(old).solver == "approx"

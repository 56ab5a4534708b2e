"""The approx solver (`tasks.core.nystroem`) and ``svc.solver = auto``'s decision by cost."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.config import SVCConfig
from tasks.core import nystroem


def _rbf(A: np.ndarray, B: np.ndarray, gamma: float) -> np.ndarray:
    return np.exp(-gamma * ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1))


def _problem(n=300, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(0, 1, (n, d)) + 1.5 * np.eye(k, d)[y]
    return X.astype(np.float32), y


@pytest.mark.parametrize("k", [2, 3])
def test_closed_form_fit_matches_a_direct_dense_solve(k):
    X, y = _problem(k=k)
    gamma, C = 0.2, 1.0
    centres = nystroem.pick_centres(X, 40, seed=0)
    kmap = nystroem.KernelMap("rbf", centres, gamma)
    model, sweep = nystroem.fit(kmap, nystroem.moments([(X, y)], kmap, k), k, C)
    assert sweep == [] and model.lambda_ == 1.0 / C
    # the same objective written out: min |[K 1] theta - Y|^2 + lambda alpha' K_MM alpha
    c64 = centres.astype(np.float64)
    K = np.hstack([_rbf(X.astype(np.float64), c64, gamma), np.ones((len(y), 1))])
    Kmm = _rbf(c64, c64, gamma)
    P = np.zeros((41, 41))
    e = np.linalg.eigvalsh(Kmm)
    assert e.min() > e.max() * nystroem.RANK_TOL  # no direction left out: the two objectives are the same
    P[:40, :40] = Kmm
    theta = np.linalg.solve(K.T @ K + P / C, K.T @ nystroem.targets(y, k).astype(np.float64))
    Xt, _ = _problem(n=100, k=k, seed=1)
    direct = _rbf(Xt.astype(np.float64), c64, gamma) @ theta[:40] + theta[40]
    ours = model.decision_function(Xt)
    np.testing.assert_allclose(ours, direct[:, 0] if k == 2 else direct, rtol=1e-4, atol=1e-4)
    assert np.array_equal(model.predict(Xt), (direct[:, 0] > 0).astype(int) if k == 2 else direct.argmax(1))


def test_chunked_and_partitioned_sums_equal_whole_matrix_sums(monkeypatch):
    X, y = _problem(n=500)
    kmap = nystroem.KernelMap("rbf", nystroem.pick_centres(X, 30, seed=0), 0.2)
    weights = {0: 2.0, 1: 0.5, 2: 1.0}
    K = np.hstack([kmap(X).astype(np.float64), np.ones((500, 1))])
    w = np.asarray([weights[c] for c in y])[:, None]
    Y = nystroem.targets(y, 3).astype(np.float64)
    monkeypatch.setattr(nystroem, "CHUNK_ROWS", 37)
    chunked = nystroem.moments([(X[:200], y[:200]), (X[200:], y[200:])], kmap, 3, weights)
    parts = nystroem.moments([(X[:123], y[:123])], kmap, 3, weights) + nystroem.moments([(X[123:], y[123:])], kmap,
                                                                                        3, weights)
    for m in (chunked, parts):
        assert m.rows == 500
        np.testing.assert_allclose(m.A, K.T @ (w * K), rtol=1e-5)
        np.testing.assert_allclose(m.b, K.T @ (w * Y), rtol=1e-5, atol=1e-4)
    assert nystroem.moments([], kmap, 3) is None


def test_linear_kernel_is_ridge_regression():
    from sklearn.linear_model import Ridge

    X, y = _problem(n=400)
    kmap = nystroem.KernelMap("linear", None)
    model, _ = nystroem.fit(kmap, nystroem.moments([(X, y)], kmap, 3), 3, C=0.5)
    ridge = Ridge(alpha=2.0).fit(X.astype(np.float64), nystroem.targets(y, 3))
    np.testing.assert_allclose(model.decision_function(X), ridge.predict(X.astype(np.float64)), rtol=1e-4, atol=1e-4)


def test_approx_agrees_with_exact_on_concentric_circles():
    from sklearn.datasets import make_circles

    from tasks.core.svm import fit_any

    X, y = make_circles(n_samples=3000, noise=0.12, factor=0.5, random_state=0)
    train, test = slice(0, 2000), slice(2000, None)
    config = SVCConfig()
    exact = fit_any(X[train], y[train], config, "exact", 2)
    approx = fit_any(X[train], y[train], config, "approx", 2)
    assert approx.n_components == nystroem.components_for(2000) == 671
    agree = np.mean(exact.predict(X[test]) == approx.predict(X[test]))
    assert agree >= 0.97, agree
    assert np.mean(approx.predict(X[test]) == y[test]) >= 0.85
    assert approx.decision_function(X[test]).shape == (1000,)


def test_components_rule():
    assert nystroem.components_for(100) == 100  # never more than the rows
    assert nystroem.components_for(2_000) == 671
    assert nystroem.components_for(20_000) == 2121
    assert nystroem.components_for(10**6) == nystroem.MAX_COMPONENTS
    assert nystroem.components_for(10**6, 300) == 300


def test_sweep_picks_lambda_on_validation_rows_and_the_model_reloads(tmp_path):
    from tasks.core.svm import fit_approx, load_svc, save_svc

    X, y = _problem(n=1200, d=8)
    model, sweep = fit_approx(X[:900], y[:900], SVCConfig(C=10.0), 3, val=(X[900:1050], y[900:1050]))
    assert [r["factor"] for r in sweep] == list(nystroem.SWEEP)
    best = max(r["val_accuracy"] for r in sweep)
    chosen = next(r for r in sweep if r["lambda"] == model.lambda_)
    assert chosen["val_accuracy"] == best
    save_svc(model, tmp_path / "a.skops")
    again = load_svc(tmp_path / "a.skops")
    np.testing.assert_array_equal(again.decision_function(X[1050:]), model.decision_function(X[1050:]))
    save_svc(again, tmp_path / "b.skops")
    assert (tmp_path / "a.skops").read_bytes() == (tmp_path / "b.skops").read_bytes()


# ------------------------------------------------------------------ auto decides by cost


def test_auto_decides_by_the_predicted_exact_fit_time():
    from tasks.core.svm import PROBE_ROWS, resolve_solver

    X, y = _problem(n=6000, d=4)
    quick = resolve_solver(SVCConfig(auto_budget_s=1e6), 50_000, 4, (X, y))
    slow = resolve_solver(SVCConfig(auto_budget_s=1e-6), 50_000, 4, (X, y))
    assert quick["solver"] == "exact" and slow["solver"] == "approx"
    for decision in (quick, slow):
        p = decision["probe_seconds"]
        assert p["fits"][0]["rows"] == 1000 and 1.0 <= p["floor"] <= p["exponent"] <= 3.0
        assert decision["predicted_seconds"] > 0 and "predicted" in decision["reason"]
    assert "within" in quick["reason"] and "beyond" in slow["reason"]
    assert resolve_solver(SVCConfig(), PROBE_ROWS, 4)["solver"] == "exact"  # small: no prediction needed
    big = resolve_solver(SVCConfig(auto_exact_max_mb=1.0), 50_000, 4)  # 1.5 MB of rows: too big, no prediction
    assert big["solver"] == "approx" and "auto_exact_max_mb" in big["reason"]
    assert resolve_solver(SVCConfig(solver="exact"), 10**7, 784)["solver"] == "exact"


def test_choose_solver_stage_records_the_decision_and_the_fit_the_actual_time(tmp_path):
    from tasks.choose_solver import choose_solver
    from tasks.config import DataConfig, ScaleConfig
    from tasks.ingest import describe_source, ingest
    from tasks.raw_svc import raw_svc
    from tasks.scale import scale
    from tasks.store.outputs import read_model_outputs

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 9000)
    frame = pd.DataFrame(rng.normal(0, 1, (9000, 4)) + y[:, None], columns=list("abcd"))
    frame["kind"] = np.asarray(["ash", "birch", "cedar"])[y]
    path = tmp_path / "rows.parquet"
    frame.to_parquet(path, index=False)
    data = DataConfig(dataset=None, input=str(path), label="kind", batch_rows=3000)
    scaled = scale.fn(ingest.fn(describe_source(data), data, root=str(tmp_path)), ScaleConfig(), root=str(tmp_path))
    chosen = {}
    for budget in (1e-6, 1e6):
        config = SVCConfig(auto_budget_s=budget, approx_components=200)
        decision = choose_solver.fn(scaled, config, root=str(tmp_path))
        record = json.loads(decision.file("solver.json").read_text())
        outputs = read_model_outputs(raw_svc.fn(scaled, config, root=str(tmp_path), solver=decision))
        assert outputs["solver"]["solver"] == record["solver"] and outputs["solver"]["fit_seconds"] > 0
        assert outputs["solver"]["predicted_seconds"] == record["predicted_seconds"]
        chosen[budget] = record["solver"]
        if record["solver"] == "approx":  # streamed in partitions, lambda from the validation rows
            assert outputs["solver"]["partitions"] > 1 and len(outputs["solver"]["sweep"]) == len(nystroem.SWEEP)
    assert chosen == {1e-6: "approx", 1e6: "exact"}


def test_retired_keys_are_read_with_a_notice(caplog):
    from tasks.config_text import load_config

    with caplog.at_level("WARNING", logger="marginflow"):
        config = load_config(None, ["svc.approx_above=100", "svc.approx_epochs=3"])
    assert config.svc == SVCConfig()
    assert sum("no longer used" in r.getMessage() for r in caplog.records) == 2

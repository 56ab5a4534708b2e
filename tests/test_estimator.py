"""MarginClassifier: scikit-learn's own checks, the same answers as the pipeline, search, clone,
persistence, and the bundle round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from tasks.core.estimator import TRUSTED_TYPES, MarginClassifier, load, save
from tests.conftest import ROOT

TINY_ENCODER = {"hidden": [8], "epochs": 3, "batch_size": 16, "dropout": 0.0, "patience": 2}

EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data":
        "sample_weight reaches the SVC, not the encoder's training (nor the validation split), "
        "so weighting a row by 2 is not the same as repeating it",
}


@parametrize_with_checks([MarginClassifier(encoder=TINY_ENCODER)],
                         expected_failed_checks=lambda est: EXPECTED_FAILURES, xfail_strict=True)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def _iris():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True, as_frame=True)
    return X, np.asarray(["setosa", "versicolor", "virginica"], dtype=object)[y]


def test_raw_svc_is_scaled_svc_exactly():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    X, y = _iris()
    ours = MarginClassifier("raw_svc", svc={"C": 3.0}).fit(X, y)
    theirs = make_pipeline(StandardScaler(), SVC(C=3.0, random_state=0)).fit(X, y)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    np.testing.assert_allclose(ours.decision_function(X), theirs.decision_function(X), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("approach", ["features_svc", "raw_svc", "linear_hinge", "deep_hinge", "rff_svm"])
def test_every_approach_learns_separable_classes(approach):
    rng = np.random.default_rng(0)
    y = np.arange(150) % 3
    X = rng.normal(scale=0.3, size=(150, 3)) + 3.0 * np.eye(3)[y]
    labels = np.asarray(["a", "b", "c"], dtype=object)[y]
    model = MarginClassifier(approach, encoder={"hidden": [16], "epochs": 30, "dropout": 0.0},
                             linear_hinge={"epochs": 30}, rff_svm={"epochs": 30, "n_components": 128}).fit(X, labels)
    assert model.score(X, labels) >= 0.95
    assert model.decision_function(X).shape == (150, 3)
    assert not hasattr(model, "predict_proba")


def test_same_predictions_as_the_pipeline(prefect_api, csv, tmp_path):
    from flows.pipeline import pipeline
    from tasks.schema import LABEL, SPLIT
    from tasks.store.tables import read_table
    from tests.helpers import TINY, tiny_config

    config = tiny_config(csv, "evaluate.approaches=['features_svc', 'raw_svc']")
    result = pipeline(config=config, data_dir=str(tmp_path / "data"))
    frame, meta = read_table(result.artifacts["ingest"])
    rows = {s: frame[frame[SPLIT] == s] for s in ("train", "val", "test")}
    names = meta["feature_names"]
    sections = {s: getattr(config, s).model_dump() for s in ("scale", "encoder", "features", "svc")}
    assert any(x.startswith("encoder.") for x in TINY)
    for approach, stage in (("features_svc", "train_svc"), ("raw_svc", "raw_svc")):
        model = MarginClassifier(approach, **sections)
        model.fit(rows["train"][names], rows["train"][LABEL], validation_data=(rows["val"][names], rows["val"][LABEL]))
        expected = json.loads(result.artifacts[stage].file("predictions.json").read_text())["test"]
        assert model.predict(rows["test"][names]).tolist() == expected, approach


def test_grid_search_over_svc_and_encoder_and_clone_refit():
    from sklearn.model_selection import GridSearchCV

    X, y = _iris()
    base = MarginClassifier(encoder={"hidden": [8], "epochs": 3, "dropout": 0.0})
    search = GridSearchCV(base, {"svc__C": [0.5, 5.0], "encoder__hidden": [[4], [8]]}, cv=2).fit(X, y)
    assert search.best_params_["svc__C"] in (0.5, 5.0) and search.best_params_["encoder__hidden"] in ([4], [8])
    assert len(search.cv_results_["mean_test_score"]) == 4 and search.n_splits_ == 2
    best = search.best_estimator_
    assert best.svc["C"] == search.best_params_["svc__C"] and best.encoder["epochs"] == 3
    again = clone(best).fit(X, y)
    np.testing.assert_array_equal(again.predict(X), best.predict(X))
    np.testing.assert_array_equal(again.decision_function(X), best.decision_function(X))
    assert base.get_params()["svc__kernel"] == "auto"
    with pytest.raises(ValueError, match="svc__nope"):
        clone(base).set_params(svc__nope=1)


def test_invalid_settings_are_refused_at_fit_naming_the_key():
    X, y = _iris()
    with pytest.raises(ValueError, match="svc.C"):
        MarginClassifier("raw_svc", svc={"C": -1}).fit(X, y)
    with pytest.raises(ValueError, match="approach must be one of"):
        MarginClassifier("kernel_magic").fit(X, y)
    with pytest.raises(ValueError, match="sample_weight is supported by the SVC approaches"):
        MarginClassifier("linear_hinge").fit(X, y, sample_weight=np.ones(len(y)))


def test_skops_round_trip_trusts_only_the_listed_types(tmp_path):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    X, y = _iris()
    model = MarginClassifier(encoder=TINY_ENCODER).fit(X, y)
    save(model, tmp_path / "m.skops")
    assert set(sio.get_untrusted_types(file=tmp_path / "m.skops")) <= set(TRUSTED_TYPES)
    again = load(tmp_path / "m.skops")
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    sio.dump(LogisticRegression().fit(X, y), tmp_path / "other.skops")
    with pytest.raises(ValueError, match="refusing to load untrusted type sklearn.linear_model"):
        load(tmp_path / "other.skops")


def test_a_bundle_becomes_an_estimator_and_back(prefect_api, csv, tmp_path):
    from flows.pipeline import pipeline
    from tasks.ops.bundle import Bundle
    from tasks.ops.convert import export_bundle, to_estimator
    from tasks.ops.registry import Registry
    from tests.helpers import tiny_config

    data = tmp_path / "data"
    pipeline(config=tiny_config(csv, "evaluate.approaches=['features_svc']"), data_dir=str(data))
    bundle = Bundle.load(Registry(data).path("champion"))
    X = pd.read_csv(csv).drop(columns=["species"])
    model = to_estimator(bundle)
    np.testing.assert_array_equal(model.predict(X), bundle.predict(X))
    np.testing.assert_allclose(model.decision_function(X), bundle.decision_function(X), rtol=1e-6)
    assert model.get_params()["svc__C"] == bundle.config["svc"]["C"]
    exported = export_bundle(model, tmp_path / "exported")
    back = Bundle.load(exported)
    np.testing.assert_array_equal(back.predict(X), bundle.predict(X))
    assert json.loads((exported / "config.json").read_text())["svc"] == bundle.config["svc"]
    with pytest.raises(ValueError, match="already exists"):
        export_bundle(model, exported)


def test_the_readme_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- example: MarginClassifier")
    code = readme[readme.index("```python", start) + len("```python"): readme.index("```", readme.index("```python", start) + 9)]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    assert Path(tmp_path / "model.skops").is_file()

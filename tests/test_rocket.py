"""MiniRocket: the Keras layer against the numpy transform, its place in a bundle, and the search's cheap
candidates first (``encoder.kind = "rocket"``, `tasks.core.rocket`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")

from tasks.core import rocket  # noqa: E402


@pytest.mark.parametrize(("length", "channels"), [(40, 1), (23, 3), (5, 2)])
def test_the_layer_equals_the_numpy_transform_exactly(length, channels):
    """Integer-valued series make every convolution exact in float32, so the two must agree bit for bit: in
    an eager call and compiled, as predict runs it. A 5-step series (shorter than a kernel) is zero-padded."""
    import keras

    from tasks.core.layers import MiniRocket

    rng = np.random.default_rng(0)
    X = rng.integers(-3, 4, size=(12, length * channels)).astype("float32")
    params = rocket.fit(X, length, channels, num_features=840, seed=1)
    assert params.n_features == 840 and params.biases.shape == (840,)  # 84 kernels x 10 features, any channels
    assert params.length == max(length, 9) and params.dilations.max() <= max((params.length - 1) // 8, 1)
    fresh = rng.integers(-3, 4, size=(70, length * channels)).astype("float32")  # rows it was not fitted on
    expected = rocket.transform(fresh, params, length)
    assert 0.0 <= expected.min() and expected.max() <= 1.0 and 0.0 < expected.mean() < 1.0
    layer = MiniRocket(length, channels, params.dilations.tolist(), params.per_dilation.tolist(),
                       params.channels.tolist(), biases=params.biases)
    assert np.array_equal(np.asarray(layer(fresh)), expected)
    inputs = keras.Input((length * channels,))
    model = keras.Model(inputs, layer(inputs))
    assert np.array_equal(model.predict(fresh, batch_size=32, verbose=0), expected)
    # without a Keras model: one compiled program per shape for the process, the last batch padded
    assert np.array_equal(layer.features(fresh), expected)
    assert np.array_equal(layer.features(fresh, max_floats=84 * 9 * 13 * max(length, 9) * channels), expected)


def test_the_feature_count_is_84_times_the_features_per_kernel_for_any_channels():
    for length, channels in ((150, 1), (100, 6), (9, 1), (3, 4)):
        X = np.random.default_rng(1).normal(size=(8, length * channels))
        assert rocket.fit(X, length, channels, seed=0).n_features == 84 * (rocket.DEFAULT_FEATURES // 84) == 9996
    dilations, per = rocket.fit_dilations(150)
    assert dilations[0] == 1 and dilations[-1] == 18 and per.sum() == 119  # up to (150 - 1) / 8
    assert rocket.fit_dilations(5)[0].tolist() == [1]  # padded to 9 steps: dilation 1 only


def test_the_layer_undoes_the_scaling_and_the_multichannel_draws_are_seeded():
    from tasks.core.layers import MiniRocket

    rng = np.random.default_rng(2)
    X = rng.normal(size=(20, 30 * 2)).astype("float32")
    mean, scale = X.mean(axis=0), X.std(axis=0)
    params = rocket.fit(X, 30, 2, num_features=168, seed=3)
    assert np.array_equal(rocket.fit(X, 30, 2, num_features=168, seed=3).biases, params.biases)
    assert not np.array_equal(rocket.fit(X, 30, 2, num_features=168, seed=4).channels, params.channels)
    assert set(params.channels.sum(axis=1)) <= {1.0, 2.0}  # 1 or 2 of 2 channels per kernel
    layer = MiniRocket(30, 2, params.dilations.tolist(), params.per_dilation.tolist(), params.channels.tolist(),
                       [mean.tolist(), scale.tolist()], biases=params.biases)
    scaled = (X - mean) / scale
    np.testing.assert_allclose(np.asarray(layer(scaled)), rocket.transform(X, params, 30), atol=0.05)


def _sequences(path: Path, n: int = 90, length: int = 30, seed: int = 0) -> Path:
    """Two classes of noisy series: a bump early (class a) or late (class b), at a jittered position."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(scale=0.3, size=(n, length))
    for i, label in enumerate(y):
        at = (4 if label == 0 else 18) + int(rng.integers(0, 5))
        X[i, at:at + 4] += 3.0
    frame = pd.DataFrame(X, columns=[f"t{i}" for i in range(length)])
    frame["label"] = np.where(y == 0, "a", "b")
    frame.to_csv(path, index=False)
    return path


def _config(csv: Path, *extra: str):
    from tasks.config_text import load_config

    return load_config(None, ["evaluate.approaches=['features_svc', 'raw_svc']", "encoder.rocket_features=168",
                              "encoder.search_folds=2", "encoder.search_repeats=1", *extra],
                       {"data.input": str(csv), "data.label": "label", "data.dataset": None})


def test_a_rocket_encoder_is_bundled_and_predicts_the_same_after_reload(prefect_api, tmp_path):
    from flows.pipeline import pipeline
    from tasks.core.networks import check_keras_layers, load_encoder
    from tasks.ops.bundle import Bundle
    from tasks.ops.registry import Registry

    csv = _sequences(tmp_path / "bumps.csv")
    result = pipeline(config=_config(csv, "encoder.kind='rocket'"), data_dir=str(tmp_path / "d"))
    encoder = result.artifacts["train_encoder"]
    check_keras_layers(encoder.file("encoder.keras"))  # the bundle's allow-list takes the layer
    layer = load_encoder(encoder.file("encoder.keras")).get_layer("features")
    biases = np.asarray(layer.biases)
    assert biases.shape == (168,) and np.unique(biases).size > 10  # fitted, and saved with the model
    model = Bundle.load(Registry(tmp_path / "d").path("champion"))
    assert np.array_equal(np.asarray(model.encoder.get_layer("features").biases), biases)
    frame = pd.read_csv(csv)
    dataset = pd.read_parquet(result.artifacts["ingest"].file("dataset.parquet"))
    test = (dataset["__split__"] == "test").to_numpy()
    stored = json.loads(result.artifacts["train_svc"].file("predictions.json").read_text())["test"]
    predicted = model.predict(frame.drop(columns=["label"])[test])
    assert predicted.tolist() == np.asarray(["a", "b"])[stored].tolist()
    metrics = json.loads((Path(result.stages["evaluate"].artifact) / "metrics.json").read_text())
    assert metrics["approaches"]["features_svc"]["accuracy"] >= 0.9  # the bumps are plain to see
    # svc.kernel = "auto": linear on MiniRocket's features, rbf on the raw inputs; the fitted model says so too
    fitted = {name: json.loads(result.artifacts[name].file("config.json").read_text())["kernel"]
              for name in ("train_svc", "raw_svc")}
    assert fitted == {"train_svc": "linear", "raw_svc": "rbf"}
    assert model.svc.kernel == "linear"


def test_the_search_trains_no_network_when_a_cheap_candidate_already_wins(prefect_api, tmp_path):
    """Few rows (below encoder.search_networks_from): identity and rocket decide and no network trains. Then,
    with networks allowed at any size, a clear case where a cheap candidate scores 100 %: none trains either."""
    from flows.pipeline import pipeline

    csv = _sequences(tmp_path / "bumps.csv")
    cases = [((), "training rows < encoder.search_networks_from = 100"),
             (("encoder.search_networks_from=0",), "scored 100 % on validation")]
    for extra, why in cases:
        root = tmp_path / f"d{len(extra)}"
        result = pipeline(config=_config(csv, "encoder.kind='auto'", *extra), data_dir=str(root),
                          until="train_encoder")
        rows = json.loads((Path(result.stages["train_encoder"].artifact) / "config.json").read_text())["selection"]
        assert [r["candidate"] for r in rows] == ["cnn1d-wide-shift", "cnn1d-norm-gap", "cnn1d-norm-gap-shift",
                                                  "rocket", "identity"]
        networks, cheap = rows[:3], rows[3:]
        assert all(r["score"] is None and why in r["skipped"] for r in networks), networks
        assert all(r["score"] is not None for r in cheap) and any(r["chosen"] for r in cheap)
        assert "3 not run" in result.stages["train_encoder.candidates"].artifact
        if extra:
            assert max(r["score"] for r in cheap) == 1.0


def test_auto_kernel_is_linear_on_rocket_features_only():
    from tasks.config import SVCConfig
    from tasks.core.svm import fit_svc, resolve_kernel

    auto = SVCConfig()
    assert auto.kernel == "auto"
    assert resolve_kernel(auto, "rocket").kernel == "linear"
    assert [resolve_kernel(auto, kind).kernel for kind in ("cnn1d", "identity", "mlp", None)] == ["rbf"] * 4
    chosen = SVCConfig(kernel="poly")
    assert resolve_kernel(chosen, "rocket") is chosen  # a kernel the user names is kept
    X = np.random.default_rng(0).normal(size=(20, 3))
    assert fit_svc(X, (X[:, 0] > 0).astype(int), auto).kernel == "rbf"  # unresolved: as for raw inputs

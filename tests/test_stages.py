"""Unit tests of each stage's pure logic on tiny data whose answers are known by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.config import DataConfig, EncoderConfig, ScaleConfig, SVCConfig
from tasks.core.dataset import encode_labels, split_rows
from tasks.core.metrics import score
from tasks.core.report import render_markdown
from tasks.core.scaling import apply_scaler, fit_scaler
from tasks.errors import InputError
from tasks.ingest import scan_source as scan
from tasks.schema import LABEL, SPLIT

# ---------------------------------------------------------------- ingest


def test_string_labels_map_to_sorted_indices():
    codes, classes = encode_labels(np.array(["b", "a", "c", "a"], dtype=object), "f.csv")
    assert classes == ["a", "b", "c"]
    assert codes.tolist() == [1, 0, 2, 0]


def test_int_labels_keep_their_values():
    codes, classes = encode_labels(np.array([7, 3, 7, 3]), "f.csv")
    assert classes == [3, 7] and codes.tolist() == [1, 0, 1, 0]


def test_one_class_is_refused():
    with pytest.raises(InputError, match="f.csv: needs at least two classes"):
        encode_labels(np.array([1, 1, 1]), "f.csv")


def test_split_is_stratified_seeded_and_complete():
    codes = np.array([0] * 40 + [1] * 20)
    a = split_rows(codes, [0, 1], None, 0.25, 0.2, seed=0, where="f")
    b = split_rows(codes, [0, 1], None, 0.25, 0.2, seed=0, where="f")
    assert a.tolist() == b.tolist()
    assert (a == "test").sum() == 15
    # stratified: class proportions 2:1 kept in test (10 and 5)
    assert ((a == "test") & (codes == 0)).sum() == 10
    assert set(a) == {"train", "val", "test"}
    assert a.tolist() != split_rows(codes, [0, 1], None, 0.25, 0.2, seed=1, where="f").tolist()


def test_predefined_split_is_kept_and_val_carved_from_train():
    codes = np.array([0, 1] * 6)
    pre = np.array(["train"] * 8 + ["test"] * 4, dtype=object)
    s = split_rows(codes, [0, 1], pre, 0.25, 0.25, seed=0, where="f")
    assert (s[8:] == "test").all()
    assert (s[:8] == "val").sum() == 2 and (s[:8] == "train").sum() == 6


def test_class_too_small_to_split():
    codes = np.array([0] * 10 + [1] * 2)
    with pytest.raises(InputError, match="class 'rare' has 2 rows"):
        split_rows(codes, ["common", "rare"], None, 0.25, 0.2, seed=0, where="f")


def _frame(**cols):
    return pd.DataFrame(cols)


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        (_frame(a=[1.0, 2.0], y=[0, 1]), "no label column 'label'"),
        (_frame(a=["x", "y"], label=[0, 1]), "column 'a' is not numeric"),
        (_frame(a=[1.0, np.nan], label=[0, 1]), "column 'a' has NaN values (first at row 2)"),
        (_frame(a=[np.inf, 1.0], label=[0, 1]), "column 'a' has infinite values (first at row 1)"),
        (_frame(a=[1.0, 2.0], label=[0, None]), "label column 'label' has missing values"),
        (_frame(label=[0, 1]), "no feature columns"),
    ],
)
def test_validate_frame_errors_name_file_and_column(frame, needle, tmp_path):
    path = tmp_path / "data.parquet"
    frame.to_parquet(path, index=False)
    with pytest.raises(InputError) as e:
        scan(DataConfig(dataset=None, input=str(path), label="label"))
    assert str(e.value).startswith(f"{path}: ") and needle in str(e.value)


def test_validate_split_column_values(tmp_path):
    df = _frame(a=[1.0, 2.0, 3.0, 4.0], label=[0, 1, 0, 1], part=["train", "test", "holdout", "train"])
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    data = DataConfig(dataset=None, input=str(path), label="label", split_column="part")
    with pytest.raises(InputError, match="split column 'part' has value 'holdout'"):
        scan(data)
    df.drop(index=2).to_csv(path, index=False)
    with pytest.raises(InputError, match="carve a validation split"):
        scan(data)
    pd.concat([df.drop(index=2)] * 8).to_csv(path, index=False)
    ok = scan(data)
    assert ok.feature_names == ["a"] and set(ok.split.tolist()) == {0, 1, 2}


# ---------------------------------------------------------------- scale


def test_scaler_is_fitted_on_train_rows_only(tmp_path):
    from tasks.scale import scale
    from tasks.store.artifacts import ArtifactWriter
    from tasks.store.tables import TableWriter, read_table

    with ArtifactWriter(str(tmp_path), "dataset", {"t": 1}) as w:
        with TableWriter(w.path("dataset.parquet"), ["x"], 100) as out:
            out.write(np.array([[1.0], [3.0], [100.0]]), np.array([0, 1, 0]), np.array([0, 0, 2]))
        w.write_json("meta.json", {"feature_names": ["x"], "classes": [0, 1]})
    ref = scale.fn(w.ref, ScaleConfig(), root=str(tmp_path))
    scaler = json.loads(ref.file("scaler.json").read_text())
    scaled, _ = read_table(ref)
    assert scaler["mean"] == [2.0] and scaler["scale"] == [1.0]
    assert scaled["x"].tolist() == [-1.0, 1.0, 98.0]
    assert scaled[LABEL].tolist() == [0, 1, 0] and scaled[SPLIT].tolist() == ["train", "train", "test"]


def test_constant_feature_gets_unit_scale():
    s = fit_scaler(np.array([[5.0], [5.0]]), ScaleConfig())
    assert apply_scaler(np.array([[5.0], [6.0]]), s).ravel().tolist() == [0.0, 1.0]


# ---------------------------------------------------------------- encoder and features


def _blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centers = np.array([[3, 0, 0, 0], [0, 3, 0, 0], [0, 0, 3, 0]], dtype=float)
    return centers[y] + rng.normal(scale=0.5, size=(n, 4)), y


def test_encoder_shapes_and_loss_goes_down():
    from tasks.core.networks import FEATURE_LAYER, build_encoder, train

    cfg = EncoderConfig(hidden=[12, 6], epochs=15, batch_size=16, dropout=0.0, patience=50, learning_rate=0.01)
    model = build_encoder(4, 3, cfg)
    assert model.get_layer(FEATURE_LAYER).output.shape == (None, 6)
    assert model.output.shape == (None, 3)
    X, y = _blobs()
    _, history = train(X[:90], y[:90], X[90:], y[90:], 3, cfg)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_accuracy"][-1] >= 0.9


def test_encoder_training_is_deterministic():
    from tasks.core.networks import train

    cfg = EncoderConfig(hidden=[8], epochs=3, batch_size=16, dropout=0.2)
    X, y = _blobs()
    _, h1 = train(X[:90], y[:90], X[90:], y[90:], 3, cfg)
    _, h2 = train(X[:90], y[:90], X[90:], y[90:], 3, cfg)
    assert h1 == h2


def test_embed_in_batches_equals_one_pass():
    import keras

    from tasks.core.networks import embed

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    X = np.random.default_rng(0).normal(size=(23, 4))
    np.testing.assert_allclose(embed(model, X, 5), embed(model, X, 100), rtol=1e-5, atol=1e-6)
    assert embed(model, X, 5).shape == (23, 3) and embed(model, X, 5).dtype == np.float32


# ---------------------------------------------------------------- svc


def test_svc_on_the_textbook_example(tmp_path):
    from tasks.core.svm import fit_svc, load_svc, save_svc

    X = np.array([[-2, -1], [-1, -1], [-1, -2], [1, 1], [1, 2], [2, 1]], dtype=float)
    y = np.array([1, 1, 1, 2, 2, 2])
    model = fit_svc(X, y, SVCConfig(kernel="linear", C=1.0))
    assert model.predict([[-0.8, -1], [3, 2]]).tolist() == [1, 2]
    save_svc(model, tmp_path / "m.skops")
    again = load_svc(tmp_path / "m.skops")
    np.testing.assert_array_equal(again.decision_function(X), model.decision_function(X))


# ---------------------------------------------------------------- evaluate


def test_score_known_answer():
    y_true = np.array([0, 0, 0, 1, 1, 1])
    y_pred = np.array([0, 0, 1, 1, 1, 0])
    m = score(y_true, y_pred, ["cat", "dog"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[2, 1], [1, 2]]
    assert m["per_class"][0] == {"class": "cat", "precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
                                 "f1": pytest.approx(2 / 3), "support": 3}
    assert m["macro_f1"] == pytest.approx(2 / 3)
    md = render_markdown({**m, "val_accuracy": 1.0}, "pets.csv", 3)
    assert "| test accuracy | 0.667 |" in md and "| **cat** | 2 | 1 |" in md


def test_compare_scores_each_approach_on_the_same_rows():
    from tasks.core.metrics import compare

    y_test, y_val = np.array([0, 0, 1, 1]), np.array([0, 1])
    timing = {"fit_seconds": 1.0, "predict_seconds": 0.1}
    models = {
        "features_svc": {"predictions": {"test": [0, 0, 1, 1], "val": [0, 0]}, "timing": timing},
        "raw_svc": {"predictions": {"test": [0, 1, 1, 1], "val": [0, 1]}, "timing": timing},
    }
    m = compare(y_test, y_val, models, ["a", "b"])
    assert m["main"] == "features_svc" and m["accuracy"] == 1.0 and m["val_accuracy"] == 0.5
    assert list(m["approaches"]) == ["raw_svc", "features_svc"]
    assert m["approaches"]["raw_svc"]["accuracy"] == 0.75 and m["approaches"]["raw_svc"]["confusion"] == [[1, 1], [0, 2]]


# ---------------------------------------------------------------- margin helpers and RFF


def test_hinge_targets_are_explicit():
    from tasks.core.margin import hinge_targets, predicted_classes

    assert hinge_targets(np.array([0, 1, 1]), 2, "squared_hinge").ravel().tolist() == [-1, 1, 1]
    assert hinge_targets(np.array([2, 0]), 3, "squared_hinge").tolist() == [[-1, -1, 1], [1, -1, -1]]
    assert hinge_targets(np.array([2, 0]), 3, "categorical_hinge").tolist() == [[0, 0, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="class indices"):
        hinge_targets(np.array([3]), 3, "squared_hinge")
    assert predicted_classes(np.array([[-0.5], [0.2]])).tolist() == [0, 1]
    assert predicted_classes(np.array([[0.1, 0.9, -1.0]])).tolist() == [1]


def test_rff_approximates_the_rbf_kernel_and_round_trips(tmp_path):
    import keras

    from tasks.core.layers import RandomFourierFeatures

    X = np.random.default_rng(0).normal(size=(20, 5)).astype("float32")
    gamma = 0.1
    layer = RandomFourierFeatures(4000, gamma, seed=3)
    Z = np.asarray(layer(X))
    exact = np.exp(-gamma * ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    assert np.abs(Z @ Z.T - exact).max() < 0.08
    model = keras.Sequential([keras.Input((5,)), RandomFourierFeatures(64, gamma, seed=1), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(again(X)), np.asarray(model(X)))
    with pytest.raises(ValueError, match="gamma must be > 0"):
        RandomFourierFeatures(8, 0.0)


def test_random_shift_moves_rows_while_training_only_and_round_trips(tmp_path):
    import keras

    from tasks.core.layers import RandomShift

    x = np.arange(24, dtype="float32").reshape(2, 12)
    signal = RandomShift(3, seed=0)
    np.testing.assert_array_equal(np.asarray(signal(x)), x)  # inference: identity
    shifted = np.asarray(signal(x, training=True))
    for row, out in zip(x, shifted, strict=True):  # every output row is the input row shifted by one s
        candidates = [row[np.clip(np.arange(12) - s, 0, 11)] for s in range(-3, 4)]
        assert any(np.array_equal(out, c) for c in candidates)
    image = RandomShift(1, [4, 3, 1], seed=0)
    out = np.asarray(image(x, training=True)).reshape(2, 4, 3)
    grid = x.reshape(2, 4, 3)
    for g, o in zip(grid, out, strict=True):
        candidates = [g[np.clip(np.arange(4) - sy, 0, 3)][:, np.clip(np.arange(3) - sx, 0, 2)]
                      for sy in (-1, 0, 1) for sx in (-1, 0, 1)]
        assert any(np.array_equal(o, c) for c in candidates)
    model = keras.Sequential([keras.Input((12,)), RandomShift(2, seed=1), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(model(x)))
    assert again.layers[0].get_config()["max_shift"] == 2


def test_random_affine_rotates_and_scales_images_while_training_only_and_round_trips(tmp_path):
    import keras

    from tasks.core.layers import RandomAffine

    bar = np.zeros((8, 8), "float32")
    bar[1:7, 3:5] = 1.0  # a vertical bar through the centre
    x = np.repeat(bar.reshape(1, 64), 16, axis=0)
    quarter = RandomAffine(90.0, 0.0, [8, 8, 1], seed=0)
    np.testing.assert_array_equal(np.asarray(quarter(x)), x)  # inference: identity
    np.testing.assert_array_equal(np.asarray(RandomAffine(0.0, 0.0, [8, 8, 1])(x, training=True)), x)
    turned = np.asarray(quarter(x, training=True)).reshape(16, 8, 8)
    assert len({t.tobytes() for t in turned}) > 8  # an angle per row
    # mass moves from the bar's column to its row as the angle grows: some rows are turned well away from it
    assert (turned[:, :, 3:5].sum(axis=(1, 2)) < 0.8 * bar[:, 3:5].sum()).any()
    np.testing.assert_allclose(turned.sum(axis=(1, 2)), bar.sum(), rtol=0.35)  # turned, not lost
    shrink = RandomAffine(0.0, 0.3, [8, 8, 1], seed=1)
    sizes = np.asarray(shrink(x, training=True)).reshape(16, 8, 8)[:, :, 3:5].sum(axis=(1, 2))
    assert sizes.min() < bar.sum() - 1 < bar.sum() + 1 < sizes.max()  # longer and shorter bars
    model = keras.Sequential([keras.Input((64,)), RandomAffine(10.0, 0.1, [8, 8, 1], seed=1), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", compile=False, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(model(x)))
    assert again.layers[0].get_config()["max_degrees"] == 10.0
    with pytest.raises(ValueError, match="max_scale"):
        RandomAffine(10.0, 1.5, [8, 8, 1])


def test_metric_value_known_answers():
    from tasks.core.metrics import metric_value

    y, p = np.array(["a", "a", "b", "b"]), np.array(["a", "b", "b", "b"])
    assert metric_value("accuracy", y, p) == 0.75
    # F1(a) = 2*1*0.5/(1.5) = 2/3, F1(b) = 2*(2/3)*1/(5/3) = 0.8 -> mean 11/15
    assert metric_value("macro_f1", y, p) == pytest.approx(11 / 15)
    with pytest.raises(ValueError, match="unknown metric"):
        metric_value("auc", y, p)

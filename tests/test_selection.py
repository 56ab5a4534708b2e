"""The rows' layout, the encoder chosen by validation (``encoder.kind = "auto"``), and the knn baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import DataConfig, EncoderConfig, KNNConfig, ScaleConfig
from tasks.config_text import load_config
from tasks.core.layout import Layout, infer_layout, resolve_layout
from tasks.core.neighbors import dtw, vote
from tasks.errors import InputError

# --------------------------------------------------------------------------- layout


@pytest.mark.parametrize(("names", "kind", "shape"), [
    (["mean radius", "mean texture", "worst area"], "table", [3]),
    ([f"t{i:02d}" for i in range(40)], "sequence", [40, 1]),
    ([f"x{i}" for i in range(1, 151)], "sequence", [150, 1]),  # numbered from 1, not a square
    ([f"px{i}" for i in range(784)], "image", [28, 28, 1]),
    ([str(i) for i in range(784)], "image", [28, 28, 1]),  # unnamed columns of a saved array
    ([str(i) for i in range(100)], "image", [10, 10, 1]),
    ([f"t{i}" for i in range(144)], "sequence", [144, 1]),  # a square, but the prefix names time
    ([str(i) for i in range(150)], "sequence", [150, 1]),  # unnamed, not a square
    ([f"pixel_{r}_{c}" for r in range(8) for c in range(8)], "image", [8, 8, 1]),
    ([f"r{r}c{c}" for r in range(4) for c in range(6)], "image", [4, 6, 1]),  # a grid need not be square
    ([f"f{i}" for i in range(5)], "table", [5]),  # too few to be a sequence
    ([f"t{i}" for i in range(0, 40, 2)], "table", [20]),  # numbers with gaps
    ([f"t{i}" for i in reversed(range(20))], "table", [20]),  # not in column order
    ([*(f"t{i}" for i in range(20)), "age"], "table", [21]),  # one column that is not numbered
])
def test_layout_is_inferred_from_the_column_names(names, kind, shape):
    layout = infer_layout(names)
    assert (layout.kind, layout.shape) == (kind, shape), layout.reason
    assert layout.reason and "\n" not in layout.reason


@pytest.mark.parametrize(("d", "layout", "shape", "kind", "full"), [
    (784, "image", [28, 28], "image", [28, 28, 1]),
    (784, "auto", [28, 28, 1], "image", [28, 28, 1]),
    (100, "sequence", [50, 2], "sequence", [50, 2]),
    (100, "auto", [100], "sequence", [100, 1]),
    (100, "table", None, "table", [100]),
    (64, "image", None, "image", [8, 8, 1]),
    (40, "sequence", None, "sequence", [40, 1]),
])
def test_an_explicit_layout_or_shape_wins(d, layout, shape, kind, full):
    got = resolve_layout([f"c{i}" for i in range(d)], layout, shape)
    assert (got.kind, got.shape) == (kind, full)


@pytest.mark.parametrize(("d", "layout", "shape", "needle"), [
    (4, "auto", [3, 3, 1], "data.shape [3, 3, 1] holds 9 values but the data has 4 feature columns"),
    (12, "auto", [3, 4], "say data.layout = 'image' ([H, W]) or 'sequence' ([T, C])"),
    (10, "image", None, "data.layout = 'image': 10 feature columns are not a square"),
    (12, "table", [3, 4], "data.layout = 'table' takes [12] or no shape"),
    (12, "sequence", [2, 3, 2], "a sequence is [length] or [length, channels]"),
])
def test_a_shape_that_does_not_fit_is_one_line_naming_the_key(d, layout, shape, needle):
    with pytest.raises(InputError) as e:
        resolve_layout([f"c{i}" for i in range(d)], layout, shape)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_the_layout_is_recorded_with_the_dataset():
    from tasks.ingest import prepare

    for dataset, kind, shape in [("digits", "image", [8, 8, 1]), ("mnist1d", "sequence", [40, 1]),
                                 ("wine", "table", [13])]:
        _, meta = prepare(DataConfig(dataset=dataset))
        assert (meta["layout"]["kind"], meta["layout"]["shape"]) == (kind, shape)


def test_a_multichannel_sequence_encoder_reads_rows_time_major():
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    from tasks.core.networks import build_encoder

    model = build_encoder(12, 2, EncoderConfig(kind="cnn1d", filters=[4]), Layout("sequence", [6, 2], ""))
    reshape = model.get_layer("reshape")
    row = np.arange(12, dtype="float32")[None, :]
    out = np.asarray(keras.Model(model.input, reshape.output)(row))
    assert out.shape == (1, 6, 2) and out[0, 1].tolist() == [2.0, 3.0]  # step 1: channels 0 and 1


# --------------------------------------------------------------------------- knn and DTW


def _dtw_reference(a: np.ndarray, b: np.ndarray, window: int) -> float:
    T = len(a)
    D = np.full((T + 1, T + 1), np.inf)
    D[0, 0] = 0.0
    for i in range(1, T + 1):
        for j in range(max(1, i - window), min(T, i + window) + 1):
            D[i, j] = ((a[i - 1] - b[j - 1]) ** 2).sum() + min(D[i - 1, j], D[i, j - 1], D[i - 1, j - 1])
    return float(D[T, T])


@pytest.mark.parametrize("window", [0, 2, 11])
def test_dtw_equals_the_textbook_recursion(window):
    rng = np.random.default_rng(window)
    Q, R = rng.normal(size=(5, 12, 2)), rng.normal(size=(7, 12, 2))
    got = dtw(Q, R, window)
    want = np.array([[_dtw_reference(a, b, window) for b in R] for a in Q])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    if window == 0:  # no warping: the squared Euclidean distance
        np.testing.assert_allclose(got, ((Q[:, None] - R[None]) ** 2).sum((2, 3)), rtol=1e-5)


def test_vote_breaks_ties_by_the_nearest_neighbour():
    D = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    y = np.array([1, 0, 0, 1])
    assert vote(D, y, 1, 2).tolist() == [1, 1]
    assert vote(D, y, 2, 2).tolist() == [1, 1]  # one vote each: the nearest decides
    assert vote(D, y, 3, 2).tolist() == [0, 0]


def _bumps(n: int, seed: int, length: int = 40) -> pd.DataFrame:
    """Class 0: one bump, class 1: two bumps, each at a random place (Euclidean distance is poor here)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    rows, labels = [], []
    for i in range(n):
        label = i % 2
        centers = rng.choice(np.arange(6, length - 6), size=1 + label, replace=False)
        x = sum(np.exp(-0.5 * ((t - c) / 1.5) ** 2) for c in centers) + rng.normal(0, 0.05, length)
        rows.append(x)
        labels.append(label)
    frame = pd.DataFrame(np.array(rows), columns=[f"t{i}" for i in range(length)])
    frame["label"] = labels
    return frame


def test_knn_chooses_dtw_where_the_patterns_move(tmp_path):
    from tasks.ingest import describe_source, ingest
    from tasks.knn import knn
    from tasks.scale import scale

    path = tmp_path / "bumps.csv"
    _bumps(160, 0).to_csv(path, index=False)
    data = DataConfig(dataset=None, input=str(path), label="label")
    root = str(tmp_path / "d")
    dataset = ingest.fn(describe_source(data), data, root=root)
    scaled = scale.fn(dataset, ScaleConfig(), root=root)
    ref = knn.fn(dataset, scaled, KNNConfig(dtw_window=0.25), root=root)
    chosen = json.loads(ref.file("config.json").read_text())
    by = {(r["metric"], r["k"]): r["loo_accuracy"] for r in chosen["selection"]}
    assert chosen["metric"] == "dtw", chosen
    assert max(v for (m, _), v in by.items() if m == "dtw") > max(v for (m, _), v in by.items() if m == "euclidean")
    preds = json.loads(ref.file("predictions.json").read_text())
    assert len(preds["test"]) == 40
    assert json.loads(knn.fn(dataset, scaled, KNNConfig(metric="euclidean"), root=root).file(
        "config.json").read_text())["metric"] == "euclidean"


# --------------------------------------------------------------------------- the encoder search


def _table_csv(path: Path, poison_test: bool = False) -> Path:
    """Wine with a fixed split column; ``poison_test`` shuffles the labels of the test rows only."""
    from sklearn.datasets import load_wine

    bunch = load_wine()
    frame = pd.DataFrame(bunch.data, columns=[f"m_{n}" for n in bunch.feature_names])
    frame["label"] = bunch.target
    rng = np.random.default_rng(0)
    frame["split"] = rng.choice(["train", "val", "test"], size=len(frame), p=[0.6, 0.15, 0.25])
    if poison_test:
        test = frame["split"] == "test"
        frame.loc[test, "label"] = rng.permutation(frame.loc[test, "label"].to_numpy())
    frame.to_csv(path, index=False)
    return path


def _scaled(csv: Path, root: Path):
    from tasks.ingest import describe_source, ingest
    from tasks.scale import scale

    data = DataConfig(dataset=None, input=str(csv), label="label", split_column="split")
    scaled = scale.fn(ingest.fn(describe_source(data), data, root=str(root)), ScaleConfig(), root=str(root))
    return scaled, Layout.from_json(json.loads(scaled.file("meta.json").read_text())["layout"], 13)


def _search(csv: Path, root: Path, encoder: EncoderConfig):
    from tasks.core.candidates import candidate_set
    from tasks.core.search import selection_svc
    from tasks.encoder_candidate import encoder_candidate
    from tasks.score_candidate import score_candidate
    from tasks.train_encoder import train_encoder

    scaled, layout = _scaled(csv, root)
    refs = [[encoder_candidate.fn(scaled, c, root=str(root))] for c in candidate_set(layout, encoder)]
    scores = [[score_candidate.fn(r[0], selection_svc(encoder), root=str(root))] for r in refs]
    chosen = train_encoder.fn(scaled, encoder, root=str(root), candidates=refs, scores=scores)
    return json.loads(chosen.file("config.json").read_text())["selection"]


def test_the_search_never_reads_test_rows(tmp_path):
    encoder = EncoderConfig(search_folds=2, search_repeats=1, epochs=15)  # what is read, not how well it trains
    clean = _search(_table_csv(tmp_path / "clean.csv"), tmp_path / "a", encoder)
    poisoned = _search(_table_csv(tmp_path / "poisoned.csv", poison_test=True), tmp_path / "b", encoder)
    assert [r["candidate"] for r in clean] == ["mlp", "mlp-narrow", "identity"]
    strip = [{k: v for k, v in r.items() if k != "train_seconds"} for r in clean]
    assert strip == [{k: v for k, v in r.items() if k != "train_seconds"} for r in poisoned]
    assert sum(r["chosen"] for r in clean) == 1
    assert all(r["validation"] == "2 folds x 1 of train+val" and len(r["scores"]) == 2 for r in clean)


def _flow_config(csv: Path, *extra: str):
    return load_config(None, ["encoder.search_folds=2", "encoder.search_repeats=1", "encoder.epochs=15", *extra],
                       {"data.input": str(csv), "data.label": "label", "data.dataset": None,
                        "data.split_column": "split"})


def test_a_tiny_budget_keeps_the_best_so_far_and_candidates_are_cached_one_by_one(prefect_api, tmp_path):
    from flows.pipeline import pipeline

    csv = _table_csv(tmp_path / "wine.csv")
    root = str(tmp_path / "d")
    first = pipeline(config=_flow_config(csv, "encoder.search_budget_s=0.001"), data_dir=root,
                     until="train_encoder")
    assert first.stages["train_encoder.candidates"].status == "ran"
    assert "3 encoder_candidate tasks for 3 candidates, 2 not run" in first.stages["train_encoder.candidates"].artifact
    selection = json.loads((Path(first.stages["train_encoder"].artifact) / "config.json").read_text())["selection"]
    assert [r["score"] is not None for r in selection] == [False, False, True]  # the cheap one always runs
    assert selection[2]["chosen"] and selection[2]["candidate"] == "identity"
    # with the budget, the search goes on where it stopped: the first candidate comes from the cache
    second = pipeline(config=_flow_config(csv), data_dir=root, until="train_encoder")
    assert "not run" not in second.stages["train_encoder.candidates"].artifact
    selection = json.loads((Path(second.stages["train_encoder"].artifact) / "config.json").read_text())["selection"]
    assert all(r["score"] is not None for r in selection) and sum(r["chosen"] for r in selection) == 1
    third = pipeline(config=_flow_config(csv), data_dir=root, until="train_encoder")
    assert {s.status for s in third.stages.values()} == {"cached"}
    assert third.stages["train_encoder"].artifact == second.stages["train_encoder"].artifact


@pytest.mark.parametrize("layout", [Layout("image", [8, 8, 1], ""), Layout("sequence", [40, 2], ""),
                                    Layout("sequence", [600, 1], ""), Layout("table", [13], "")])
def test_every_candidate_builds_and_passes_the_bundles_layer_check(tmp_path, layout):
    """A candidate that wins is bundled: its saved encoder must hold only classes the bundle accepts."""
    import math
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    from tasks.core.candidates import candidate_set
    from tasks.core.networks import build_encoder, check_keras_layers, fit_rocket

    rows = np.random.default_rng(0).normal(size=(6, math.prod(layout.shape)))
    for candidate in candidate_set(layout, EncoderConfig()):
        kind = candidate.encoder.kind
        fitted = fit_rocket(rows, candidate.encoder, layout, None) if kind == "rocket" else None
        model = build_encoder(math.prod(layout.shape), 3, candidate.encoder, layout, fitted)
        path = tmp_path / f"{candidate.name}.keras"
        model.save(path)
        check_keras_layers(path)  # raises on a class marginflow does not allow
        width = model.get_layer("features").output.shape[-1]
        expected = {"identity": math.prod(layout.shape), "rocket": 9996}
        assert width == expected[kind] if kind in expected else width <= 512
    assert ("rocket" in [c.name for c in candidate_set(layout, EncoderConfig())]) == (layout.kind == "sequence")


def test_scoring_is_cached_apart_from_training_and_reads_only_the_selections_svc(tmp_path):
    """A change to encoder.search_svc_* rescores the trained candidates without training one; the
    user's svc section is not an input of either step."""
    import inspect

    from tasks.core.search import selection_svc
    from tasks.encoder_candidate import encoder_candidate
    from tasks.score_candidate import score_candidate

    assert "svc" not in inspect.signature(encoder_candidate.fn).parameters
    scaled, layout = _scaled(_table_csv(tmp_path / "wine.csv"), tmp_path / "d")
    from tasks.core.candidates import candidate_set

    spec = candidate_set(layout, EncoderConfig())[1]  # mlp-narrow
    trained = encoder_candidate.fn(scaled, spec, root=str(tmp_path / "d"))
    a = score_candidate.fn(trained, selection_svc(EncoderConfig()), root=str(tmp_path / "d"))
    b = score_candidate.fn(trained, selection_svc(EncoderConfig(search_svc_C=0.01)), root=str(tmp_path / "d"))
    again = encoder_candidate.fn(scaled, spec, root=str(tmp_path / "d"))
    assert again.sha256 == trained.sha256  # from the cache: the same artifact
    sa, sb = (json.loads(r.file("score.json").read_text()) for r in (a, b))
    assert sa["epochs"] == sb["epochs"] and sa["score"] > sb["score"]  # C=0.01 underfits: a different score


def test_halving_rungs_and_survivors():
    from tasks.core.search import halving_rungs, survivors

    assert halving_rungs(3) == [0.25, 0.5, 1.0] and halving_rungs(2) == [0.5, 1.0] and halving_rungs(1) == [1.0]
    assert survivors([0.9, 0.95, 0.9], 2) == [0, 1]  # ties: the earlier
    assert survivors([None, 0.5, 0.7], 1) == [2]


def _two_blobs_image_csv(path: Path, n: int = 1400) -> Path:
    """8x8 images of two classes a network separates easily: a bright square at the top left or bottom right."""
    rng = np.random.default_rng(0)
    X = rng.normal(0, 0.3, size=(n, 8, 8))
    y = np.arange(n) % 2
    X[y == 0, :3, :3] += 2.0
    X[y == 1, 5:, 5:] += 2.0
    frame = pd.DataFrame(X.reshape(n, 64), columns=[f"px{i}" for i in range(64)])
    frame["label"] = y
    frame["split"] = rng.choice(["train", "val", "test"], size=n, p=[0.75, 0.15, 0.10])
    frame.to_csv(path, index=False)
    return path


def test_successive_halving_keeps_the_full_searchs_candidate(prefect_api, tmp_path):
    """On data where the answer is clear (bright squares in opposite corners: every CNN separates them), halving
    keeps the same encoder and the same best network as training every network for the whole budget, and
    gives the networks less of the budget in all (its rungs: 1/4 + 1/2 + 1 against 3 whole budgets)."""
    from flows.pipeline import pipeline

    csv = _two_blobs_image_csv(tmp_path / "img.csv")
    kept = {}
    steps = {}
    for halving in (True, False):
        config = load_config(None, ["encoder.max_steps=120", f"encoder.search_halving={str(halving).lower()}",
                                    "encoder.search_folds_below=500"],
                             {"data.input": str(csv), "data.label": "label", "data.dataset": None,
                              "data.split_column": "split"})
        result = pipeline(config=config, data_dir=str(tmp_path / f"d{halving}"), until="train_encoder")
        stored = json.loads((Path(result.stages["train_encoder"].artifact) / "config.json").read_text())
        rows = stored["selection"]
        # images: the networks' features side by side are scored too (nothing trained for it), and a row of their own
        ensemble = rows[-1]
        assert ensemble["kind"] == "ensemble" and ensemble["members"] == ["cnn2d-shift", "cnn2d-deep-shift", "cnn2d"]
        assert ensemble["score"] is not None and ensemble["train_seconds"] == 0.0
        kept[halving] = (next(r["candidate"] for r in rows if r["chosen"]), stored["network"]["candidate"])
        steps[halving] = sum(r.get("reached", 0) for r in rows if r["score"] is not None and r["kind"] != "identity")
        if halving:
            assert "10 encoder_candidate tasks for 4 candidates, 3 not run" in result.stages["train_encoder.candidates"].artifact
            assert sorted(r.get("reached") for r in rows if r["kind"] not in ("identity", "ensemble")) == [0.25, 0.5, 1.0]
    assert kept[True] == kept[False]
    assert steps[True] < steps[False]


def test_an_ensemble_is_its_members_features_side_by_side_and_passes_the_bundles_check(tmp_path):
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    from tasks.core.candidates import candidate_set
    from tasks.core.networks import (
        build_encoder,
        check_keras_layers,
        cut_at_features,
        embed,
        ensemble_encoder,
        load_encoder,
        save_keras,
    )
    from tasks.core.search import Heldout, joined

    layout = Layout("image", [8, 8, 1], "")
    specs = [c for c in candidate_set(layout, EncoderConfig()) if c.encoder.kind == "cnn2d"]
    members = [build_encoder(64, 3, c.encoder, layout) for c in specs]
    model = ensemble_encoder(members, 3, seed=0)
    save_keras(model, tmp_path / "e.keras")
    check_keras_layers(tmp_path / "e.keras")  # what the bundle accepts
    again = load_encoder(tmp_path / "e.keras")
    X = np.random.default_rng(0).normal(size=(5, 64)).astype("float32")
    expected = np.concatenate([embed(cut_at_features(m), X, 8) for m in members], axis=1)
    assert expected.shape == (5, 128 * len(members))
    np.testing.assert_allclose(embed(cut_at_features(again), X, 8), expected, rtol=1e-5, atol=1e-6)
    y = np.array([0, 1, 2, 0, 1])
    a = Heldout([(np.ones((5, 2)), y, np.zeros((3, 2)), y[:3])], "val split")
    b = Heldout([(np.full((5, 3), 2.0), y, np.ones((3, 3)), y[:3])], "val split")
    both = joined([a, b])
    assert both.folds[0][0].shape == (5, 5) and both.folds[0][2].shape == (3, 5) and both.validation == "val split"
    with pytest.raises(ValueError, match="held-out rows differ"):
        joined([a, Heldout([(np.ones((5, 3)), y, np.ones((3, 3)), y[::-1][:3])], "val split")])


def test_the_ensemble_is_scored_for_images_and_sequences_held_in_memory_only():
    from tasks.core.candidates import ensemble_scored

    on, off = EncoderConfig(), EncoderConfig(search_ensemble=False)
    image, sequence, table = Layout("image", [8, 8, 1], ""), Layout("sequence", [40, 1], ""), Layout("table", [13], "")
    assert ensemble_scored(image, on, streamed=False) and ensemble_scored(sequence, on, streamed=False)
    assert not ensemble_scored(table, on, streamed=False)  # not measured on tables
    assert not ensemble_scored(image, on, streamed=True)  # its extraction costs its members' together
    assert not ensemble_scored(image, off, streamed=False)

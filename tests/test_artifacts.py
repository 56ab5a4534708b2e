"""Unit tests: the artifact store and the cache key."""

from __future__ import annotations

import pytest

from tasks.config import SVCConfig
from tasks.store.artifacts import ArtifactWriter, digest_files, sha256_text
from tasks.store.cache import stage_key


def _write(root, text="hello"):
    with ArtifactWriter(root, "thing", {"p": 1}) as w:
        w.write_text("a.txt", text)
        w.write_json("b.json", {"x": 1})
    return w.ref


def test_writer_content_addresses_and_verifies(tmp_path):
    ref = _write(tmp_path)
    assert ref.sha256 == digest_files({"a.txt": sha256_text("hello"), "b.json": ref.files["b.json"]})
    assert ref.path.endswith(ref.sha256[:16])
    assert ref.file("a.txt").read_text() == "hello"
    assert ref.is_intact()
    assert _write(tmp_path) == ref  # same content, same place
    assert _write(tmp_path, "other").sha256 != ref.sha256


def test_a_recomputed_artifact_that_took_another_time_is_the_same_artifact(tmp_path):
    """timing.json (what the work took) is listed and verified but not in the digest: the same content written
    again is the same artifact, and the copy already there keeps its measurement."""
    from tasks.store.outputs import write_timing

    def write(seconds: float):
        with ArtifactWriter(tmp_path, "thing", {"p": 1}) as w:
            w.write_text("a.txt", "hello")
            write_timing(w, seconds)
        return w.ref

    first, again = write(1.5), write(9.0)
    assert again.sha256 == first.sha256 and again.path == first.path and again.files == first.files
    assert again.is_intact() and '"fit_seconds": 1.5' in again.file("timing.json").read_text()
    assert first.sha256 == digest_files({"a.txt": sha256_text("hello")})
    first.file("timing.json").write_text("{")  # a damaged measurement: the copy is replaced by the new one
    assert not first.is_intact()
    replaced = write(2.0)
    assert replaced.is_intact() and '"fit_seconds": 2.0' in replaced.file("timing.json").read_text()


def test_changed_or_missing_file_is_not_intact(tmp_path):
    ref = _write(tmp_path)
    ref.file("a.txt").write_text("hellO")
    assert not ref.is_intact()
    ref.file("a.txt").unlink()
    assert not ref.is_intact()


def test_damaged_copy_is_replaced_by_a_rewrite(tmp_path):
    ref = _write(tmp_path)
    ref.file("a.txt").write_text("damaged")
    assert _write(tmp_path).is_intact()


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with ArtifactWriter(tmp_path, "thing", {}) as w:
            w.write_text("a.txt", "half")
            raise RuntimeError("boom")
    assert not (tmp_path / "artifacts" / "thing").exists()
    assert list((tmp_path / "artifacts" / ".staging").iterdir()) == []


def test_cache_key_depends_on_content_and_config_not_paths(tmp_path):
    a = _write(tmp_path / "one")
    b = _write(tmp_path / "two")  # same bytes, another place
    assert a.dir != b.dir and a.path == b.path  # stored relative to the data root
    from tasks.train_svc import train_svc

    fn = train_svc.fn.__wrapped__
    key = stage_key("train_svc", fn, {"features": a, "config": SVCConfig(), "root": "/x"})
    assert key == stage_key("train_svc", fn, {"features": b, "config": SVCConfig(), "root": "/y"})
    assert key != stage_key("train_svc", fn, {"features": a, "config": SVCConfig(C=1.0), "root": "/x"})
    c = _write(tmp_path / "three", "changed")
    assert key != stage_key("train_svc", fn, {"features": c, "config": SVCConfig(), "root": "/x"})
    assert key != stage_key("evaluate", fn, {"features": a, "config": SVCConfig(), "root": "/x"})


def test_the_same_model_is_saved_with_the_same_bytes(tmp_path):
    """Keras and skops stamp save times and memory addresses into their files; marginflow's saves fix both, so
    a model trained again identically keeps its SHA-256 (its cache entry and registry version), and still loads."""
    import os
    import time

    import numpy as np
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    os.environ.setdefault("KERAS_BACKEND", "jax")
    from tasks.config import EncoderConfig
    from tasks.core.layout import Layout
    from tasks.core.networks import build_encoder, load_encoder, save_keras
    from tasks.core.svm import check_skops_types, save_svc, skops_load
    from tasks.store.artifacts import sha256_file

    X = np.random.default_rng(0).normal(size=(40, 64)).astype("float32")
    y = np.arange(40) % 3
    paths = []
    for i in range(2):  # two separate builds and fits, a second apart
        svc = make_pipeline(StandardScaler(), SVC()).fit(X, y)
        net = build_encoder(64, 3, EncoderConfig(kind="cnn2d", filters=[4], hidden=[8], batch_norm=True),
                            Layout("image", [8, 8, 1], ""))
        save_svc(svc, tmp_path / f"s{i}.skops")
        save_keras(net, tmp_path / f"k{i}.keras")
        paths.append((tmp_path / f"s{i}.skops", tmp_path / f"k{i}.keras"))
        time.sleep(1.1)
    assert sha256_file(paths[0][0]) == sha256_file(paths[1][0])
    assert sha256_file(paths[0][1]) == sha256_file(paths[1][1])
    types = ("sklearn.pipeline.Pipeline", "sklearn.preprocessing._data.StandardScaler", "sklearn.svm._classes.SVC")
    check_skops_types(paths[1][0], types)
    assert np.allclose(skops_load(paths[1][0], types).decision_function(X), svc.decision_function(X))
    assert np.allclose(np.asarray(load_encoder(paths[1][1]).predict_on_batch(X)), np.asarray(net.predict_on_batch(X)))

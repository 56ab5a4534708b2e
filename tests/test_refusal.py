"""Load before trust: versions whose files pass the hash check but hold what marginflow never
writes (a Lambda layer, a foreign scikit-learn type) are refused by promote, predict, models
and retrain; nothing in them runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flows.cli import main
from tasks.ops.bundle import FILES, MANIFEST, Bundle, BundleError, bundle_identity
from tasks.ops.registry import Registry
from tests.helpers import tiny_config

GOOD = ["evaluate.approaches=['features_svc']"]


@pytest.fixture
def trained(prefect_api, csv, tmp_path) -> Path:
    from flows.pipeline import pipeline

    data = tmp_path / "data"
    pipeline(config=tiny_config(csv, *GOOD), data_dir=str(data))
    return data


def _forge(version_dir: Path, name: str, write) -> None:
    """Replace one file of a registered version and recompute the manifest, as someone with write access could."""
    for f in version_dir.iterdir():
        f.chmod(0o644)
    write(version_dir / name)
    files = {n: __import__("hashlib").sha256((version_dir / n).read_bytes()).hexdigest() for n in FILES}
    (version_dir / MANIFEST).write_text(json.dumps({"format": "marginflow-bundle/2", "files": files,
                                                    "identity": bundle_identity(files)}))


def _second_version(data: Path) -> Path:
    target = data / "models" / "v0002"
    shutil.copytree(data / "models" / "v0001", target)
    return target


def _lambda_encoder(path: Path) -> None:
    import keras

    marker = path.parent / "lambda-ran"
    inputs = keras.Input((4,))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="lam")(inputs)  # a Lambda: arbitrary code on load
    x = keras.layers.Dense(3, name="features")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    path.unlink()
    model.save(path)
    assert not marker.exists()


def _foreign_svc(path: Path) -> None:
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.random.default_rng(0).normal(size=(30, 16))
    path.unlink()
    sio.dump(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, np.arange(30) % 3), path)


def _function_claiming_str(path: Path) -> None:
    """The SVC file with one plain string node turned into a function loader that still claims ``builtins.str``
    (skops would import and return ``os.system`` there)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    schema = json.loads(parts["schema.json"])

    def turn(node) -> bool:
        if isinstance(node, dict):
            if node.get("__loader__") == "JsonNode" and node.get("__class__") == "str":
                node.update({"__loader__": "FunctionNode", "content": {"module_path": "os", "function": "system"}})
                return True
            return any(turn(v) for v in node.values())
        return isinstance(node, list) and any(turn(v) for v in node)

    assert turn(schema)
    parts["schema.json"] = json.dumps(schema).encode()
    path.unlink()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in parts.items():
            z.writestr(n, data)


def _labels_without_classes(path: Path) -> None:
    path.write_text(json.dumps({"label": "species"}))


@pytest.mark.parametrize(("name", "write", "needle"), [
    ("encoder.keras", _lambda_encoder, "keras.layers.Lambda, not a layer marginflow builds"),
    ("svc.skops", _foreign_svc, "refusing to load untrusted type sklearn."),
    ("svc.skops", _function_claiming_str, "refusing to load builtins.str rebuilt by skops's FunctionNode"),
    ("labels.json", _labels_without_classes, "labels.json: not a marginflow labels file"),
])
def test_a_forged_version_is_refused_everywhere(trained, tmp_path, capsys, name, write, needle):
    forged = _second_version(trained)
    _forge(forged, name, write)
    assert Registry(trained).recover() == ["restored the history line of v0002"]  # a folder with no history line
    with pytest.raises(BundleError, match=needle.replace(".", r"\.")):
        Bundle.load(forged)
    assert main(["promote", "v0002", "--data-dir", str(trained)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert Registry(trained).champion() == "v0001"
    assert main(["models", "--data-dir", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "v0002" in out and "REFUSED" in out and needle in out
    frame = tmp_path / "rows.csv"
    import pandas as pd

    pd.read_csv(tmp_path / "iris.csv").drop(columns=["species"]).to_csv(frame, index=False)
    assert main(["predict", "--input", str(frame), "--output", str(tmp_path / "p.csv"), "--model", "v0002",
                 "--data-dir", str(trained)]) == 2
    assert needle in capsys.readouterr().err and not (tmp_path / "p.csv").exists()


def test_retrain_with_an_unusable_champion_promotes_a_loadable_challenger(trained, csv):
    from flows.retrain import retrain

    _forge(trained / "models" / "v0001", "svc.skops", _foreign_svc)
    decision = retrain(config=tiny_config(csv, *GOOD, "svc.C=0.5"), data_dir=str(trained))
    assert decision.promoted and decision.challenger == "v0002" and decision.champion_after == "v0002"
    assert decision.reason.startswith("champion unusable:") and "untrusted type" in decision.reason
    logged = [e for e in Registry(trained).history() if e["event"] == "decision"]
    assert logged and logged[-1]["reason"] == decision.reason


def test_models_lists_a_version_whose_metrics_are_not_numbers(trained, capsys):
    metrics = trained / "models" / "v0001" / "metrics.json"
    metrics.chmod(0o644)
    metrics.write_text(json.dumps({"accuracy": "high", "macro_f1": None, "source": "\x1b[31mred\x1b[0m"}))
    assert main(["models", "--data-dir", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "v0001" in out and "\x1b" not in out  # shown as missing, and no terminal escape reaches the screen


def test_signed_bundles_round_trip_and_a_resealed_file_is_refused(prefect_api, csv, tmp_path, monkeypatch, capsys):
    """With MARGINFLOW_SIGNING_KEY_FILE the registry signs what it admits; a file edited and its manifest
    recomputed (what write access to the registry allows) is refused by promote and predict; an unsigned
    version is refused too; without the key, hashes only."""
    import pandas as pd

    from flows.pipeline import pipeline

    key = tmp_path / "key"
    key.write_text("a secret kept outside the data root\n")
    monkeypatch.setenv("MARGINFLOW_SIGNING_KEY_FILE", str(key))
    data = tmp_path / "data"
    pipeline(config=tiny_config(csv, *GOOD), data_dir=str(data))
    v1 = data / "models" / "v0001"
    assert (v1 / "signature.json").is_file()
    Bundle.load(v1)  # signed with this key: loads
    rows = tmp_path / "rows.csv"
    pd.read_csv(csv).drop(columns=["species"]).to_csv(rows, index=False)
    assert main(["predict", "--input", str(rows), "--output", str(tmp_path / "p.csv"), "--data-dir", str(data)]) == 0
    capsys.readouterr()

    forged = _second_version(data)
    _forge(forged, "labels.json", lambda p: p.write_text(json.dumps({"label": "species",
                                                                     "classes": ["c", "b", "a"]})))
    Registry(data).recover()
    assert main(["promote", "v0002", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert "signature.json: does not match this signing key" in err and err.count("\n") == 1
    assert main(["predict", "--input", str(rows), "--output", str(tmp_path / "q.csv"), "--model", "v0002",
                 "--data-dir", str(data)]) == 2
    assert not (tmp_path / "q.csv").exists()
    (forged / "signature.json").chmod(0o644)
    (forged / "signature.json").unlink()
    assert main(["promote", "v0002", "--data-dir", str(data)]) == 2
    assert "not signed" in capsys.readouterr().err
    monkeypatch.delenv("MARGINFLOW_SIGNING_KEY_FILE")
    Bundle.load(forged)  # without a key only the hashes are checked, and the forger recomputed them

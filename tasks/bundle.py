"""The model bundle: one directory holding everything needed to predict, with verified hashes.

Files (all listed with their SHA-256 in ``manifest.json``):

* ``scaler.json``   - per-feature mean and scale (JSON, no pickle);
* ``encoder.keras`` - the Keras encoder, loaded with ``safe_mode=True`` and cut at ``features``;
* ``svc.skops``     - the SVC, loaded by skops with an explicit list of trusted types;
* ``labels.json``   - the label column's name and the original class values, in index order;
* ``features.json`` - the input feature names, in the order the model reads them;
* ``config.json``   - the whole pipeline config the model was trained with;
* ``metrics.json``  - the model's test metrics from its own run.

`Bundle.load` re-hashes every file before anything is deserialised and refuses a bundle
with a missing, extra-listed or altered file. A loaded bundle behaves like a scikit-learn
classifier: ``predict``, ``decision_function``, ``score``, ``classes_``.

Stage ``bundle`` writes a bundle as a cached artifact from the pipeline's artifacts;
the registry (`tasks.registry`) copies it into a numbered version.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.artifacts import ArtifactRef, ArtifactWriter, damaged_file, read_json, sha256_file
from tasks.cache import stage
from tasks.config import Config
from tasks.errors import InputError

FORMAT = "marginflow-bundle/1"
MANIFEST = "manifest.json"
FILES = ("scaler.json", "encoder.keras", "svc.skops", "labels.json", "features.json", "config.json", "metrics.json")


class BundleError(InputError):
    """A bundle that is incomplete, altered or not a bundle at all."""


@stage("bundle")
def bundle(scaled: ArtifactRef, encoder: ArtifactRef, svc: ArtifactRef, config: Config, root: str) -> ArtifactRef:
    """Assemble the main path's model (scaler, encoder, SVC) into a bundle artifact."""
    from tasks.evaluate import score
    from tasks.ingest import feature_matrix, read_dataset

    frame, meta = read_dataset(scaled)
    _, y_test = feature_matrix(frame, "test")
    pred = np.asarray(read_json(svc, "predictions.json")["test"])
    metrics = score(y_test, pred, meta["classes"])
    metrics = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "n_test": int(len(y_test)),
               "source": meta["source"]}
    params = {"scaled": scaled.sha256, "encoder": encoder.sha256, "svc": svc.sha256, "config": config.model_dump()}
    with ArtifactWriter(root, "bundle", params) as w:
        shutil.copyfile(scaled.file("scaler.json"), w.path("scaler.json"))
        shutil.copyfile(encoder.file("encoder.keras"), w.path("encoder.keras"))
        shutil.copyfile(svc.file("svc.skops"), w.path("svc.skops"))
        w.write_json("labels.json", {"label": meta.get("label"), "classes": meta["classes"]})
        w.write_json("features.json", meta["feature_names"])
        w.write_json("config.json", config.model_dump(mode="json"))
        w.write_json("metrics.json", metrics)
        w.write_json(MANIFEST, {"format": FORMAT, "files": {n: sha256_file(w.path(n)) for n in FILES}})
    return w.ref


def verify(path: str | Path) -> dict[str, Any]:
    """Check a bundle directory against its manifest; returns the manifest.

    Raises:
        BundleError: not a directory, no or unreadable manifest, a file missing, or a hash
            that differs (one line naming the file).
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: no model bundle here")
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise BundleError(f"{root}: incomplete bundle, {MANIFEST} is missing") from None
    except (OSError, ValueError) as e:
        raise BundleError(f"{root / MANIFEST}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{root / MANIFEST}: not a {FORMAT} manifest")
    listed = manifest["files"]
    for name in FILES:
        if name not in listed:
            raise BundleError(f"{root / MANIFEST}: does not list {name}")
    bad = damaged_file(root, listed)
    if bad is not None:
        name, what = bad
        if what == "missing":
            raise BundleError(f"{root / name}: incomplete bundle, file is missing")
        raise BundleError(f"{root / name}: SHA-256 differs from the manifest; the bundle was altered, refusing to load it")
    return manifest


class Bundle:
    """A verified, loaded model bundle; a scikit-learn-style classifier on the raw features.

    Attributes:
        classes_: the original class values, index order (as scikit-learn's ``classes_``).
        feature_names_in_: the input columns, in order.
        label: the label column's name in the training data (None for built-ins).
        metrics: the test metrics recorded when the model was trained.
    """

    def __init__(self, path: str | Path):
        from tasks.encoder import load_feature_model
        from tasks.svc import load_svc

        self.path = Path(path)
        self.manifest = verify(self.path)
        labels = json.loads((self.path / "labels.json").read_text())
        self.classes_ = np.asarray(labels["classes"], dtype=object if any(isinstance(c, str) for c in labels["classes"]) else None)
        self.label = labels.get("label")
        self.feature_names_in_ = list(json.loads((self.path / "features.json").read_text()))
        self.scaler = json.loads((self.path / "scaler.json").read_text())
        self.config = Config.model_validate(json.loads((self.path / "config.json").read_text()))
        self.metrics = json.loads((self.path / "metrics.json").read_text())
        self.feature_model = load_feature_model(self.path / "encoder.keras")
        self.svc = load_svc(self.path / "svc.skops")

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        return cls(path)

    @property
    def n_features_in_(self) -> int:
        return len(self.feature_names_in_)

    def _matrix(self, X: Any, where: str = "input") -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            check_columns(list(X.columns), self.feature_names_in_, where, allowed_extra=())
            X = X[self.feature_names_in_]
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise InputError(f"{where}: expected (rows, {self.n_features_in_}) features, got shape {X.shape}")
        if not np.isfinite(X).all():
            raise InputError(f"{where}: features must be finite numbers")
        return X

    def features(self, X: Any) -> np.ndarray:
        """Raw rows -> the encoder's features (n, k), exactly as the pipeline computes them."""
        from tasks.features import embed
        from tasks.scale import apply_scaler

        scaled = apply_scaler(self._matrix(X), self.scaler)
        return embed(self.feature_model, scaled, self.config.features.batch_size).astype(np.float64)

    def predict_index(self, X: Any) -> np.ndarray:
        return self.svc.predict(self.features(X)).astype(np.int64)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels, in the original label values."""
        return self.classes_[self.predict_index(X)]

    def decision_function(self, X: Any) -> np.ndarray:
        """SVC decision scores: (n,) for two classes (positive: ``classes_[1]``), else (n, k) one-vs-rest."""
        return self.svc.decision_function(self.features(X))

    def score(self, X: Any, y: Any) -> float:
        """Mean accuracy on (X, y), with y in the original label values."""
        return float(np.mean(self.predict(X) == np.asarray(y, dtype=self.classes_.dtype)))


def check_columns(columns: list[str], expected: list[str], where: str, allowed_extra: tuple[str, ...]) -> None:
    """Refuse a missing or unexpected column (one line naming it)."""
    have = set(columns)
    missing = [c for c in expected if c not in have]
    if missing:
        raise InputError(f"{where}: missing column {missing[0]!r} (the model reads {len(expected)} feature columns)")
    wanted = set(expected) | set(allowed_extra)
    extra = [c for c in columns if c not in wanted]
    if extra:
        raise InputError(f"{where}: unexpected column {extra[0]!r} (not a feature of this model)")

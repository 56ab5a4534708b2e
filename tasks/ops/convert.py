"""A bundle and a `MarginClassifier` are the same model: convert one into the other.

Kept apart from `tasks.ops.bundle`, so the ``bundle`` stage's code version (which covers
every module it imports) does not depend on the estimator's code.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.estimator import SECTIONS, MarginClassifier
from tasks.core.networks import save_keras
from tasks.core.svm import save_svc
from tasks.ops.bundle import Bundle, making_config, write_bundle
from tasks.store.kinds import ENCODER_MODEL, SCALER, SVC_MODEL


def to_estimator(bundle: Bundle) -> MarginClassifier:
    """A loaded bundle as a fitted `MarginClassifier` (approach ``features_svc``).

    Its settings are the stored config's sections, keeping only keys today's config knows.
    """

    def known(name: str) -> dict[str, Any] | None:
        section = bundle.config.get(name)
        if not isinstance(section, dict):
            return None
        return {k: v for k, v in section.items() if k in SECTIONS[name].model_fields}

    encoder = known("encoder")
    model = MarginClassifier("features_svc", scale=known("scale"), encoder=encoder, features=known("features"),
                             svc=known("svc"), random_state=(encoder or {}).get("seed", 0))
    model.classes_ = bundle.classes_
    model.n_features_in_ = bundle.n_features_in_
    model.feature_names_in_ = np.asarray(bundle.feature_names_in_, dtype=object)
    model.scaler_ = bundle.scaler
    model.encoder_ = bundle.encoder
    model.svc_ = bundle.svc
    model.search_ = None
    return model


def export_bundle(model: MarginClassifier, directory: str | Path, metrics: dict[str, Any] | None = None) -> Path:
    """Write a fitted ``features_svc`` `MarginClassifier` as a bundle directory (which must not exist).

    The directory appears whole or not at all (written beside it, then renamed). `Bundle.load` reads it.

    Raises:
        ValueError: the model is not a fitted ``features_svc`` MarginClassifier, or the directory exists.
    """
    if getattr(model, "approach", None) != "features_svc" or not hasattr(model, "svc_"):
        raise ValueError("only a fitted MarginClassifier with approach='features_svc' makes a bundle")
    target = Path(directory)
    if target.exists():
        raise ValueError(f"{target}: already exists")
    names = [str(c) for c in getattr(model, "feature_names_in_", [f"x{i}" for i in range(model.n_features_in_)])]
    sections = {name: model._config(name) for name in ("scale", "encoder", "features", "svc")}
    config = making_config({"data": {}, **sections})
    classes = [c.item() if hasattr(c, "item") else c for c in model.classes_]
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        writer = _DirectoryWriter(tmp)
        sources = {SCALER: lambda p: p.write_text(json.dumps(_scaler_json(model.scaler_), indent=2, sort_keys=True) + "\n"),
                   ENCODER_MODEL: lambda p: save_keras(model.encoder_, p), SVC_MODEL: lambda p: save_svc(model.svc_, p)}
        write_bundle(writer, sources, {"label": None, "classes": classes}, names, config, metrics or {})
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


class _DirectoryWriter:
    """The two methods of `ArtifactWriter` that `write_bundle` uses, on a plain directory."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / name

    def write_json(self, name: str, obj: Any) -> None:
        self.path(name).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _scaler_json(scaler: dict[str, Any]) -> dict[str, list[float]]:
    return {k: [float(v) for v in np.asarray(scaler[k], dtype=np.float64)] for k in ("mean", "scale")}

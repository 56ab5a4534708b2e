"""Stage bundle: the main path's model (scaler, encoder, SVC) as one verified directory.

Output artifact ``bundle``: the files `tasks.ops.bundle` describes. It receives only the
config sections that made the model, so a change elsewhere (``rff_svm.epochs``,
``retrain.tolerance``) leaves it cached and registers no new version.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.core.metrics import score
from tasks.ops.bundle import making_config, write_bundle
from tasks.store.artifacts import ArtifactRef, ArtifactWriter, read_json, sha256_text
from tasks.store.cache import code_version, stage
from tasks.store.kinds import ENCODER_MODEL, SCALER, SOLVER, SVC_MODEL
from tasks.store.outputs import read_model_outputs
from tasks.store.tables import labels, read_meta

# the stage functions whose code makes the bundled model's files
MODEL_CODE = ("tasks.ingest:ingest", "tasks.scale:scale", "tasks.train_encoder:train_encoder",
              "tasks.extract_features:extract_features", "tasks.train_svc:train_svc")


def model_code_version() -> str:
    """One digest of the code (and library versions) that made the bundled model: `MODEL_CODE`."""
    return sha256_text("\n".join(code_version(m) for m in MODEL_CODE))


@stage("bundle", imports=())
def bundle(scaled: ArtifactRef, encoder: ArtifactRef, svc: ArtifactRef, config: dict[str, Any],
           root: str) -> ArtifactRef:
    """Assemble the bundle; ``config``: section name -> section, for `tasks.ops.bundle.IDENTITY_SECTIONS`."""
    meta = read_meta(scaled)
    y_test = labels(scaled, "test")
    pred = np.asarray(read_model_outputs(svc)["predictions"]["test"])
    s = score(y_test, pred, meta["classes"])
    metrics = {"accuracy": s["accuracy"], "macro_f1": s["macro_f1"], "n_test": int(len(y_test)),
               "source": meta["source"]}
    params = {"scaled": scaled.sha256, "encoder": encoder.sha256, "svc": svc.sha256}
    sources = {SCALER: scaled.file(SCALER), ENCODER_MODEL: encoder.file(ENCODER_MODEL),
               SVC_MODEL: svc.file(SVC_MODEL)}
    made_from = {"data_sha256": meta.get("source_sha256"), "code_sha256": model_code_version()}
    with ArtifactWriter(root, "bundle", params) as w:
        write_bundle(w, sources, {"label": meta.get("label"), "classes": meta["classes"]}, meta["feature_names"],
                     making_config(config), metrics,
                     solver=read_json(svc, SOLVER) if SOLVER in svc.files else None, made_from=made_from)
    return w.ref

"""Stage train_encoder: a Keras encoder (MLP, 1-D or 2-D CNN) trained with a head on the training rows.

Output artifact ``encoder``: ``encoder.keras`` (the whole classifier; load with
``compile=False``), ``config.json`` (the encoder section plus input width and class count,
enough to rebuild it), ``history.json`` (per-epoch metrics).
"""

from __future__ import annotations

from tasks.config import EncoderConfig
from tasks.core.networks import FEATURE_LAYER, best_epoch, resolve_architecture, train
from tasks.store.artifacts import ArtifactRef, ArtifactWriter
from tasks.store.cache import stage
from tasks.store.runlog import epoch_progress, stage_logger
from tasks.store.tables import split_matrices


@stage("train_encoder")
def train_encoder(scaled: ArtifactRef, config: EncoderConfig, root: str) -> ArtifactRef:
    """Train on the ``scaled`` artifact's train rows (early stopping on val); write the ``encoder`` artifact."""
    data, meta = split_matrices(scaled)
    (X_train, y_train), n_classes, source = data["train"], len(meta["classes"]), str(meta["source"])
    model, history = train(X_train, y_train, *data["val"], n_classes, config, source,
                           callbacks=(epoch_progress(config.epochs, "train_encoder"),))
    best = best_epoch(history)
    stage_logger().info(
        "train_encoder stopped after %d epochs; best epoch %d (val_accuracy=%.4f)",
        len(history["loss"]), best + 1, history.get("val_accuracy", [float("nan")] * len(history["loss"]))[best],
    )
    with ArtifactWriter(root, "encoder", {"scaled": scaled.sha256, "config": config.model_dump()}) as w:
        model.save(w.path("encoder.keras"))
        w.write_json("config.json", {
            **config.model_dump(), "n_features": X_train.shape[1], "n_classes": n_classes,
            "resolved_kind": resolve_architecture(config, X_train.shape[1], source)[0],
            "feature_layer": FEATURE_LAYER, "best_epoch": best + 1,
        })
        w.write_json("history.json", history)
    return w.ref

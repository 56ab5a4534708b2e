"""Stage 3, train_encoder: a Keras MLP trained with a softmax head on the training rows.

The last hidden layer, named ``features``, is what `extract_features` reads out. Early
stopping watches the validation loss and restores the best weights.

Output artifact ``encoder``: ``encoder.keras`` (the whole classifier; load with
``compile=False``), ``config.json`` (the encoder section plus input width and class
count, enough to rebuild it), ``history.json`` (per-epoch metrics).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.artifacts import ArtifactRef, ArtifactWriter
from tasks.cache import stage
from tasks.config import EncoderConfig
from tasks.ingest import feature_matrix, read_dataset
from tasks.log import stage_logger

FEATURE_LAYER = "features"


def build_encoder(n_features: int, n_classes: int, config: EncoderConfig):
    """inputs (batch, d) -> Dense+Dropout per width -> ``features`` (batch, hidden[-1]) -> softmax (batch, k)."""
    import keras

    inputs = keras.Input(shape=(n_features,), name="inputs")
    x = inputs
    for i, width in enumerate(config.hidden):
        last = i == len(config.hidden) - 1
        x = keras.layers.Dense(width, activation=config.activation, name=FEATURE_LAYER if last else f"hidden_{i}")(x)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, seed=config.seed + i, name=f"dropout_{i}")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name="encoder")


def _progress_callback(epochs: int):
    import keras

    log = stage_logger()

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            shown = " ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()) if k != "learning_rate")
            log.info("train_encoder epoch %d/%d %s", epoch + 1, epochs, shown)

    return EpochLog()


def train(
    X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
    n_classes: int, config: EncoderConfig,
) -> tuple[Any, dict[str, list[float]]]:
    """Fit the encoder; returns the Keras model and its history.

    Args:
        X_train: (n, d) scaled rows; y_train: (n,) class indices.
        X_val, y_val: the validation rows, for early stopping.
    Returns:
        (model, history) with history mapping metric name -> per-epoch values.
    """
    import keras

    keras.utils.set_random_seed(config.seed)
    model = build_encoder(X_train.shape[1], n_classes, config)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    hist = model.fit(
        X_train.astype("float32"), y_train,
        validation_data=(X_val.astype("float32"), y_val),
        epochs=config.epochs, batch_size=config.batch_size, shuffle=True, verbose=0,
        callbacks=[stop, _progress_callback(config.epochs)],
    )
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    return model, history


@stage("train_encoder")
def train_encoder(scaled: ArtifactRef, config: EncoderConfig, root: str) -> ArtifactRef:
    """Train on the ``scaled`` artifact's train rows; write the ``encoder`` artifact."""
    frame, meta = read_dataset(scaled)
    X_train, y_train = feature_matrix(frame, "train")
    X_val, y_val = feature_matrix(frame, "val")
    n_classes = len(meta["classes"])
    model, history = train(X_train, y_train, X_val, y_val, n_classes, config)
    best = int(np.argmin(history["val_loss"])) if history.get("val_loss") else len(history["loss"]) - 1
    stage_logger().info(
        "train_encoder stopped after %d epochs; best epoch %d (val_accuracy=%.4f)",
        len(history["loss"]), best + 1, history.get("val_accuracy", [float("nan")])[best],
    )
    params = {"scaled": scaled.sha256, "config": config.model_dump()}
    with ArtifactWriter(root, "encoder", params) as w:
        model.save(w.path("encoder.keras"))
        w.write_json("config.json", {
            **config.model_dump(), "n_features": X_train.shape[1], "n_classes": n_classes,
            "feature_layer": FEATURE_LAYER, "best_epoch": best + 1,
        })
        w.write_json("history.json", history)
    return w.ref


def load_feature_model(encoder: ArtifactRef):
    """The saved encoder cut at its ``features`` layer: (batch, d) -> (batch, hidden[-1])."""
    import keras

    model = keras.models.load_model(encoder.file("encoder.keras"), compile=False, safe_mode=True)
    return keras.Model(model.input, model.get_layer(FEATURE_LAYER).output)

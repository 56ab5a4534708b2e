"""Stage 3, train_encoder: a Keras encoder (MLP, 1-D or 2-D CNN) trained with a head on the training rows.

The last hidden layer, named ``features``, is what `extract_features` reads out. Early
stopping watches the validation loss and restores the best weights.

Output artifact ``encoder``: ``encoder.keras`` (the whole classifier; load with
``compile=False``), ``config.json`` (the encoder section plus input width and class
count, enough to rebuild it), ``history.json`` (per-epoch metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.artifacts import ArtifactRef, ArtifactWriter
from tasks.cache import stage
from tasks.config import EncoderConfig
from tasks.errors import InputError
from tasks.ingest import feature_matrix, read_dataset
from tasks.log import stage_logger

FEATURE_LAYER = "features"


def resolve_architecture(config: EncoderConfig, n_features: int, source: str) -> tuple[str, list[int] | None]:
    """The encoder kind and input shape for this data: ``auto`` picks per dataset.

    Raises:
        InputError: an ``input_shape`` whose size is not the number of features.
    """
    kind = config.kind
    if kind == "auto":
        kind = {"mnist1d": "cnn1d", "digits": "cnn2d"}.get(source, "mlp")
    shape = config.input_shape
    if kind == "cnn2d":
        if shape is None and source == "digits":
            shape = [8, 8, 1]
        if shape is None:
            raise InputError("encoder.kind = 'cnn2d' needs encoder.input_shape, e.g. [8, 8, 1]")
        shape = [*shape, 1] if len(shape) == 2 else list(shape)
        if int(np.prod(shape)) != n_features:
            raise InputError(f"encoder.input_shape {shape} holds {int(np.prod(shape))} values but the data has {n_features} features")
    return kind, shape


def build_encoder(n_features: int, n_classes: int, config: EncoderConfig, source: str = ""):
    """The encoder with its training head.

    Shapes: inputs (batch, d) -> [reshape, Conv + MaxPool per ``filters`` for cnn1d/cnn2d,
    flatten] -> Dense+Dropout per ``hidden`` -> ``features`` (batch, hidden[-1]) -> head:
    softmax (batch, k), or linear (batch, 1 or k) for the squared-hinge objective.
    """
    import keras

    from tasks.margin import glorot, n_outputs

    kind, shape = resolve_architecture(config, n_features, source)
    layers = keras.layers
    inputs = keras.Input(shape=(n_features,), name="inputs")
    x = inputs
    if config.augment_shift:
        if kind == "mlp":
            raise InputError("encoder.augment_shift needs encoder.kind = 'cnn1d' or 'cnn2d' (rows must be signals or images)")
        from tasks.layers import RandomShift

        x = RandomShift(config.augment_shift, shape if kind == "cnn2d" else None, seed=config.seed, name="augment")(x)
    if kind in ("cnn1d", "cnn2d"):
        conv, pool = (layers.Conv1D, layers.MaxPooling1D) if kind == "cnn1d" else (layers.Conv2D, layers.MaxPooling2D)
        x = layers.Reshape((n_features, 1) if kind == "cnn1d" else tuple(shape), name="reshape")(x)
        for i, f in enumerate(config.filters):
            x = conv(f, config.kernel_size, padding="same", activation=config.activation,
                     kernel_initializer=glorot(config.seed, i), name=f"conv_{i}")(x)
            if min(x.shape[1:-1]) >= 2:
                x = pool(2, name=f"pool_{i}")(x)
        if config.pooling == "flatten":
            x = layers.Flatten(name="flatten")(x)
        elif kind == "cnn1d":
            x = (layers.GlobalMaxPooling1D if config.pooling == "global_max" else layers.GlobalAveragePooling1D)(name="pool")(x)
        else:
            x = (layers.GlobalMaxPooling2D if config.pooling == "global_max" else layers.GlobalAveragePooling2D)(name="pool")(x)
    for i, width in enumerate(config.hidden):
        last = i == len(config.hidden) - 1
        x = layers.Dense(width, activation=config.activation, kernel_initializer=glorot(config.seed, 100 + i),
                         name=FEATURE_LAYER if last else f"hidden_{i}")(x)
        if config.dropout > 0:
            x = layers.Dropout(config.dropout, seed=config.seed + i, name=f"dropout_{i}")(x)
    if config.objective == "softmax":
        outputs = layers.Dense(n_classes, activation="softmax", kernel_initializer=glorot(config.seed, 200), name="head")(x)
    else:
        outputs = layers.Dense(n_outputs(n_classes, "squared_hinge"), kernel_initializer=glorot(config.seed, 200), name="head")(x)
    return keras.Model(inputs, outputs, name="encoder")


def _progress_callback(epochs: int, name: str):
    """Logs each epoch, and keeps a Prefect progress artifact up to date inside a task run."""
    import keras
    from prefect.context import TaskRunContext

    log = stage_logger()
    in_run = TaskRunContext.get() is not None

    class EpochLog(keras.callbacks.Callback):
        artifact_id = None

        def on_train_begin(self, logs=None) -> None:
            if in_run:
                from prefect.artifacts import create_progress_artifact

                self.artifact_id = create_progress_artifact(progress=0.0, description=f"{name}: epochs done (%)")

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            shown = " ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()) if k != "learning_rate")
            log.info("%s epoch %d/%d %s", name, epoch + 1, epochs, shown)
            if self.artifact_id is not None:
                from prefect.artifacts import update_progress_artifact

                update_progress_artifact(self.artifact_id, progress=100.0 * (epoch + 1) / epochs)

        def on_train_end(self, logs=None) -> None:
            if self.artifact_id is not None:
                from prefect.artifacts import update_progress_artifact

                update_progress_artifact(self.artifact_id, progress=100.0)

    return EpochLog()


def train(
    X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
    n_classes: int, config: EncoderConfig, source: str = "", name: str = "train_encoder",
) -> tuple[Any, dict[str, list[float]]]:
    """Fit the encoder with its head; returns the Keras model and its history.

    Args:
        X_train: (n, d) scaled rows; y_train: (n,) class indices.
        X_val, y_val: the validation rows, for early stopping.
        source: dataset name, for ``kind = "auto"``.
    Returns:
        (model, history) with history mapping metric name -> per-epoch values.
    """
    import keras

    from tasks.margin import fit_keras, hinge_targets, seeded_keras

    if config.objective == "softmax":
        loss, t_train, t_val, metrics = "sparse_categorical_crossentropy", y_train, y_val, ["accuracy"]
    else:
        loss, metrics = "squared_hinge", []
        t_train = hinge_targets(y_train, n_classes, loss)
        t_val = hinge_targets(y_val, n_classes, loss)
    with seeded_keras(config.seed):
        model = build_encoder(X_train.shape[1], n_classes, config, source)
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
        history = fit_keras(model, X_train, t_train, loss, config.epochs, config.batch_size, config.learning_rate,
                            validation=(X_val, t_val), metrics=metrics,
                            callbacks=[stop, _progress_callback(config.epochs, name)])
    return model, history


@stage("train_encoder")
def train_encoder(scaled: ArtifactRef, config: EncoderConfig, root: str) -> ArtifactRef:
    """Train on the ``scaled`` artifact's train rows; write the ``encoder`` artifact."""
    frame, meta = read_dataset(scaled)
    X_train, y_train = feature_matrix(frame, "train")
    X_val, y_val = feature_matrix(frame, "val")
    n_classes = len(meta["classes"])
    model, history = train(X_train, y_train, X_val, y_val, n_classes, config, str(meta["source"]))
    best = int(np.argmin(history["val_loss"])) if history.get("val_loss") else len(history["loss"]) - 1
    stage_logger().info(
        "train_encoder stopped after %d epochs; best epoch %d (val_accuracy=%.4f)",
        len(history["loss"]), best + 1, history.get("val_accuracy", [float("nan")] * len(history["loss"]))[best],
    )
    params = {"scaled": scaled.sha256, "config": config.model_dump()}
    with ArtifactWriter(root, "encoder", params) as w:
        model.save(w.path("encoder.keras"))
        w.write_json("config.json", {
            **config.model_dump(), "n_features": X_train.shape[1], "n_classes": n_classes,
            "resolved_kind": resolve_architecture(config, X_train.shape[1], str(meta["source"]))[0],
            "feature_layer": FEATURE_LAYER, "best_epoch": best + 1,
        })
        w.write_json("history.json", history)
    return w.ref


def load_feature_model(encoder: ArtifactRef | str | Path):
    """The saved encoder (an ``encoder`` artifact or a ``.keras`` path) cut at its ``features`` layer.

    Shapes: (batch, d) -> (batch, hidden[-1]). Loaded with ``safe_mode=True``: no lambdas.
    """
    import keras

    import tasks.layers  # noqa: F401  (registers marginflow's layers for deserialisation)

    path = encoder.file("encoder.keras") if isinstance(encoder, ArtifactRef) else Path(encoder)
    model = keras.models.load_model(path, compile=False, safe_mode=True)
    return keras.Model(model.input, model.get_layer(FEATURE_LAYER).output)

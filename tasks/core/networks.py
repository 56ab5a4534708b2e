"""Keras encoders (MLP, 1-D or 2-D CNN) with a training head, their training, and reading out features.

The last hidden layer, named ``features``, is what the SVC sees. Early stopping watches
the validation loss and restores the best weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.config import EncoderConfig
from tasks.core.margin import fit_keras, glorot, hinge_targets, n_outputs, seeded_keras
from tasks.errors import InputError

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


def check_against_data(config: EncoderConfig, n_features: int, source: str) -> None:
    """Refuse encoder settings that cannot fit data of ``n_features`` columns (before anything runs).

    Raises:
        InputError: an input shape that does not hold the features, or shifts on a table.
    """
    kind, _ = resolve_architecture(config, n_features, source)
    if config.augment_shift and kind == "mlp":
        raise InputError("encoder.augment_shift needs encoder.kind = 'cnn1d' or 'cnn2d' (rows must be signals or images)")


def build_encoder(n_features: int, n_classes: int, config: EncoderConfig, source: str = ""):
    """The encoder with its training head.

    Shapes: inputs (batch, d) -> [reshape, Conv + MaxPool per ``filters`` for cnn1d/cnn2d,
    flatten] -> Dense+Dropout per ``hidden`` -> ``features`` (batch, hidden[-1]) -> head:
    softmax (batch, k), or linear (batch, 1 or k) for the squared-hinge objective.
    """
    import keras

    kind, shape = resolve_architecture(config, n_features, source)
    layers = keras.layers
    inputs = keras.Input(shape=(n_features,), name="inputs")
    x = inputs
    if config.augment_shift:
        if kind == "mlp":
            raise InputError("encoder.augment_shift needs encoder.kind = 'cnn1d' or 'cnn2d' (rows must be signals or images)")
        from tasks.core.layers import RandomShift

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


def train(
    X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
    n_classes: int, config: EncoderConfig, source: str = "", callbacks: tuple = (),
) -> tuple[Any, dict[str, list[float]]]:
    """Fit the encoder with its head; returns the Keras model and its history.

    Args:
        X_train: (n, d) scaled rows; y_train: (n,) class indices.
        X_val, y_val: the validation rows, for early stopping.
        source: dataset name, for ``kind = "auto"``.
        callbacks: extra Keras callbacks (progress reporting).
    Returns:
        (model, history) with history mapping metric name -> per-epoch values.
    """
    import keras

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
                            callbacks=[stop, *callbacks])
    return model, history


def best_epoch(history: dict[str, list[float]]) -> int:
    """The 0-based epoch whose weights early stopping kept (lowest validation loss; the last without one)."""
    return int(np.argmin(history["val_loss"])) if history.get("val_loss") else len(history["loss"]) - 1


# What a marginflow encoder or margin model is made of: Keras modules and classes, and marginflow's layers.
KERAS_CLASSES = {
    "keras.layers": {"InputLayer", "Dense", "Dropout", "Conv1D", "Conv2D", "MaxPooling1D", "MaxPooling2D", "Flatten",
                     "Reshape", "GlobalMaxPooling1D", "GlobalAveragePooling1D", "GlobalMaxPooling2D",
                     "GlobalAveragePooling2D"},
    "keras.src.models.functional": {"Functional"},
    "keras.initializers": {"GlorotUniform", "Zeros", "Constant"},
    "keras.regularizers": {"L2"},
    "keras.optimizers": {"Adam"},
    "keras": {"DTypePolicy"},
    None: {"__keras_tensor__"},
}
MARGINFLOW_LAYERS = {"marginflow>RandomShift", "marginflow>RandomFourierFeatures"}


def check_keras_layers(path: str | Path) -> None:
    """Refuse a ``.keras`` file that holds a class marginflow does not build (a ``Lambda`` layer, say).

    Reads the file's ``config.json`` only; nothing is deserialised.

    Raises:
        ValueError: naming the first class that is not allowed (or an unreadable file).
    """
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .keras file ({e})") from None
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "class_name" in node:
                module, name, registered = node.get("module"), node["class_name"], node.get("registered_name")
                custom = registered in MARGINFLOW_LAYERS and str(module).startswith("tasks.")
                if not custom and name not in KERAS_CLASSES.get(module, set()):
                    raise ValueError(f"{path}: holds {module}.{name}, not a layer marginflow builds; refusing it")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def load_encoder(path: str | Path):
    """A saved encoder with its head (``.keras``), loaded with ``safe_mode=True``: no lambdas."""
    import keras

    import tasks.core.layers  # noqa: F401  (registers marginflow's layers for deserialisation)

    return keras.models.load_model(Path(path), compile=False, safe_mode=True)


def cut_at_features(encoder):
    """The encoder cut at its ``features`` layer: (batch, d) -> (batch, hidden[-1])."""
    import keras

    return keras.Model(encoder.input, encoder.get_layer(FEATURE_LAYER).output)


def load_feature_model(path: str | Path):
    """A saved encoder (``.keras``) cut at its ``features`` layer."""
    return cut_at_features(load_encoder(path))


def embed(model, X: np.ndarray, batch_size: int) -> np.ndarray:
    """(n, d) rows -> (n, k) float32 features, ``batch_size`` rows per forward pass."""
    out = [np.asarray(model(X[i : i + batch_size].astype("float32"), training=False)) for i in range(0, len(X), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.output_shape[-1]), np.float32)

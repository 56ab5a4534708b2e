"""Keras encoders (MLP, 1-D or 2-D CNN) with a training head, their training, and reading out features.

The last hidden layer, named ``features``, is what the SVC sees. Early stopping watches
the validation loss and restores the best weights.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from tasks.config import EncoderConfig
from tasks.core.layout import Layout
from tasks.core.margin import (
    TableRows,
    batches_per_pass,
    fit_keras,
    full_batches,
    glorot,
    hinge_targets,
    n_outputs,
    padded_forward,
    seeded_keras,
    step_budget,
)
from tasks.errors import InputError

FEATURE_LAYER = "features"


# the network ``encoder.kind = "auto"`` means where no search runs (the estimator): the layout's usual one
DEFAULT_KIND = {"image": "cnn2d", "sequence": "cnn1d", "table": "mlp"}


def resolve_architecture(config: EncoderConfig, layout: Layout) -> tuple[str, list[int]]:
    """The encoder kind and the shape its first layer reshapes a row to, for data of ``layout``.

    ``auto`` is the layout's usual network (`DEFAULT_KIND`); ``cnn1d`` reads a sequence as
    ``[T, C]`` and any other row as ``[d, 1]``; ``cnn2d`` needs image rows.

    Raises:
        InputError: ``cnn2d`` on rows that are not images, or shifts on a table.
    """
    kind = DEFAULT_KIND[layout.kind] if config.kind == "auto" else config.kind
    d = math.prod(layout.shape)
    if kind == "cnn2d":
        if layout.kind != "image":
            raise InputError(f"encoder.kind = 'cnn2d' needs image rows, but the data is a {layout.kind} "
                             f"({layout.reason}); set data.layout = 'image' and data.shape, e.g. [8, 8, 1]")
        shape = list(layout.shape)
    elif kind in ("cnn1d", "rocket"):
        shape = list(layout.shape) if layout.kind == "sequence" else [d, 1]
    else:
        shape = [d]
    if config.augment_shift and kind in ("mlp", "identity", "rocket"):
        raise InputError("encoder.augment_shift needs encoder.kind = 'cnn1d' or 'cnn2d' (rows must be signals or images)")
    for key in ("augment_rotate", "augment_scale"):
        if getattr(config, key) and kind != "cnn2d":
            raise InputError(f"encoder.{key} needs encoder.kind = 'cnn2d' (rows must be images)")
    return kind, shape


def check_against_data(config: EncoderConfig, layout: Layout) -> None:
    """Refuse encoder settings that cannot fit data of ``layout`` (before anything runs).

    Raises:
        InputError: ``cnn2d`` on rows that are not images, or shifts on a table.
    """
    resolve_architecture(config, layout)


def build_encoder(n_features: int, n_classes: int, config: EncoderConfig, layout: Layout | None = None,
                  rocket: tuple[Any, dict[str, list[float]] | None] | None = None):
    """The encoder with its training head.

    Shapes: inputs (batch, d) -> [reshape, Conv (+ BatchNorm) + MaxPool per ``filters`` for
    cnn1d/cnn2d, flatten or global pooling] -> Dense+Dropout per ``hidden`` -> ``features``
    (batch, hidden[-1]) -> head: softmax (batch, k), or linear (batch, 1 or k) for the
    squared-hinge objective. ``identity``: inputs -> ``features`` (batch, d) -> head. ``rocket``:
    inputs -> `tasks.core.layers.MiniRocket` (standardised features) as ``features`` -> head; ``rocket`` =
    `fit_rocket`'s (transform, the scaler it undoes or None, the features' means and scales).
    """
    import keras

    layout = layout or Layout("table", [n_features], "")
    kind, shape = resolve_architecture(config, layout)
    layers = keras.layers
    inputs = keras.Input(shape=(n_features,), name="inputs")
    x = inputs
    if kind == "identity":
        x = layers.Identity(name=FEATURE_LAYER)(x)
    if kind == "rocket":
        from tasks.core.layers import MiniRocket

        if rocket is None:
            raise ValueError("encoder.kind = 'rocket' is built from its fitted transform (fit_rocket)")
        params, scaler, moments = rocket
        x = MiniRocket(shape[0], shape[1], params.dilations.tolist(), params.per_dilation.tolist(),
                       params.channels.tolist(), None if scaler is None else [scaler["mean"], scaler["scale"]],
                       biases=params.biases, standardize=True, moments=moments, name=FEATURE_LAYER)(x)
    if config.augment_rotate or config.augment_scale:
        from tasks.core.layers import RandomAffine

        x = RandomAffine(config.augment_rotate, config.augment_scale, shape, seed=config.seed, name="affine")(x)
    if config.augment_shift:
        from tasks.core.layers import RandomShift

        grid = shape if kind == "cnn2d" else ([shape[0], 1, shape[1]] if shape[1] > 1 else None)
        x = RandomShift(config.augment_shift, grid, seed=config.seed, name="augment")(x)
    if kind in ("cnn1d", "cnn2d"):
        conv, pool = (layers.Conv1D, layers.MaxPooling1D) if kind == "cnn1d" else (layers.Conv2D, layers.MaxPooling2D)
        x = layers.Reshape(tuple(shape), name="reshape")(x)
        for i, f in enumerate(config.filters):
            x = conv(f, config.kernel_size, padding="same", activation=None if config.batch_norm else config.activation,
                     kernel_initializer=glorot(config.seed, i), name=f"conv_{i}")(x)
            if config.batch_norm:
                x = layers.BatchNormalization(momentum=0.9, name=f"norm_{i}")(x)
                x = layers.Activation(config.activation, name=f"act_{i}")(x)
            if min(x.shape[1:-1]) >= 2:
                x = pool(2, name=f"pool_{i}")(x)
        if config.pooling == "flatten":
            x = layers.Flatten(name="flatten")(x)
        elif kind == "cnn1d":
            x = (layers.GlobalMaxPooling1D if config.pooling == "global_max" else layers.GlobalAveragePooling1D)(name="pool")(x)
        else:
            x = (layers.GlobalMaxPooling2D if config.pooling == "global_max" else layers.GlobalAveragePooling2D)(name="pool")(x)
    for i, width in enumerate(config.hidden if kind not in ("identity", "rocket") else ()):
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


def encoder_config_json(config: EncoderConfig, layout: Layout, n_features: int, n_classes: int, best_epoch: int) -> dict:
    """``config.json`` of an encoder: its section, input width, class count, the layout and kind it was built for."""
    return {**config.model_dump(), "n_features": n_features, "n_classes": n_classes,
            "layout": layout.to_json(), "resolved_kind": resolve_architecture(config, layout)[0],
            "feature_layer": FEATURE_LAYER, "best_epoch": best_epoch}


class BudgetSpent(Exception):
    """A fit was about to start after its search's deadline."""


def _objective(config: EncoderConfig, n_classes: int) -> tuple[str, list[str], Any]:
    """(Keras loss, metrics, class indices -> targets) of the encoder's training head."""
    if config.objective == "softmax":
        return "sparse_categorical_crossentropy", ["accuracy"], lambda y: y
    return "squared_hinge", [], lambda y: hinge_targets(y, n_classes, "squared_hinge")


ROCKET_FIT_ROWS = 2048  # a streamed training split: the biases come from a seeded sample of this many rows


def rocket_features(params, length: int, X: np.ndarray) -> np.ndarray:
    """MiniRocket's PPVs of rows ``X`` (n, T * C) under a fitted transform (`tasks.core.rocket.RocketParams`),
    computed by its Keras layer (unstandardised): what `tasks.core.rocket.transform` gives, fast."""
    from tasks.core.layers import MiniRocket

    return MiniRocket(length, params.n_channels, params.dilations.tolist(), params.per_dilation.tolist(),
                      params.channels.tolist(), biases=params.biases).features(X)


def fit_rocket(X_train: np.ndarray | TableRows, config: EncoderConfig, layout: Layout,
               scaler: dict[str, list[float]] | None) -> tuple[Any, dict[str, list[float]] | None, list[np.ndarray]]:
    """MiniRocket fitted on the training rows (`tasks.core.rocket.fit`), on the series themselves: ``scaler``
    (the rows' per-step standardisation) is undone first, and again by the layer on every row it reads; then
    the mean and standard deviation of each feature on the same rows (a constant feature: scale 1).

    Returns:
        (the transform, ``scaler``, [feature means, feature scales]): `build_encoder`'s ``rocket``.
    """
    from tasks.core import rocket

    _, (length, channels) = resolve_architecture(config, layout)
    if isinstance(X_train, TableRows):
        X = next(X_train.minibatches(min(len(X_train), ROCKET_FIT_ROWS), config.seed, lambda y: y))[0]
    else:
        X = np.asarray(X_train, dtype=np.float64)
    raw = X * np.asarray(scaler["scale"]) + np.asarray(scaler["mean"]) if scaler is not None else X
    params = rocket.fit(raw, length, channels, config.rocket_features, config.seed)
    F = rocket_features(params, length, raw)
    scale = F.std(axis=0)
    return params, scaler, [F.mean(axis=0), np.where(scale > 0, scale, 1.0).astype("float32")]


def _check_deadline(deadline: float | None) -> None:
    """Call holding the Keras lock: a fit queued behind others is refused once the budget is spent."""
    if deadline is not None and time.time() > deadline:
        raise BudgetSpent()


def train(
    X_train: np.ndarray | TableRows, y_train: np.ndarray | None, X_val: np.ndarray, y_val: np.ndarray,
    n_classes: int, config: EncoderConfig, layout: Layout | None = None, callbacks: tuple = (),
    *, deadline: float | None = None, scaler: dict[str, list[float]] | None = None,
) -> tuple[Any, dict[str, list[float]]]:
    """Fit the encoder with its head; returns the Keras model and its history.

    Args:
        X_train: (n, d) scaled rows, or `TableRows` to stream (then ``y_train`` is None);
            y_train: (n,) class indices. Length: `step_budget`.
        X_val, y_val: the validation rows, for early stopping.
        layout: the rows' layout (`tasks.core.layout`); a table when None.
        callbacks: extra Keras callbacks (progress reporting).
        deadline: a ``time.time()``; checked once this fit holds the Keras lock.
        scaler: the rows' scaler (``rocket`` reads the series unscaled).
    Returns:
        (model, history) with history mapping metric name -> per-epoch values (empty for
        ``identity`` and ``rocket``, which have nothing to train by gradient; their heads are untrained).
    Raises:
        BudgetSpent: ``deadline`` had passed when the fit could start.
    """
    n_features = X_val.shape[1]
    layout = layout or Layout("table", [n_features], "")
    kind = resolve_architecture(config, layout)[0]
    with seeded_keras(config.seed):
        _check_deadline(deadline)
        fitted = fit_rocket(X_train, config, layout, scaler) if kind == "rocket" else None
        model = build_encoder(n_features, n_classes, config, layout, fitted)
        if kind in ("identity", "rocket"):  # nothing to train by gradient
            return model, {}
        return model, _early_stopped_fit(model, X_train, y_train, X_val, y_val, n_classes, config, callbacks)


def _early_stopped_fit(model, X_train, y_train, X_val, y_val, n_classes: int, config: EncoderConfig,
                       callbacks: tuple) -> dict[str, list[float]]:
    """Fit ``model`` with the encoder's loss for `step_budget`, early stopping on val (call inside `seeded_keras`)."""
    import keras

    streamed = isinstance(X_train, TableRows)
    loss, metrics, targets = _objective(config, n_classes)
    budget = step_budget(X_train, config)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
    return fit_keras(model, X_train, targets if streamed else targets(y_train), loss, budget["epochs"],
                     config.batch_size, config.learning_rate, validation=(X_val, targets(y_val)),
                     metrics=metrics, callbacks=[stop, *callbacks],
                     steps_per_epoch=budget["steps_per_epoch"] if streamed else None, seed=config.seed)


def continue_training(
    model, X_train: np.ndarray | TableRows, y_train: np.ndarray | None, X_val: np.ndarray, y_val: np.ndarray,
    n_classes: int, config: EncoderConfig, callbacks: tuple = (), *, deadline: float | None = None,
) -> tuple[Any, dict[str, list[float]]]:
    """Train ``model`` (an encoder with its head, built by `build_encoder` and already trained) further, as
    `train` would (the same loss, early stopping on val, length `step_budget` of ``config``), with a fresh
    optimizer. Used by successive halving, whose survivors continue from their weights.

    Returns:
        (model, history of this continuation).
    Raises:
        BudgetSpent: ``deadline`` had passed when the fit could start.
    """
    with seeded_keras(config.seed):
        _check_deadline(deadline)
        return model, _early_stopped_fit(model, X_train, y_train, X_val, y_val, n_classes, config, callbacks)


def with_hinge_head(model, n_classes: int, seed: int):
    """``model`` (an encoder with a softmax head) with a fresh linear head for one-vs-rest squared hinge on its
    ``features`` layer: (batch, d) -> (batch, 1 or k). The layers below the head keep their trained weights."""
    import keras

    features = model.get_layer(FEATURE_LAYER).output
    x = features
    dropout = next((layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)
                    and layer.input is features), None)
    if dropout is not None:
        x = dropout(x)
    head = keras.layers.Dense(n_outputs(n_classes, "squared_hinge"), kernel_initializer=glorot(seed, 200), name="head")
    return keras.Model(model.input, head(x), name="encoder")


class Refitter:
    """Train one architecture again and again from the same initial weights (the folds of a search).

    The first `fit` builds and compiles the model; later ones restore its initial weights, zero
    the optimizer's state and fit again, so JAX reuses the compiled step instead of compiling a
    new model per fold. Each fit trains a fixed number of epochs without early stopping, from the
    same weights as a fresh build; the dropout and shift draws continue the model's seeded streams.
    """

    def __init__(self, n_features: int, n_classes: int, config: EncoderConfig, layout: Layout | None,
                 scaler: dict[str, list[float]] | None = None):
        self.args, self.model, self.initial = (n_features, n_classes, config, layout), None, None
        self.scaler = scaler

    def fit(self, X: np.ndarray, y: np.ndarray, epochs: int, deadline: float | None = None):
        """The model trained on (X, y) for ``epochs`` epochs from the initial weights (no early stopping).

        Raises:
            BudgetSpent: ``deadline`` had passed when the fit could start.
        """
        n_features, n_classes, config, layout = self.args
        loss, _, targets = _objective(config, n_classes)
        with seeded_keras(config.seed):
            _check_deadline(deadline)
            shaped = layout or Layout("table", [n_features], "")
            if resolve_architecture(config, shaped)[0] == "rocket":
                # its features are fitted, not trained: a fold's transform is fitted on that fold's rows
                return build_encoder(n_features, n_classes, config, shaped, fit_rocket(X, config, shaped, self.scaler))
            if self.model is None:
                self.model = build_encoder(n_features, n_classes, config, layout)
                self.initial = self.model.get_weights()
                fit_keras(self.model, X, targets(y), loss, epochs, config.batch_size, config.learning_rate)
                return self.model
            self.model.set_weights(self.initial)
            for v in self.model.optimizer.variables:
                if "learning_rate" not in v.path:
                    v.assign(np.zeros(v.shape, dtype=v.dtype))
            self.model.fit(full_batches(X.astype("float32"), targets(y), config.batch_size, config.seed),
                           steps_per_epoch=batches_per_pass(len(X), config.batch_size), epochs=epochs, shuffle=False,
                           verbose=0)
        return self.model


def best_epoch(history: dict[str, list[float]]) -> int:
    """The 0-based epoch whose weights early stopping kept (lowest validation loss; the last without one)."""
    if history.get("val_loss"):
        return int(np.argmin(history["val_loss"]))
    return max(len(history.get("loss", [])) - 1, 0)


# What a marginflow encoder or margin model is made of: Keras modules and classes, and marginflow's layers.
KERAS_CLASSES = {
    "keras.layers": {"InputLayer", "Dense", "Dropout", "Conv1D", "Conv2D", "MaxPooling1D", "MaxPooling2D", "Flatten",
                     "Reshape", "Identity", "Concatenate", "BatchNormalization", "Activation", "GlobalMaxPooling1D", "GlobalAveragePooling1D", "GlobalMaxPooling2D",
                     "GlobalAveragePooling2D"},
    "keras.src.models.functional": {"Functional"},
    "keras.initializers": {"GlorotUniform", "Zeros", "Ones", "Constant"},
    "keras.regularizers": {"L2"},
    "keras.optimizers": {"Adam"},
    "keras": {"DTypePolicy"},
    None: {"__keras_tensor__"},
}
MARGINFLOW_LAYERS = {"marginflow>RandomShift", "marginflow>RandomAffine", "marginflow>RandomFourierFeatures",
                     "marginflow>MiniRocket"}


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
            config = json.loads(z.read(KERAS_ARCHIVE_CONFIG))
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


# members of Keras's own .keras archive (a zip), not files of an artifact
KERAS_ARCHIVE_CONFIG, KERAS_ARCHIVE_METADATA = "config.json", "metadata.json"


def save_keras(model, path: str | Path) -> None:
    """``model.save(path)`` with the same bytes for the same model: Keras writes the time it saved
    (``metadata.json``, the zip entries' dates) and the memory address of shared objects (``shared_object_id``
    in ``config.json``). Those are fixed here (`tasks.core.stablezip`: dates to 1980-01-01, ids numbered in
    order of appearance), so a retrained identical network has the same SHA-256 and a registered model is
    recognised as such."""
    import json

    from tasks.core.stablezip import numbering, stable_save

    renumber = numbering(r'"shared_object_id":\s*(\d+)', '"shared_object_id": {}')

    def clean(entries: dict[str, bytes]) -> dict[str, bytes]:
        if KERAS_ARCHIVE_METADATA in entries:
            meta = json.loads(entries[KERAS_ARCHIVE_METADATA])
            meta.pop("date_saved", None)
            entries[KERAS_ARCHIVE_METADATA] = json.dumps(meta, sort_keys=True).encode()
        if KERAS_ARCHIVE_CONFIG in entries:
            entries[KERAS_ARCHIVE_CONFIG] = renumber(entries[KERAS_ARCHIVE_CONFIG].decode()).encode()
        return entries

    stable_save(path, model.save, clean)


def load_encoder(path: str | Path):
    """A saved encoder with its head (``.keras``), loaded with ``safe_mode=True``: no lambdas."""
    import keras

    import tasks.core.layers  # noqa: F401  (registers marginflow's layers for deserialisation)

    return keras.models.load_model(Path(path), compile=False, safe_mode=True)


def cut_at_features(encoder, name: str | None = None):
    """The encoder cut at its ``features`` layer: (batch, d) -> (batch, hidden[-1])."""
    import keras

    return keras.Model(encoder.input, encoder.get_layer(FEATURE_LAYER).output, name=name)


def ensemble_encoder(members: list, n_classes: int, seed: int):
    """One encoder of trained encoders ``members``: each cut at its ``features`` layer (a nested model,
    ``member_<i>``), side by side as ``features`` (batch, sum of their widths), then an untrained softmax head (as
    ``identity``'s: the SVC reads the features). Augmentation layers inside the members act only in training,
    and nothing trains it."""
    import keras

    inputs = keras.Input(shape=(int(members[0].inputs[0].shape[-1]),), name="inputs")
    parts = [cut_at_features(m, name=f"member_{i}")(inputs) for i, m in enumerate(members)]
    x = keras.layers.Concatenate(name=FEATURE_LAYER)(parts)
    outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_initializer=glorot(seed, 200), name="head")(x)
    return keras.Model(inputs, outputs, name="encoder")


def load_feature_model(path: str | Path):
    """A saved encoder (``.keras``) cut at its ``features`` layer."""
    return cut_at_features(load_encoder(path))


def embed(model, X: np.ndarray, batch_size: int) -> np.ndarray:
    """(n, d) rows -> (n, k) float32 features, ``batch_size`` rows per forward pass."""
    if len(X) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    from tasks.core.layers import MiniRocket

    if len(model.layers) == 2 and isinstance(model.layers[-1], MiniRocket):  # a rocket encoder's features
        return model.layers[-1].features(X)  # its own batches, and no compile per model
    return padded_forward(model.predict_on_batch, X, batch_size).astype(np.float32)

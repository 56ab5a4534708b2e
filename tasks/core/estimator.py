"""`MarginClassifier`: every marginflow approach as one scikit-learn estimator, made of the same
core functions the pipeline's stages call.

Usable in a ``Pipeline``, ``GridSearchCV`` and ``cross_val_score``; ``clone`` works;
parameters are stored unchanged by ``__init__`` and validated by ``fit``. The settings of
each part are dicts with the keys of its config section (`tasks.config`), reachable as
nested parameters: ``svc__C``, ``encoder__hidden``, ``rff__n_components`` ...

Persistence: ``pickle`` works, and so does skops with `TRUSTED_TYPES` (`save` / `load`):
Keras models travel as the bytes of a ``.keras`` file and are loaded with ``safe_mode``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from tasks.catalog import APPROACHES
from tasks.config import Config
from tasks.core.layout import Layout, resolve_layout
from tasks.core.margin import predicted_classes, rbf_gamma
from tasks.core.margin_models import build_linear_hinge, build_rff_svm, fit_keras_margin
from tasks.core.networks import cut_at_features, embed, resolve_architecture, train
from tasks.core.scaling import apply_scaler, fit_scaler
from tasks.core.svm import cv_row, fit_searched, grid, resolve_kernel, skops_load
from tasks.errors import InputError

# what the estimator offers, from the catalog: the approaches with margins (knn, the baseline, has none), the
# SVC ones (their C and gamma searched), those whose Keras fit watches a validation loss
MARGIN_APPROACHES = tuple(a.name for a in APPROACHES if a.margins)
SVC_APPROACHES = tuple(a.name for a in APPROACHES if a.margins and a.search)
EARLY_STOPPING = tuple(a.name for a in APPROACHES if a.margins and a.early_stopping)
# parameter name -> the config section its dict is validated as: the preprocessing, then each approach's section
SECTIONS = {name: Config.model_fields[name].annotation for name in (
    "scale", "encoder", "features", *dict.fromkeys(a.section for a in APPROACHES if a.margins))}
_KERAS_ATTRS = ("encoder_", "model_")

# Types a saved MarginClassifier is made of, for skops.io.load(..., trusted=TRUSTED_TYPES).
TRUSTED_TYPES = [
    "tasks.core.estimator.MarginClassifier",
    "sklearn.svm._classes.SVC",
]


def _keras_to_bytes(model) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "estimator.keras")
        model.save(path)
        with open(path, "rb") as f:
            return f.read()


def _keras_from_bytes(blob: bytes):
    import keras

    import tasks.core.layers  # noqa: F401  (registers marginflow's layers)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "estimator.keras")
        with open(path, "wb") as f:
            f.write(blob)
        return keras.models.load_model(path, compile=False, safe_mode=True)


class MarginClassifier(ClassifierMixin, BaseEstimator):
    """An SVM-style classifier: one of the approaches of `tasks.catalog`.

    Args:
        approach: ``features_svc`` (Keras encoder -> SVC on its features, the default),
            ``raw_svc`` (SVC on the scaled inputs), ``linear_hinge`` (linear Keras model,
            hinge loss + the SVM's L2), ``deep_hinge`` (the encoder trained end to end with
            squared hinge) or ``rff_svm`` (random Fourier features + a linear hinge head).
        scale, encoder, features, svc, linear_hinge, rff_svm: dicts of that config section's
            keys (None: its defaults). Keys not given keep their defaults.
        val_fraction: share of the training rows held out (stratified) for early stopping of
            the encoder (``features_svc``, ``deep_hinge``), unless ``fit`` gets
            ``validation_data``; when a class has too few rows to split, early stopping
            watches the training rows. The other approaches train on every row.
        random_state: seeds the validation split and every part whose dict sets no ``seed``.
        layout, shape: what a row is, as ``data.layout`` and ``data.shape`` (`tasks.core.layout`):
            inferred from the column names by default (numbered names such as ``px0 .. px783``;
            a NumPy array's columns count as unnamed ``0 .. d-1``). ``encoder.kind = "auto"``
            here is the layout's usual network (``cnn2d``, ``cnn1d`` or ``mlp``), not a search.

    Attributes (after ``fit``):
        classes_: (k,) the class labels; n_features_in_; feature_names_in_ (when X had names).
        scaler_: ``{"mean", "scale"}`` per feature. svc_: the fitted ``SVC`` (SVC approaches).
        encoder_: the Keras encoder with its head (features_svc, deep_hinge); model_: the
        Keras margin model (linear_hinge, rff_svm); history_: per-epoch metrics of Keras fits;
        layout_: the rows' layout as ``{"kind", "shape", "reason"}`` (`tasks.core.layout`).

    Shapes: X (n, d) -> ``predict`` (n,), ``decision_function`` (n,) for two classes
    (positive: ``classes_[1]``) or (n, k). There is no ``predict_proba``: margins are not
    probabilities.
    """

    def __init__(self, approach: str = "features_svc", *, scale: dict | None = None, encoder: dict | None = None,
                 features: dict | None = None, svc: dict | None = None, linear_hinge: dict | None = None,
                 rff_svm: dict | None = None, val_fraction: float = 0.15, random_state: int | None = 0,
                 layout: str = "auto", shape: list[int] | None = None):
        self.approach = approach
        self.scale = scale
        self.encoder = encoder
        self.features = features
        self.svc = svc
        self.linear_hinge = linear_hinge
        self.rff_svm = rff_svm
        self.val_fraction = val_fraction
        self.random_state = random_state
        self.layout = layout
        self.shape = shape

    # ------------------------------------------------------------------ parameters

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = super().get_params(deep=False)
        if deep:
            for name, section in SECTIONS.items():
                values = {k: f.default if f.default_factory is None else f.default_factory()
                          for k, f in section.model_fields.items()}
                values.update(params[name] if isinstance(params[name], dict) else {})
                params.update({f"{name}__{k}": v for k, v in values.items()})
        return params

    def set_params(self, **params) -> MarginClassifier:
        nested = {k: v for k, v in params.items() if "__" in k}
        super().set_params(**{k: v for k, v in params.items() if "__" not in k})
        for key, value in nested.items():
            name, sub = key.split("__", 1)
            if name not in SECTIONS or sub not in SECTIONS[name].model_fields:
                raise ValueError(f"Invalid parameter {key!r} for estimator {type(self).__name__}: "
                                 f"nested keys are <section>__<key> with a section of {', '.join(SECTIONS)}")
            current = getattr(self, name)
            setattr(self, name, {**(current if isinstance(current, dict) else {}), sub: value})
        return self

    def _config(self, name: str):
        """The validated config section ``name``; ``seed`` defaults to ``random_state``."""
        from pydantic import ValidationError

        given = getattr(self, name)
        if given is not None and not isinstance(given, dict):
            raise ValueError(f"{name} must be a dict of {SECTIONS[name].__name__} keys or None, got {given!r}")
        values = dict(given or {})
        if "seed" in SECTIONS[name].model_fields and "seed" not in values and self.random_state is not None:
            values["seed"] = int(self.random_state)
        try:
            return SECTIONS[name].model_validate(values)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or name
            raise ValueError(f"{name}.{where}: {first['msg']}") from None

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y, sample_weight=None, validation_data=None) -> MarginClassifier:
        """Fit on (X, y); ``validation_data=(X_val, y_val)`` replaces the internal validation split
        of the approaches with early stopping (ignored by the others).

        ``sample_weight`` weights the SVC (``features_svc``: the SVC on the encoder's features,
        not the encoder's training); the Keras-only approaches refuse it.
        """
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import _check_sample_weight, validate_data

        if self.approach not in MARGIN_APPROACHES:
            raise ValueError(f"approach must be one of {', '.join(MARGIN_APPROACHES)}, got {self.approach!r}")
        if not 0.0 < float(self.val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"MarginClassifier needs at least two classes in y, got 1 class ({self.classes_[0]!r})")
        if sample_weight is not None:
            if self.approach not in SVC_APPROACHES:
                raise ValueError(f"sample_weight is supported by the SVC approaches ({', '.join(SVC_APPROACHES)}), "
                                 f"not by {self.approach}")
            sample_weight = _check_sample_weight(sample_weight, X)
        names = [str(n) for n in getattr(self, "feature_names_in_", range(X.shape[1]))]
        try:
            self.layout_ = resolve_layout(names, self.layout, self.shape).to_json()
        except InputError as e:
            raise ValueError(str(e).replace("data.", "")) from None
        self.scaler_ = fit_scaler(X, self._config("scale"))
        Xs = apply_scaler(X, self.scaler_)
        if self.approach in EARLY_STOPPING:
            fit, val = self._split(Xs, codes, sample_weight, validation_data)
        else:  # no early stopping: every row trains
            fit, val = (Xs, codes, sample_weight), None
        getattr(self, f"_fit_{self.approach}")(fit, val)
        return self

    def _split(self, X, codes, sample_weight, validation_data):
        """((X, y, w) to fit on, (X, y) for early stopping), y as class indices."""
        if validation_data is not None:
            X_val, y_val = validation_data
            X_val = apply_scaler(np.asarray(X_val, dtype=np.float64), self.scaler_)
            index = {c: i for i, c in enumerate(self.classes_.tolist())}
            try:
                v = np.array([index[c] for c in np.asarray(y_val).tolist()], dtype=np.int64)
            except KeyError as e:
                raise ValueError(f"validation_data has a class not in y: {e.args[0]!r}") from None
            return (X, codes, sample_weight), (X_val, v)
        from sklearn.model_selection import train_test_split

        rows = np.arange(len(codes))
        try:
            fit_rows, val_rows = train_test_split(rows, test_size=self.val_fraction, stratify=codes,
                                                  random_state=self.random_state)
        except ValueError:  # too few rows per class to hold some out: watch the training rows
            fit_rows, val_rows = rows, rows
        if len(np.unique(codes[fit_rows])) < len(self.classes_):
            fit_rows, val_rows = rows, rows
        weights = None if sample_weight is None else sample_weight[fit_rows]
        return (X[fit_rows], codes[fit_rows], weights), (X[val_rows], codes[val_rows])

    def _fit_svc_on(self, F, y, w, encoder_kind: str | None = None):
        config = resolve_kernel(self._config("svc"), encoder_kind)
        rows = [cv_row(F, y, point) for point in grid(config)] if config.search else None
        self.svc_, _, self.search_, _ = fit_searched((F, y), config, rows, w)

    def _fit_features_svc(self, fit, val):
        X, y, w = fit
        self.encoder_, self.history_ = train(X, y, *val, len(self.classes_), self._config("encoder"),
                                             Layout.from_json(self.layout_, X.shape[1]))
        kind = resolve_architecture(self._config("encoder"), Layout.from_json(self.layout_, X.shape[1]))[0]
        self._fit_svc_on(self._features(X), y, w, kind)

    def _fit_raw_svc(self, fit, val):
        self._fit_svc_on(*fit)

    def _fit_deep_hinge(self, fit, val):
        X, y, _ = fit
        config = self._config("encoder").model_copy(update={"objective": "squared_hinge"})
        self.encoder_, self.history_ = train(X, y, *val, len(self.classes_), config,
                                             Layout.from_json(self.layout_, X.shape[1]))

    def _fit_linear_hinge(self, fit, val):
        X, y, _ = fit
        config, k = self._config("linear_hinge"), len(self.classes_)
        self.model_, _, _, _ = fit_keras_margin(lambda: build_linear_hinge(X.shape[1], k, len(X), config),
                                                X, y, k, config.loss, config)

    def _fit_rff_svm(self, fit, val):
        X, y, _ = fit
        config, k = self._config("rff_svm"), len(self.classes_)
        gamma = rbf_gamma(X, config.gamma)
        self.model_, _, _, _ = fit_keras_margin(lambda: build_rff_svm(X.shape[1], k, len(X), gamma, config),
                                                X, y, k, "squared_hinge", config)

    # ------------------------------------------------------------------ predicting

    def _features(self, Xs: np.ndarray) -> np.ndarray:
        if getattr(self, "_feature_model", None) is None:
            self._feature_model = cut_at_features(self.encoder_)
        return embed(self._feature_model, Xs, self._config("features").batch_size).astype(np.float64)

    def _scaled(self, X) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted, validate_data

        check_is_fitted(self, "classes_")
        return apply_scaler(validate_data(self, X, reset=False, dtype=np.float64), self.scaler_)

    def _margins(self, Xs: np.ndarray) -> np.ndarray:
        model = self.encoder_ if self.approach == "deep_hinge" else self.model_
        return np.asarray(model.predict(Xs.astype("float32"), batch_size=1024, verbose=0), dtype=np.float64)

    def decision_function(self, X) -> np.ndarray:
        """Margin scores: (n,) for two classes (positive: ``classes_[1]``), else (n, k)."""
        Xs = self._scaled(X)
        if self.approach in SVC_APPROACHES:
            return self.svc_.decision_function(self._features(Xs) if self.approach == "features_svc" else Xs)
        scores = self._margins(Xs)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X) -> np.ndarray:
        """(n,) labels in the values ``y`` had."""
        Xs = self._scaled(X)
        if self.approach in SVC_APPROACHES:
            index = self.svc_.predict(self._features(Xs) if self.approach == "features_svc" else Xs)
        else:
            index = predicted_classes(self._margins(Xs))
        return self.classes_[np.asarray(index, dtype=np.int64)]

    # ------------------------------------------------------------------ persistence

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "_feature_model"}
        for attr in _KERAS_ATTRS:
            if attr in state:
                state[attr] = _keras_to_bytes(state[attr])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        for attr in _KERAS_ATTRS:
            if isinstance(state.get(attr), bytes | bytearray):
                state[attr] = _keras_from_bytes(bytes(state[attr]))
        self.__dict__.update(state)


def save(model: MarginClassifier, path: str | os.PathLike[str]) -> None:
    """Save with skops (``.skops``)."""
    import skops.io as sio

    sio.dump(model, path)


def load(path: str | os.PathLike[str]) -> MarginClassifier:
    """Load a ``.skops`` MarginClassifier, trusting `TRUSTED_TYPES` (and plain values) and nothing else.

    Raises:
        ValueError: the file names a type outside `TRUSTED_TYPES` (named in the message).
    """
    model = skops_load(path, TRUSTED_TYPES)
    if not isinstance(model, MarginClassifier):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not a MarginClassifier")
    return model

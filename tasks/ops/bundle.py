"""The model bundle: one directory holding everything needed to predict, with verified hashes.

Files (all listed with their SHA-256 in ``manifest.json``):

* ``scaler.json``   - per-feature mean and scale (JSON, no pickle);
* ``encoder.keras`` - the Keras encoder, loaded with ``safe_mode=True`` and cut at ``features``;
* ``svc.skops``     - the SVC (``exact``) or the approx pipeline (Nystroem map, standardisation, linear SVM),
  loaded by skops with an explicit list of trusted types;
* ``labels.json``   - the label column's name and the original class values, in index order;
* ``features.json`` - the input feature names, in the order the model reads them;
* ``config.json``   - the config sections that made the model (`IDENTITY_SECTIONS`; ``data`` without
  the input's path);
* ``metrics.json``  - the model's test metrics from its own run.

A bundle's **identity** is the SHA-256 over its model files and ``config.json``: metrics,
unrelated config sections and where the input file lay do not make a new model version.
``manifest.json`` records ``made_from`` (digests of the source data and of the code that made the model;
absent in bundles written before) and the solver (``exact`` or ``approx``, and why; absent in bundles written
before there was a choice: they hold an SVC) and carries the format version (``marginflow-bundle/2``; version 1, which
stored the whole config, still loads) and the identity.

`verify` re-hashes every file before anything is deserialised and refuses a bundle with a
missing, extra-listed or altered file. A loaded `Bundle` behaves like a scikit-learn
classifier: ``predict``, ``decision_function``, ``score``, ``classes_``. The stored config is
read tolerantly: keys that today's config does not know, or no longer has, are ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.networks import check_keras_layers, cut_at_features, embed, load_encoder
from tasks.core.scaling import apply_scaler
from tasks.core.svm import APPROX_TYPES, SGD_APPROX_TYPES, SVC_TYPES, check_skops_types, load_svc, solver_of
from tasks.errors import InputError, first_line
from tasks.store.artifacts import ArtifactWriter, damaged_file, sha256_file, sha256_text
from tasks.store.kinds import (
    CONFIG,
    ENCODER_MODEL,
    FEATURE_NAMES,
    LABELS,
    MANIFEST,
    METRICS,
    SCALER,
    SIGNATURE,
    SVC_MODEL,
)

FORMAT = "marginflow-bundle/2"
READABLE_FORMATS = ("marginflow-bundle/1", FORMAT)
MODEL_FILES = (SCALER, ENCODER_MODEL, SVC_MODEL, LABELS, FEATURE_NAMES)
FILES = (*MODEL_FILES, CONFIG, METRICS)
IDENTITY_SECTIONS = ("data", "scale", "encoder", "features", "svc")
DEFAULT_FEATURE_BATCH = 1024


class BundleError(InputError):
    """A bundle that is incomplete, altered or not a bundle at all."""


def bundle_identity(files: dict[str, str]) -> str:
    """A bundle's identity from its manifest's file hashes: the model files and ``config.json``."""
    return sha256_text("".join(f"{name}\0{files.get(name, '')}\n" for name in (*MODEL_FILES, CONFIG)))


def making_config(sections: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` of a bundle: the identity sections as JSON, ``data`` without the input's path."""
    out = {}
    for name in IDENTITY_SECTIONS:
        section = sections[name]
        out[name] = section.model_dump(mode="json") if hasattr(section, "model_dump") else dict(section)
    out["data"].pop("input", None)
    return out


def write_bundle(w: ArtifactWriter, sources: dict[str, Any], labels: dict[str, Any], feature_names: list[str],
                 config: dict[str, Any], metrics: dict[str, Any], solver: dict[str, Any] | None = None,
                 made_from: dict[str, Any] | None = None) -> None:
    """Fill ``w`` (an `ArtifactWriter`, or anything with its ``path`` and ``write_json``) with a bundle.

    Args:
        sources: ``scaler.json``, ``encoder.keras``, ``svc.skops`` -> a file to copy, or a
            function that writes the file at the path it is given.
        config: the output of `making_config`.
        solver: the SVC's ``solver.json`` (``exact`` or ``approx`` and why), recorded in the manifest.
        made_from: ``{"data_sha256", "code_sha256"}``: the source's bytes and the code that made the model,
            recorded in the manifest (not part of the identity: `marginflow compare` names what differs).
    """
    import shutil

    for name in (SCALER, ENCODER_MODEL, SVC_MODEL):
        source = sources[name]
        if callable(source):
            source(w.path(name))
        else:
            shutil.copyfile(source, w.path(name))
    w.write_json(LABELS, labels)
    w.write_json(FEATURE_NAMES, feature_names)
    w.write_json(CONFIG, config)
    w.write_json(METRICS, metrics)
    files = {n: sha256_file(w.path(n)) for n in FILES}
    w.write_json(MANIFEST, {"format": FORMAT, "files": files, "identity": bundle_identity(files),
                            **({"solver": solver} if solver else {}), **({"made_from": made_from} if made_from else {})})


def read_manifest(path: str | Path) -> dict[str, Any]:
    """A bundle's manifest, checked for its format and the files it must list (nothing is hashed).

    Raises:
        BundleError: not a directory, no or unreadable manifest, or a file it does not list.
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
    if (not isinstance(manifest, dict) or manifest.get("format") not in READABLE_FORMATS
            or not isinstance(manifest.get("files"), dict)):
        raise BundleError(f"{root / MANIFEST}: not a {FORMAT} manifest")
    listed = manifest["files"]
    for name in FILES:
        if name not in listed:
            raise BundleError(f"{root / MANIFEST}: does not list {name}")
    return manifest


def verify(path: str | Path) -> dict[str, Any]:
    """Check a bundle directory against its manifest (every file re-hashed); returns the manifest.

    Raises:
        BundleError: as `read_manifest`, or a file missing, or a hash that differs (one line naming the file).
    """
    root = Path(path)
    manifest = read_manifest(root)
    bad = damaged_file(root, manifest["files"])
    if bad is not None:
        name, what = bad
        if what == "missing":
            raise BundleError(f"{root / name}: incomplete bundle, file is missing")
        raise BundleError(f"{root / name}: SHA-256 differs from the manifest; the bundle was altered, refusing to load it")
    return manifest


SIGNATURE = SIGNATURE
SIGNING_KEY_ENV = "MARGINFLOW_SIGNING_KEY_FILE"


def signing_key() -> bytes | None:
    """The key of ``$MARGINFLOW_SIGNING_KEY_FILE`` (kept outside the data root), or None when it is not set.

    Raises:
        InputError: the variable names a file that cannot be read, or an empty one.
    """
    import os

    where = os.environ.get(SIGNING_KEY_ENV)
    if not where:
        return None
    try:
        key = Path(where).read_bytes().strip()
    except OSError as e:
        raise InputError(f"{SIGNING_KEY_ENV}={where}: cannot read the signing key ({e.strerror or e})") from None
    if not key:
        raise InputError(f"{SIGNING_KEY_ENV}={where}: the signing key file is empty")
    return key


def _mac(key: bytes, root: Path) -> str:
    import hashlib
    import hmac

    return hmac.new(key, (root / MANIFEST).read_bytes(), hashlib.sha256).hexdigest()


def sign(root: str | Path, key: bytes) -> None:
    """Write ``signature.json``: an HMAC-SHA256 of the manifest (which lists every file's SHA-256) under ``key``."""
    root = Path(root)
    (root / SIGNATURE).write_text(json.dumps({"hmac_sha256": _mac(key, root)}))


def check_signature(root: str | Path, key: bytes | None) -> None:
    """With a signing key, the version must carry that key's signature of its manifest; without one, nothing.

    Raises:
        BundleError: unsigned, or signed with another key, or altered after it was signed.
    """
    import hmac

    if key is None:
        return
    root = Path(root)
    try:
        stored = json.loads((root / SIGNATURE).read_text()).get("hmac_sha256")
    except (OSError, ValueError, AttributeError):
        raise BundleError(f"{root}: not signed ({SIGNATURE} missing or unreadable) while "
                          f"{SIGNING_KEY_ENV} is set; refusing it") from None
    if not isinstance(stored, str) or not hmac.compare_digest(stored, _mac(key, root)):
        raise BundleError(f"{root / SIGNATURE}: does not match this signing key (altered, or signed with another "
                          "key); refusing it")


def static_problem(path: str | Path, signed: bool = False) -> str | None:
    """Why a bundle would be refused, found without deserialising anything; None when it would load.

    Checks the hashes (`verify`), that ``svc.skops`` names only the types an SVC is made of,
    and that ``encoder.keras`` holds only layers marginflow builds (no ``Lambda``, no other
    custom class); with ``signed`` (a registered version), its signature when a signing key is set.
    Fast enough for ``marginflow models`` on every version.
    """
    try:
        verify(path)
        _check_types(Path(path))
        if signed:
            check_signature(path, signing_key())
    except ValueError as e:  # BundleError is one
        return str(e)
    return None


def _check_types(root: Path) -> None:
    """Refuse model files that name types marginflow never writes (read from the files, nothing loaded), and
    JSON files that are not what marginflow writes there."""
    check_skops_types(root / SVC_MODEL, (*SVC_TYPES, *APPROX_TYPES, *SGD_APPROX_TYPES))
    check_keras_layers(root / ENCODER_MODEL)
    _check_json_files(root)


def _check_json_files(root: Path) -> None:
    """``labels.json``: ``{"label": text or null, "classes": [2+ plain values]}``; ``features.json``: a list of
    names; ``metrics.json`` and ``config.json``: objects.

    Raises:
        ValueError: naming the file and what is wrong.
    """
    def read(name: str):
        try:
            return json.loads((root / name).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{root / name}: unreadable ({first_line(e)})") from None

    labels = read(LABELS)
    classes = labels.get("classes") if isinstance(labels, dict) else None
    if (not isinstance(classes, list) or len(classes) < 2
            or not all(isinstance(c, str | int | float | bool) for c in classes)
            or not isinstance(labels.get("label"), str | None)):
        raise ValueError(f"{root / LABELS}: not a marginflow labels file (a label name and 2 or more classes)")
    features = read(FEATURE_NAMES)
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ValueError(f"{root / FEATURE_NAMES}: not a list of feature names")
    for name in (METRICS, CONFIG):
        if not isinstance(read(name), dict):
            raise ValueError(f"{root / name}: not a JSON object")


class Bundle:
    """A verified, loaded model bundle; a scikit-learn-style classifier on the raw features.

    Attributes:
        classes_: the original class values, index order (as scikit-learn's ``classes_``).
        feature_names_in_: the input columns, in order.
        label: the label column's name in the training data (None for built-ins).
        metrics: the test metrics recorded when the model was trained.
    """

    def __init__(self, path: str | Path, signed: bool = True, encoder: bool = True):
        """``encoder=False``: every check but deserialising ``encoder.keras`` (registration does this for an
        encoder file byte-identical to one a registered version already loaded); ``encoder`` is then None."""
        self.path = Path(path)
        self.manifest = verify(self.path)
        if signed:  # a registered version; a run's own bundle artifact is signed when it is registered
            check_signature(self.path, signing_key())
        try:
            _check_types(self.path)
        except ValueError as e:
            raise BundleError(str(e)) from None
        labels = json.loads((self.path / LABELS).read_text())
        self.classes_ = np.asarray(labels["classes"], dtype=object if any(isinstance(c, str) for c in labels["classes"]) else None)
        self.label = labels.get("label")
        self.feature_names_in_ = list(json.loads((self.path / FEATURE_NAMES).read_text()))
        self.scaler = json.loads((self.path / SCALER).read_text())
        self.config = read_config(self.path / CONFIG)
        self.metrics = json.loads((self.path / METRICS).read_text())
        self.encoder = self.feature_model = None
        try:
            if encoder:
                self.encoder = load_encoder(self.path / ENCODER_MODEL)
                self.feature_model = cut_at_features(self.encoder)
        except Exception as e:  # Keras raises many types for a file it will not load
            raise BundleError(f"{self.path / ENCODER_MODEL}: cannot load ({first_line(e)})") from None
        try:
            self.svc = load_svc(self.path / SVC_MODEL)
        except Exception as e:
            raise BundleError(f"{self.path / SVC_MODEL}: cannot load ({first_line(e)})") from None
        try:
            self.scaler = {"mean": np.asarray(self.scaler["mean"], dtype=np.float64),
                           "scale": np.asarray(self.scaler["scale"], dtype=np.float64)}
            if self.scaler["mean"].shape != (self.n_features_in_,) or self.scaler["scale"].shape != (self.n_features_in_,):
                raise ValueError(f"mean and scale must hold {self.n_features_in_} values")
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{self.path / SCALER}: not a scaler for this model ({first_line(e)})") from None

    @classmethod
    def load(cls, path: str | Path, signed: bool = True) -> Bundle:
        """A bundle, loaded fully; ``signed``: it must carry the signing key's signature (when a key is set)."""
        return cls(path, signed)

    @property
    def n_features_in_(self) -> int:
        return len(self.feature_names_in_)

    @property
    def solver(self) -> str:
        """``exact`` (an SVC) or ``approx`` (kernel map + linear SVM): the manifest's record, or for a bundle
        written before solvers were recorded, what its ``svc.skops`` holds."""
        recorded = self.manifest.get("solver")
        return recorded["solver"] if isinstance(recorded, dict) and "solver" in recorded else solver_of(self.svc)

    @property
    def identity(self) -> str:
        return bundle_identity(self.manifest["files"])

    def _matrix(self, X: Any, where: str = "input") -> np.ndarray:
        if hasattr(X, "columns"):  # a DataFrame: columns by name
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
        # float32 in, float32 arithmetic: exactly how ingest stores the rows and scale transforms them
        scaled = apply_scaler(self._matrix(X).astype(np.float32), self.scaler)
        return embed(self.feature_model, scaled, self.feature_batch).astype(np.float64)

    @property
    def feature_batch(self) -> int:
        """Rows per forward pass, as the model's own run extracted features."""
        value = (self.config.get("features") or {}).get("batch_size") if isinstance(self.config, dict) else None
        return value if isinstance(value, int) and value >= 1 else DEFAULT_FEATURE_BATCH

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


def read_config(path: Path) -> dict[str, Any]:
    """A bundle's stored config as plain JSON sections, whatever schema wrote it.

    Nothing is validated against today's `tasks.config.Config`: a renamed or removed key
    must not make a registered model unloadable. Readers pick the keys they need, with defaults.
    """
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: unreadable config ({e})") from None
    if not isinstance(config, dict):
        raise BundleError(f"{path}: config must be a JSON object")
    return config

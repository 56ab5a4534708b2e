"""One typed config with a section per stage.

Sources, later ones win: defaults, a TOML file (``--config``), ``--set section.key=value``
overrides, then CLI flags. Invalid config raises `InputError` naming the key, before
any stage runs.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.catalog import NAMES as APPROACHES

BUILTIN_DATASETS = ("digits", "breast_cancer", "wine", "iris", "mnist1d")

# what numpy's and scikit-learn's random states accept
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="a random seed, 0 to 2**32 - 1")]


def _check_gamma(key: str, value: Any) -> None:
    """An RBF gamma: ``"scale"``, ``"auto"`` or a positive number."""
    if isinstance(value, float) and value <= 0:
        raise ValueError(f"{key} must be > 0, 'scale' or 'auto', got {value}")


class _Section(BaseModel):
    """A config section. Strict types, the one place the rules on values live: an integer key takes an integer
    (not ``true``, not ``"5"``), a float key takes a number (not a boolean), every number is finite, and each
    key's range is its ``Field``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="after")
    def _finite(self):
        for name, value in self:
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        return self


class DataConfig(_Section):
    """Where the rows come from and how they are split.

    Either ``dataset`` (a built-in) or ``input`` (CSV, CSV.gz or Parquet) with ``label``.
    ``layout`` and ``shape`` say what a row is (`tasks.core.layout`: inferred from the column
    names by default); the encoder candidates follow from it.
    Without ``split_column`` the rows are split stratified and seeded into
    train / val / test; ``test_fraction`` of all rows go to test and ``val_fraction``
    of the rest to val. A split column holds ``train``/``val``/``test`` (``val``
    optional: then val is carved from train).
    ``batch_rows`` bounds memory: no stage holds more rows of a table at once (`tasks.store.tables`).
    """

    dataset: Literal[BUILTIN_DATASETS] | None = "digits"
    input: str | None = None
    label: str | None = None
    split_column: str | None = None
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    val_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    seed: Seed = 0
    layout: Literal["auto", "table", "sequence", "image"] = Field(
        "auto", description="what a row is: inferred from the column names (auto), or as given")
    shape: list[int] | None = Field(
        None, description="a row's shape: [T] or [T, C] for a sequence, [H, W] or [H, W, C] for an image")
    batch_rows: int = Field(20_000, ge=1, description="the most rows of a table any stage holds at once: files are "
                            "read, written and streamed this many rows at a time; a split with more rows is "
                            "streamed from disk or sampled (see README, Large data)")

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.input is not None and self.dataset is not None:
            raise ValueError("set either data.dataset or data.input, not both")
        if self.input is None and self.dataset is None:
            raise ValueError("set data.dataset or data.input")
        if self.input is not None and not self.label:
            raise ValueError("data.input needs data.label (the label column)")
        if self.shape is not None and (not 1 <= len(self.shape) <= 3 or min(self.shape) < 1):
            raise ValueError(f"data.shape must be 1 to 3 positive sizes, got {self.shape}")
        return self


class ScaleConfig(_Section):
    """StandardScaler options; it is fitted on the training rows only."""

    with_mean: bool = True
    with_std: bool = True


class EncoderConfig(_Section):
    """The Keras encoder; its last hidden layer (``features``) feeds the SVC.

    ``kind``: ``auto`` (default) trains the candidate encoders suited to the data's layout
    (`tasks.core.candidates`: CNNs for images and sequences, MLPs for tables, and always
    ``identity``) and keeps the one whose features give the best SVC score on validation rows
    (repeated stratified folds of the non-test rows when there are fewer than
    ``search_folds_below`` training rows); the search stops starting candidates once
    ``search_budget_s`` seconds have passed. Or one kind, trained as configured: ``mlp``,
    ``cnn1d`` (sequences), ``cnn2d`` (images; shape from ``data.shape`` or inferred), or
    ``identity`` (the scaled inputs are the features: features_svc is then raw_svc), or ``rocket``
    (MiniRocket's fixed random convolutions with PPV pooling, `tasks.core.rocket`: ``rocket_features``
    features of the rows read as a sequence, fitted in one pass, nothing trained by gradient).
    ``objective``: trained with a softmax head (cross-entropy) or a linear head with
    one-vs-rest squared hinge. ``batch_norm``: after each conv layer (momentum 0.9, so that
    a few dozen rows per epoch still move its statistics).

    Length: at most ``epochs`` passes and at most ``max_steps`` batches. A training split larger than
    ``data.batch_rows`` is streamed from disk through a shuffle buffer of that many rows; its
    "epochs" are then validation checks every ``max_steps // 20`` steps.
    """

    kind: Literal["auto", "identity", "mlp", "cnn1d", "cnn2d", "rocket"] = "auto"
    rocket_features: int = Field(9996, ge=84, description="kind = rocket: the number of MiniRocket features (84 "
                                                         "kernels times the features per kernel; the paper's 10,000)")
    filters: list[int] = Field(default_factory=lambda: [32, 64])
    kernel_size: int = Field(5, ge=1)
    pooling: Literal["flatten", "global_max", "global_avg"] = Field(
        "flatten", description="how the conv maps become a vector: flatten (keeps position) or global pooling")
    batch_norm: bool = False
    augment_shift: int = Field(0, ge=0, description="cnn1d/cnn2d: while training, shift each signal or image by "
                                                    "up to this many steps or pixels (edge repeated); 0 = off")
    augment_rotate: float = Field(0.0, ge=0.0, le=45.0, description="cnn2d: while training, rotate each image by up "
                                                                   "to this many degrees about its centre; 0 = off")
    augment_scale: float = Field(0.0, ge=0.0, lt=0.5, description="cnn2d: while training, scale each image by a "
                                                                 "factor within 1 +- this; 0 = off")
    objective: Literal["softmax", "squared_hinge"] = "softmax"
    hidden: list[int] = Field(default_factory=lambda: [256, 128])
    activation: Literal["relu", "gelu", "tanh", "selu", "swish"] = "relu"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-3, gt=0.0)
    patience: int = Field(10, ge=1, description="early stopping patience on val loss, in epochs (in checks when "
                                                "streamed)")
    max_steps: int = Field(4000, ge=1, description="the most optimisation steps (batches) one training takes; with "
                                                   "epochs, whichever ends first")
    val_rows: int = Field(5000, ge=10, description="early stopping watches at most this many validation rows "
                                                   "(a seeded sample of a larger val split)")
    seed: Seed = 0
    search_budget_s: float = Field(900.0, gt=0.0, description="kind = auto: no candidate starts after this many "
                                                              "seconds of search (one that runs finishes)")
    search_folds: int = Field(3, ge=2, description="kind = auto with few training rows: stratified folds ...")
    search_repeats: int = Field(2, ge=1, description="... repeated this many times (differently shuffled)")
    search_folds_below: int = Field(1000, ge=0, description="kind = auto: score by folds below this many training "
                                                            "rows, else on the val split")
    search_networks_from: int = Field(100, ge=0, description="kind = auto: networks train only from this many "
                                                             "training rows (fewer: the cheap candidates, identity "
                                                             "and rocket, decide), and only while no cheap one "
                                                             "scored perfectly")
    search_halving: bool = Field(True, description="kind = auto, scored on the val split: successive halving (every "
                                                   "network trains a quarter or half of the step budget, the better "
                                                   "half continues from its weights); false: each trains the whole budget")
    search_ensemble: bool = Field(True, description="kind = auto, images and sequences held in memory (at most "
                                                    "data.batch_rows training rows): the features of every network "
                                                    "trained, concatenated, are a candidate too, and the default the "
                                                    "others must beat (features_svc, 5 seeds: digits 97.91 -> "
                                                    "98.84, mnist1d 97.76 -> 98.12, benchmarks/RESULTS.md)")
    search_svc_kernel: Literal["auto", "rbf", "linear", "poly", "sigmoid"] = Field(
        "auto", description="kind = auto: the kernel of the SVC that scores candidates (the selection's own, never "
                            "the svc section); auto: linear for rocket, rbf for the others, as svc.kernel = auto")
    search_svc_C: float = Field(10.0, gt=0.0, description="kind = auto: C of the SVC that scores candidates")
    search_svc_gamma: Literal["scale", "auto"] | float = Field(
        "scale", description="kind = auto: gamma of the SVC that scores candidates")

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, values: Any) -> Any:
        if isinstance(values, dict) and "input_shape" in values:
            raise ValueError("encoder.input_shape is now data.shape (with data.layout)")
        return values

    @model_validator(mode="after")
    def _search_gamma(self) -> EncoderConfig:
        _check_gamma("encoder.search_svc_gamma", self.search_svc_gamma)
        return self

    @model_validator(mode="after")
    def _widths(self) -> EncoderConfig:
        if not self.hidden or any(w < 1 for w in self.hidden):
            raise ValueError(f"encoder.hidden must be a non-empty list of positive widths, got {self.hidden}")
        if any(f < 1 for f in self.filters):
            raise ValueError(f"encoder.filters must be positive, got {self.filters}")
        return self


class FeaturesConfig(_Section):
    """Feature extraction: rows per forward pass."""

    batch_size: int = Field(1024, ge=1)


RETIRED_SVC_KEYS = {
    "approx_above": "svc.solver = auto now decides by predicted cost (svc.auto_budget_s, svc.auto_exact_max_mb)",
    "approx_epochs": "the approx solver is solved in closed form in one pass",
}


class SVCConfig(_Section):
    """scikit-learn SVC on the encoder features (``train_svc``) and on the raw features (``raw_svc``).

    ``kernel = "auto"`` (`tasks.core.svm.resolve_kernel`): linear on the features of a ``rocket`` encoder,
    rbf on any other features and on the raw inputs.

    With ``search = true``, ``C`` and ``gamma`` are chosen by stratified k-fold
    cross-validation on the training rows only (never val or test): every pair of
    ``search_C`` x ``search_gamma_factor`` is one ``svc_cv`` task, where a gamma factor
    ``f`` means ``gamma = f / (n_features * X_train.var())``, i.e. ``f`` times
    scikit-learn's ``"scale"``. The best mean ``search_metric`` wins; ties go to the
    smaller C, then the factor nearest 1. Past ``data.batch_rows`` training rows the search
    scores a seeded sample of that many rows, with the solver the fit will use.

    ``solver`` (`tasks.core.svm.resolve_solver`): ``exact`` is ``SVC``; ``approx`` is a kernel
    expansion on ``approx_components`` Nystroem centres (seeded training rows) fitted in closed form with
    the squared loss on one-vs-rest targets and ridge penalty ``1 / C`` (`tasks.core.nystroem`): one
    streamed pass over the training rows, then the penalty swept on validation rows. ``auto`` decides by
    cost: exact when a fit on a growing sample of training rows predicts that the exact fit takes at
    most ``auto_budget_s`` seconds and holds at most ``auto_exact_max_mb`` of rows; else approx.
    """

    kernel: Literal["auto", "rbf", "linear", "poly", "sigmoid"] = Field(
        "auto", description="auto: linear on the features of a rocket encoder (MiniRocket's, made for a linear "
                            "classifier), rbf on any other features and on the raw inputs")
    C: float = Field(10.0, gt=0.0)
    gamma: Literal["scale", "auto"] | float = "scale"
    class_weight: Literal["balanced"] | None = None
    seed: Seed = Field(0, description="SVC random_state and CV fold shuffling; a fixed one keeps libsvm "
                                     "off NumPy's global RNG, which Keras shuffles with")
    search: bool = False
    search_C: list[float] = Field(default_factory=lambda: [0.1, 1.0, 10.0, 100.0])
    search_gamma_factor: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])
    search_folds: int = Field(5, ge=2)
    search_metric: Literal["accuracy", "macro_f1"] = "accuracy"
    solver: Literal["auto", "exact", "approx"] = Field(
        "auto", description="exact: scikit-learn's SVC (time grows between n^2 and n^3); approx: Nystroem "
                            "centres + a closed-form fit streamed from disk; auto: exact when it is predicted to "
                            "fit within auto_budget_s and auto_exact_max_mb, else approx")
    auto_budget_s: float = Field(120.0, gt=0.0, description="solver = auto: the most seconds the exact fit may be "
                                                            "predicted to take")
    auto_exact_max_mb: float = Field(1024.0, gt=0.0, description="solver = auto: the most MB of training rows "
                                                                 "(float64) the exact fit may hold")
    approx_components: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="solver = approx: Nystroem centres; auto: 15 sqrt(n) within [500, 4000]")

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, why in RETIRED_SVC_KEYS.items():
                if key in data:
                    data = {k: v for k, v in data.items() if k != key}
                    logging.getLogger("marginflow").warning("svc.%s is no longer used: %s", key, why)
        return data

    @model_validator(mode="after")
    def _gamma(self) -> SVCConfig:
        _check_gamma("svc.gamma", self.gamma)
        for key in ("search_C", "search_gamma_factor"):
            values = getattr(self, key)
            if not values or min(values) <= 0:
                raise ValueError(f"svc.{key} must be a non-empty list of positive numbers, got {values}")
        return self


class LinearHingeConfig(_Section):
    """A linear Keras model minimising the linear SVM objective (approach ``linear_hinge``).

    Formula (per one-vs-rest output, labels in {-1, +1}):
    ``min_w  1/(2 C n) * ||w||^2 + mean_i loss(y_i, w.x_i + b)`` -- the LinearSVC objective
    divided by ``C * n``; ``loss`` is the squared hinge (LinearSVC's default) or, with
    ``loss = "categorical_hinge"``, Keras' multi-class hinge on one-hot labels.
    """

    C: float = Field(1.0, gt=0.0)
    loss: Literal["squared_hinge", "categorical_hinge"] = "squared_hinge"
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(0.01, gt=0.0)
    max_steps: int = Field(4000, ge=1, description="the most optimisation steps (batches); with epochs, whichever "
                                                   "ends first")
    seed: Seed = 0


class RFFConfig(_Section):
    """Kernel SVM inside Keras (approach ``rff_svm``): random Fourier features + linear hinge head.

    ``gamma`` means what it means for scikit-learn's RBF kernel ``exp(-gamma ||x - y||^2)``;
    ``"scale"`` is ``1 / (n_features * X.var())`` on the training rows, as in ``SVC``.
    """

    n_components: int = Field(2048, ge=1)
    gamma: Literal["scale"] | float = "scale"
    C: float = Field(10.0, gt=0.0)
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(0.005, gt=0.0)
    max_steps: int = Field(4000, ge=1, description="the most optimisation steps (batches); with epochs, whichever "
                                                   "ends first")
    seed: Seed = 0


class KNNConfig(_Section):
    """Nearest neighbours (approach ``knn``), the classic baseline the margin methods are compared with.

    ``metric``: ``euclidean``, ``dtw`` (dynamic time warping within a band of ``dtw_window``
    times the length, sequences only), or ``auto``: Euclidean, and DTW too when the rows are
    sequences and the DTW work (query rows x training rows x length x band) stays under
    ``dtw_max_cells``. The metric and ``k`` (of ``k_values``) are chosen by leave-one-out
    accuracy on the training rows (at most ``select_rows`` of them as queries, seeded); ties
    go to Euclidean, then the smaller k.
    """

    metric: Literal["auto", "euclidean", "dtw"] = "auto"
    k_values: list[int] = Field(default_factory=lambda: [1, 3, 5, 7, 9])
    dtw_window: float = Field(0.1, ge=0.0, le=1.0)
    dtw_max_cells: float = Field(2e10, gt=0)
    select_rows: int = Field(1000, ge=10)
    seed: Seed = 0

    @model_validator(mode="after")
    def _ks(self) -> KNNConfig:
        if not self.k_values or min(self.k_values) < 1:
            raise ValueError(f"knn.k_values must be a non-empty list of positive integers, got {self.k_values}")
        return self


class EvaluateConfig(_Section):
    """Evaluation on the test split, and which approaches to run and compare."""

    approaches: list[Literal[APPROACHES]] = Field(default_factory=lambda: list(APPROACHES))
    digits: int = Field(4, ge=1, le=8, description="decimals shown in the report")

    @model_validator(mode="after")
    def _some(self) -> EvaluateConfig:
        if not self.approaches:
            raise ValueError("evaluate.approaches must name at least one approach")
        if len(set(self.approaches)) != len(self.approaches):
            raise ValueError(f"evaluate.approaches has duplicates: {self.approaches}")
        return self


class RetrainConfig(_Section):
    """Champion/challenger promotion in the ``retrain`` flow.

    The challenger (this run's model) is promoted when its ``metric`` on this run's test
    rows is at least the champion's on the same rows minus ``tolerance``.
    """

    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    tolerance: float = Field(0.0, ge=0.0, le=1.0)


_ADDRESS = re.compile(r"(?:(?:tcp|tls)://)?(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")


class EngineConfig(_Section):
    """Where the pipeline's tasks run; not part of any cache key or model identity.

    ``threads`` (default): threads of the flow's process. ``dask``: Prefect's
    ``DaskTaskRunner``, on the cluster at ``address`` (``tcp://host:8786``) or, without an
    address, on a ``distributed.LocalCluster`` of ``workers`` processes (default: one per
    core), one thread each, started for the run and closed after. Every worker must see
    the data root at the same path and report to the flow's ``PREFECT_API_URL``.
    """

    kind: Literal["threads", "dask"] = "threads"
    address: str | None = Field(None, description="a Dask scheduler's address, tcp://host:port")
    workers: int | None = Field(None, ge=1)
    connect_timeout_s: float = Field(10.0, gt=0.0, le=600.0, description="the most seconds spent reaching the "
                                     "scheduler at address (TCP connect, then Dask's handshake)")

    @model_validator(mode="after")
    def _dask_only(self) -> EngineConfig:
        if self.kind == "threads" and (self.address is not None or self.workers is not None):
            raise ValueError("engine.address and engine.workers need engine.kind = 'dask'")
        if self.address is not None and not _ADDRESS.fullmatch(self.address):
            raise ValueError(f"engine.address (--dask-address) must look like tcp://host:port, got {self.address!r}")
        if self.address is not None and self.workers is not None:
            raise ValueError("engine.workers sizes a local cluster; an existing cluster at engine.address has its own")
        return self


# The sections that make the main path's model (scaler, encoder, SVC): the bundle receives
# these and nothing else, so a change elsewhere is not a new model version.
MODEL_SECTIONS = ("data", "scale", "encoder", "features", "svc")


class Config(_Section):
    """The whole pipeline config; each stage receives only its own section."""

    data: DataConfig = DataConfig()
    scale: ScaleConfig = ScaleConfig()
    encoder: EncoderConfig = EncoderConfig()
    features: FeaturesConfig = FeaturesConfig()
    svc: SVCConfig = SVCConfig()
    linear_hinge: LinearHingeConfig = LinearHingeConfig()
    rff_svm: RFFConfig = RFFConfig()
    knn: KNNConfig = KNNConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    retrain: RetrainConfig = RetrainConfig()
    engine: EngineConfig = EngineConfig()

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        """Sections read under their former names, with a one-line notice (`RENAMED_SECTIONS`)."""
        if isinstance(data, dict):
            for old, new in RENAMED_SECTIONS.items():
                if old in data:
                    logging.getLogger("marginflow").warning("config section %s is now %s: read as %s", old, new, new)
                    data = {**{k: v for k, v in data.items() if k != old},
                            new: {**data[old], **(data.get(new) or {})} if isinstance(data[old], dict) else data[old]}
        return data


# former section name -> its name now (a section is named after the approach it trains)
RENAMED_SECTIONS = {"rff": "rff_svm"}

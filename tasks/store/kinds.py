"""Every artifact kind, declared once: its files, what it is made from, what its ``meta.json`` holds.

This module (with `tasks.store.tables` for the three table files) is the only code that names an artifact's
files; every other module asks it: ``encoder.file(ENCODER_MODEL)``, ``read_json(svc, SOLVER)``,
``w.write_json(HISTORY, ...)``. A file name is a `File`: a ``str`` that also says what the file holds.
``KINDS`` lists each kind with its files: tests check every folder a run writes against it, and that no other
module names a file of its own. Files of folders that are not artifacts (a run's report folder, the registry)
are declared here too.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from typing import Any


class File(str):
    """A file name of an artifact, with what the file holds (``about``)."""

    about: str

    def __new__(cls, name: str, about: str = "") -> File:
        self = super().__new__(cls, name)
        self.about = about
        return self

    def __reduce__(self):  # pickled into Dask workers with the stage code that names it
        return File, (str(self), self.about)


# ---------------------------------------------------------------- files several kinds hold
META = File("meta.json", "the rows' metadata: feature names, classes, split sizes, source, layout, batch_rows "
            "(features: also encoder_kind)")
SCALER = File("scaler.json", "the scaler's mean and scale per feature (reloadable without pickle)")
CONFIG = File("config.json", "the settings that made a model: its config section, the kind resolved, the layout")
HISTORY = File("history.json", "a Keras fit's per-epoch losses and metrics (the report's curves)")
BUDGET = File("budget.json", "how long a Keras fit ran: epochs, steps, the limit it ran under")
PREDICTIONS = File("predictions.json", "class indices predicted for the val and test rows")
TIMING = File("timing.json", "fit and predict seconds, and the seconds of the inputs it needed (measured)")
SEARCH = File("search.json", "svc.search: the point chosen and the cross-validation table")
SOLVER = File("solver.json", "which SVM solver fits these rows, and why")
KERAS_MODEL = File("model.keras", "a Keras margin model (linear_hinge, rff_svm, deep_hinge)")
SVC_MODEL = File("svc.skops", "a fitted SVC (or the approx solver's model), saved with skops")

# ---------------------------------------------------------------- one kind's files
DATASET_TABLE = File("dataset.parquet", "the validated rows: features (one list column), class index, split")
SCALED_TABLE = File("scaled.parquet", "the rows, standardised")
FEATURES_TABLE = File("features.parquet", "every row's encoder features, class index, split")
SCRATCH = File(".features.scratch.parquet", "ingest's first pass: the validated features, removed after")
ENCODER_MODEL = File("encoder.keras", "the feature model: the encoder cut at its features layer")
NETWORK = File("network.keras", "the whole trained network, classifier head included (deep_hinge starts from it)")
HELDOUT = File("heldout.npz", "a candidate's features of its held-out rows, and the rows' classes")
SCORE = File("score.json", "a candidate's score: the share of held-out rows its SVC classifies right, per row")
TRAINING = File("train.json", "a candidate's training: epochs, seconds, how it was validated, its rung")
CV = File("cv.json", "one point of the SVC grid: its mean cross-validation accuracy per fold")
REFERENCES = File("references.npz", "knn's reference rows and their classes")
METRICS = File("metrics.json", "every approach's test accuracy, confusion and timings, the ranking, the encoder")
CHARTS = File("charts.json", "the data behind the report's charts")
REPORT_MD = File("report.md", "the report, as Markdown")
REPORT_HTML = File("report.html", "the report, as one HTML page")
APPROACHES_CHART = File("approaches.png", "the approaches' test accuracy, a chart")
CONFUSION_CHART = File("confusion.png", "each approach's confusion matrix, a chart")
CURVES_CHART = File("curves_*.png", "one per Keras model (the encoder's included): its training and validation curves")
FEATURE_NAMES = File("features.json", "the bundle's input columns, in order")
LABELS = File("labels.json", "the bundle's classes and label column")
MANIFEST = File("manifest.json", "the bundle's files and their SHA-256, its format version and where it came from")
SIGNATURE = File("signature.json", "the bundle's input and output shapes and dtypes")
RUN = File("run.json", "a run's report folder: the flow run, its config changes, the model version, wall seconds")
CHAMPION = File("champion.json", "the registry's champion: the version predict uses by default")


@dataclass(frozen=True)
class Kind:
    """One kind of artifact: ``artifacts/<name>/<digest>/`` holds ``files`` (``optional`` ones only sometimes)."""

    name: str
    about: str
    files: tuple[File, ...]
    made_from: tuple[str, ...] = ()
    optional: tuple[File, ...] = ()


MODEL_FILES = (PREDICTIONS, TIMING)  # every model stage's (`tasks.store.outputs`)
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("dataset", "the validated rows: float32 features, class index, split", (DATASET_TABLE, META), ("source",)),
    Kind("scaled", "the rows standardised by a scaler fitted on train", (SCALED_TABLE, SCALER, META), ("dataset",)),
    Kind("encoder_candidate", "one candidate encoder of the search, trained (one rung)",
         (ENCODER_MODEL, CONFIG, HISTORY, TRAINING, HELDOUT), ("scaled",), (SCALER,)),
    Kind("candidate_score", "a candidate's (or the ensemble's) score on held-out rows", (SCORE,),
         ("encoder_candidate",)),
    Kind("encoder", "the encoder kept (by the search, or the one configured)", (ENCODER_MODEL, CONFIG),
         ("scaled", "encoder_candidate", "candidate_score"), (NETWORK, HISTORY, TIMING, SCALER)),
    Kind("features", "every row's encoder features", (FEATURES_TABLE, META, TIMING),
         ("scaled", "encoder")),
    Kind("solver", "which SVM solver fits a table's training rows", (SOLVER,), ("scaled", "features")),
    Kind("svc_cv", "one point of the SVC grid, cross-validated", (CV,), ("scaled", "features", "solver")),
    Kind("features_svc", "the SVC on the encoder's features (written by train_svc)", (SVC_MODEL, SOLVER, CONFIG, *MODEL_FILES),
         ("features", "solver", "svc_cv"), (SEARCH,)),
    Kind("raw_svc", "raw_svc: the SVC on the scaled rows", (SVC_MODEL, SOLVER, CONFIG, *MODEL_FILES),
         ("scaled", "solver", "svc_cv"), (SEARCH,)),
    Kind("linear_hinge", "a linear Keras model trained with hinge loss", (KERAS_MODEL, HISTORY, BUDGET, *MODEL_FILES),
         ("scaled",)),
    Kind("rff_svm", "random Fourier features and a linear squared-hinge head, in Keras",
         (KERAS_MODEL, HISTORY, BUDGET, *MODEL_FILES), ("scaled",)),
    Kind("deep_hinge", "the encoder network fine-tuned end to end with a squared hinge",
         (KERAS_MODEL, HISTORY, BUDGET, *MODEL_FILES), ("scaled", "encoder")),
    Kind("knn", "k nearest neighbours", (REFERENCES, CONFIG, *MODEL_FILES), ("dataset", "scaled")),
    Kind("report", "every approach scored on the test rows", (METRICS, CHARTS, REPORT_MD, REPORT_HTML),
         ("scaled", "encoder", "features_svc", "raw_svc", "linear_hinge", "rff_svm", "deep_hinge", "knn"),
         (APPROACHES_CHART, CONFUSION_CHART, CURVES_CHART)),
    Kind("bundle", "the main path's model as one verified folder (what the registry holds and predict loads)",
         (MANIFEST, SCALER, ENCODER_MODEL, SVC_MODEL, FEATURE_NAMES, LABELS, CONFIG, METRICS),
         ("scaled", "encoder", "features_svc"), (SOLVER, SIGNATURE)),  # signed when registered
)}
def curves_chart(model: str) -> File:
    """The report's `CURVES_CHART` of one Keras model (``encoder``, ``linear_hinge`` ...)."""
    return File(CURVES_CHART.replace("*", model), CURVES_CHART.about)


def declares(kind: Kind, name: str) -> bool:
    """Whether ``name`` is one of ``kind``'s files (a ``*`` in a declared name stands for any model's name)."""
    return any(fnmatch.fnmatchcase(name, f) for f in (*kind.files, *kind.optional))


@dataclass(frozen=True)
class EncoderRecord:
    """What an ``encoder`` artifact's `CONFIG` says, for the stages that read it (the keys are this class's, so
    no stage reads another's JSON by key).

    Attributes:
        kind: the kind kept, resolved (``cnn2d``, ``rocket``, ``identity``, ``ensemble`` ...).
        candidate: the candidate kept by a search (None without one); selection: the search's table.
        budget: how long the kept network trained; settings: everything the file holds (its architecture).
        network: after a search, the settings of the best network among the candidates (None: no network).
    """

    kind: str | None
    candidate: str | None
    selection: list[dict[str, Any]] | None
    budget: dict[str, Any] | None
    settings: dict[str, Any]
    network: dict[str, Any] | None

    @property
    def searched(self) -> bool:
        return self.selection is not None


def encoder_record(ref) -> EncoderRecord:
    """The `EncoderRecord` of an ``encoder`` (or ``encoder_candidate``) artifact."""
    stored = json.loads(ref.file(CONFIG).read_text())
    return EncoderRecord(stored.get("resolved_kind"), stored.get("candidate"), stored.get("selection"),
                         stored.get("budget"), stored, stored.get("network"))

"""The catalog of approaches: the one list that config defaults, the pipeline plan, the flow,
the report and the benchmarks read.

An approach is one of the things people mean by "SVM in Keras". Each is trained by one
stage (``tasks/<stage>.py``) and scored by ``evaluate`` on the same test rows. Adding an
approach means one `Approach` row here, its stage module, and (when it has settings of
its own) its config section in `tasks.config`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Approach:
    """One approach.

    Attributes:
        name: the approach's name in ``evaluate.approaches``, ``metrics.json``, the report and ``--json``.
        stage: the stage that trains it (a module ``tasks/<stage>.py`` with a task of that name).
        section: the config section that stage receives.
        objective: one line saying what it optimises (shown in the report).
        main: True for the main path (the model that is bundled and registered).
        reads: the stages whose artifacts its stage reads (scaled rows, unless it is the main path).
        search: True when ``svc.search`` chooses its C and gamma (its stage takes the CV grid).
        holds_all: True when its model must hold every training row (it cannot stream them): past
            ``data.batch_rows`` training rows it is skipped with a notice (`skip_reason`).
        margins: True when it has margins to offer (the scikit-learn estimator,
            `tasks.core.estimator.MarginClassifier`, fits it); knn, the baseline, has none.
        early_stopping: True when its Keras fit watches a validation loss (the estimator holds rows out for it).
    """

    name: str
    stage: str
    section: str
    objective: str
    main: bool = False
    reads: tuple[str, ...] = ("scale",)
    search: bool = False
    holds_all: bool = False
    margins: bool = True
    early_stopping: bool = False


APPROACHES: tuple[Approach, ...] = (
    Approach("raw_svc", "raw_svc", "svc",
             "SVC dual (hinge loss + RBF/other kernel) on the scaled raw features", search=True),
    Approach("linear_hinge", "linear_hinge", "linear_hinge",
             "linear model, hinge loss + L2 = 1/(2 C n): the linear SVM primal, fitted by Adam"),
    Approach("features_svc", "train_svc", "svc",
             "Keras encoder (cross-entropy) learns features; SVC maximises the margin on them", main=True,
             reads=("extract_features",), search=True, early_stopping=True),
    Approach("deep_hinge", "deep_hinge", "encoder",
             "the encoder network trained end to end with one-vs-rest squared hinge",
             reads=("scale", "train_encoder"), early_stopping=True),
    Approach("rff_svm", "rff_svm", "rff_svm",
             "random Fourier features (RBF kernel approximation) + linear squared-hinge SVM, in Keras"),
    Approach("knn", "knn", "knn",
             "k nearest neighbours (Euclidean, or dynamic time warping for sequences): the classic baseline",
             reads=("ingest", "scale"), holds_all=True, margins=False),
)

NAMES: tuple[str, ...] = tuple(a.name for a in APPROACHES)
MAIN_APPROACH: str = next(a.name for a in APPROACHES if a.main)
BY_NAME: dict[str, Approach] = {a.name: a for a in APPROACHES}


def approach(name: str) -> Approach:
    """The catalog row of ``name``.

    Raises:
        KeyError: not an approach (the message lists them).
    """
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown approach {name!r} (one of {', '.join(NAMES)})") from None


def skip_reason(name: str, n_train: int, batch_rows: int) -> str | None:
    """Why approach ``name`` does not run on ``n_train`` training rows under ``data.batch_rows`` (None: it runs).

    An approach that holds every training row (`Approach.holds_all`: knn keeps them all as its model and
    compares each query with each of them, n_train x n_query distances) is skipped past
    ``data.batch_rows`` training rows, the memory bound every other stage keeps.
    """
    if BY_NAME[name].holds_all and n_train > batch_rows:
        return (f"{name} holds every training row: {n_train} training rows > data.batch_rows = {batch_rows} "
                f"(raise data.batch_rows to run it)")
    return None

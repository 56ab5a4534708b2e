"""SVMs from scikit-learn: fitting, saving and loading an ``SVC``, and the C x gamma search.

``svc.search`` scores every (C, gamma factor) grid point by stratified k-fold CV on the
training rows only (validation and test rows are never read); `best_point` picks the best
and `searched_config` returns the settings to fit and the record saved as ``search.json``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from tasks.config import SVCConfig
from tasks.core.margin import rbf_gamma
from tasks.core.metrics import metric_value
from tasks.errors import InputError

# svc.kernel = "auto": the kernel on the features of an encoder of each kind (rbf for the others and raw inputs)
AUTO_KERNEL = {"rocket": "linear"}


def resolve_kernel(config: SVCConfig, encoder_kind: str | None) -> SVCConfig:
    """``config`` with ``kernel = "auto"`` resolved for the features of an encoder of ``encoder_kind`` (None: the
    scaled inputs themselves): linear on MiniRocket's features (about 10,000 standardised PPVs, made for a linear
    classifier: on the public sequence sets an RBF SVC on them lost up to 7 points to a linear one,
    benchmarks/RESULTS.md), rbf on everything else."""
    if config.kernel != "auto":
        return config
    return config.model_copy(update={"kernel": AUTO_KERNEL.get(encoder_kind or "", "rbf")})


def fit_svc(X_train: np.ndarray, y_train: np.ndarray, config: SVCConfig, sample_weight: np.ndarray | None = None):
    """Fit ``SVC(kernel, C, gamma, class_weight)`` on (n, k) features and (n,) class indices (optionally weighted).
    ``kernel = "auto"`` not resolved for an encoder's features (`resolve_kernel`) is rbf, as for raw inputs."""
    from sklearn.svm import SVC

    config = resolve_kernel(config, None)

    return SVC(
        kernel=config.kernel, C=config.C, gamma=config.gamma, class_weight=config.class_weight,
        random_state=config.seed,
    ).fit(X_train, y_train, sample_weight=sample_weight)


PROBE_ROWS = 5000  # auto: up to this many training rows, exact without a prediction (a fit of seconds)
PROBE_MIN_SECONDS = 0.5  # auto: the sample fits double in size until one takes this long
PROBE_SAMPLE = 32_000  # auto: the most training rows the exact fit's cost is measured on
SV_SHARE_FOR_SQUARE = 0.2  # auto: from this share of support vectors per row, the exact fit grows at least as n^2


def approx_gamma(sample: np.ndarray, config: SVCConfig) -> float | None:
    """The kernel's gamma as ``SVC`` resolves it, on ``sample`` (the training rows, or a sample of them)."""
    config = resolve_kernel(config, None)
    if config.kernel == "linear":
        return None
    if config.gamma == "auto":
        return 1.0 / sample.shape[1]
    return rbf_gamma(sample, config.gamma)


def kernel_map(sample: np.ndarray, n_train: int, config: SVCConfig):
    """The approx solver's `tasks.core.nystroem.KernelMap`: centres drawn from ``sample`` (the training rows or a
    seeded sample of them), as many as `tasks.core.nystroem.components_for` gives for ``n_train`` rows."""
    from tasks.core.nystroem import KernelMap, components_for, pick_centres

    config = resolve_kernel(config, None)
    if config.kernel == "linear":
        return KernelMap("linear", None)
    m = components_for(n_train, config.approx_components)
    return KernelMap(config.kernel, pick_centres(sample, m, config.seed), approx_gamma(sample, config))


def class_weights(config: SVCConfig, counts: np.ndarray) -> dict[int, float] | None:
    return balanced_weights(counts) if config.class_weight == "balanced" else None


def fit_approx(X: np.ndarray, y: np.ndarray, config: SVCConfig, n_classes: int, val=None):
    """The approx solver (`tasks.core.nystroem`) on rows held in memory; lambda ``1 / C``, or swept on ``val``
    ((X, y) of validation rows). Returns (model, sweep table)."""
    from tasks.core import nystroem

    kmap = kernel_map(X, len(y), config)
    m = nystroem.moments([(X, y)], kmap, n_classes, class_weights(config, np.bincount(y, minlength=n_classes)))
    return nystroem.fit(kmap, m, n_classes, config.C, None if val is None else [val])


def balanced_weights(counts: np.ndarray) -> dict[int, float]:
    """``class_weight = "balanced"`` from class counts, as scikit-learn computes it: n / (k * count)."""
    present = counts > 0
    return {int(c): float(counts.sum() / (present.sum() * counts[c])) for c in np.flatnonzero(present)}


def fit_any(X: np.ndarray, y: np.ndarray, config: SVCConfig, solver: str, n_classes: int):
    """An SVC (``exact``) or the approx model (lambda ``1 / C``) fitted on rows held in memory."""
    if solver == "exact":
        return fit_svc(X, y, config)
    return fit_approx(X, y, config, n_classes)[0]


def exact_cost(X: np.ndarray, y: np.ndarray, config: SVCConfig, n_train: int,
               min_seconds: float = PROBE_MIN_SECONDS) -> tuple[float, dict[str, Any]]:
    """Predict the seconds an exact ``SVC`` fit on ``n_train`` rows takes, from fits on growing prefixes of
    (X, y) (training rows, or a seeded sample of them) shuffled by ``svc.seed``, at most `PROBE_SAMPLE` rows.

    The prefixes double from 1,000 rows until a fit takes ``min_seconds`` (or the sample is used up); the
    growth exponent between the last two extrapolates the last one (a fit under a second is timed twice
    and the faster time kept, as the times of shared machines wander). libsvm computes a kernel column of n
    values for each support vector it works on, and caches only 200 MB of them: when a large share of the
    rows are support vectors their number grows with n and the time grows at least as n^2, faster than
    small samples show (measured on 28 x 28 pixels, 59 % support vectors: 1.5 between 2,000 and 4,000
    rows, 2.0 to 2.2 from there to 20,000 and 50,000); with few support vectors (encoder features, 2.5 %)
    it stays near what the sample shows. So the exponent is kept at least ``1 + min(1, share / 0.2)``
    (``share``: the last fit's support vectors per row) and at most 3.

    Returns:
        (predicted seconds, ``{"fits": [{"rows", "seconds", "support_vectors"}...], "exponent", "floor"}``).
    """
    order = np.random.default_rng([config.seed, 11]).permutation(len(y))[:PROBE_SAMPLE]
    X, y = X[order], y[order]
    probe, s = [], min(1000, len(y))
    while True:
        seconds = math.inf
        for _ in range(2):  # a fit under a second is timed twice, the faster kept: the exponent rests on two
            start = time.perf_counter()
            model = fit_svc(X[:s], y[:s], config)
            seconds = min(seconds, time.perf_counter() - start)
            if seconds >= 1.0:
                break
        probe.append({"rows": s, "seconds": round(seconds, 4), "support_vectors": int(model.n_support_.sum())})
        if probe[-1]["seconds"] >= min_seconds or s >= len(y):
            break
        s = min(2 * s, len(y))
    last = probe[-1]
    floor = 1.0 + min(1.0, last["support_vectors"] / last["rows"] / SV_SHARE_FOR_SQUARE)
    if len(probe) >= 2 and probe[-2]["seconds"] > 0:
        a = probe[-2]
        exponent = math.log(max(last["seconds"], 1e-4) / a["seconds"]) / math.log(last["rows"] / a["rows"])
    else:
        exponent = 2.0
    exponent = min(max(exponent, floor), 3.0)
    predicted = last["seconds"] * (n_train / last["rows"]) ** exponent
    return round(predicted, 2), {"fits": probe, "exponent": round(exponent, 3), "floor": round(floor, 3)}


def resolve_solver(config: SVCConfig, n_train: int, n_features: int,
                   sample: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Which solver fits ``n_train`` training rows of ``n_features`` columns under ``svc.solver``, and why.

    ``auto`` decides by cost: ``exact`` without a prediction up to `PROBE_ROWS` rows; ``approx`` when the
    exact fit's float64 training matrix exceeds ``svc.auto_exact_max_mb``; otherwise `exact_cost` on
    ``sample`` (needed then: the training rows or a seeded sample of them) predicts the exact fit's
    seconds, and ``exact`` is chosen when that is within ``svc.auto_budget_s``.

    Returns:
        ``{"solver", "reason"}`` and, when a prediction was made, ``"predicted_seconds"`` and
        ``"probe_seconds"`` (`exact_cost`'s sample fits, exponent and floor). What was measured is named
        ``*_seconds`` and kept out of ``reason``: the rest is a function of the data and config.
    """
    if config.solver != "auto":
        return {"solver": config.solver, "reason": f"svc.solver = {config.solver}"}
    if n_train <= PROBE_ROWS:
        return {"solver": "exact", "reason": f"auto: {n_train} training rows <= {PROBE_ROWS}, an exact fit of seconds"}
    mb = n_train * n_features * 8 / 2**20
    if mb > config.auto_exact_max_mb:
        return {"solver": "approx", "reason": f"auto: the exact fit would hold {mb:,.0f} MB of training rows "
                                              f"> svc.auto_exact_max_mb = {config.auto_exact_max_mb:g}"}
    if sample is None:
        raise ValueError("resolve_solver: auto above PROBE_ROWS rows needs a sample of the training rows")
    predicted, probe = exact_cost(*sample, config, n_train)
    within = predicted <= config.auto_budget_s
    return {"solver": "exact" if within else "approx", "predicted_seconds": predicted, "probe_seconds": probe,
            "reason": f"auto: the exact fit on {n_train} rows is predicted {'within' if within else 'beyond'} "
                      f"svc.auto_budget_s = {config.auto_budget_s:g} s (by exact fits on a seeded sample)"}


def save_svc(model, path) -> None:
    """``skops.io.dump`` with the same bytes for the same model: skops names each array's file by a memory address
    and stamps the time; both are fixed (`tasks.core.stablezip`), the schema's references renamed with them."""
    import skops.io as sio

    from tasks.core.stablezip import numbering, stable_save

    arrays = numbering(r"\b(\d{6,})\.npy\b", "array-{}.npy")  # array files, and the schema's references to them
    objects = numbering(r'"__id__":\s*(\d+)', '"__id__": {}')  # object ids (shared objects refer by them)

    def clean(entries: dict[str, bytes]) -> dict[str, bytes]:
        schema = objects(arrays(entries.pop("schema.json").decode()))  # arrays numbered in the schema's order
        return {"schema.json": schema.encode(), **{arrays(name): data for name, data in entries.items()}}

    stable_save(path, lambda raw: sio.dump(model, raw), clean)


SVC_TYPES = ("sklearn.svm._classes.SVC",)
APPROX_TYPES = ("tasks.core.nystroem.NystroemRidge",)
# the approx pipeline of bundles written before the closed-form solver (Nystroem map, scaler, SGD): still loads
SGD_APPROX_TYPES = ("sklearn.pipeline.Pipeline", "sklearn.kernel_approximation.Nystroem",
                    "sklearn.preprocessing._data.StandardScaler",
                    "sklearn.linear_model._stochastic_gradient.SGDClassifier", "sklearn.linear_model._sgd_fast.Hinge")
# What skops writes for plain values: containers, strings, numbers and NumPy arrays and scalars.
_PLAIN_TYPES = {f"builtins.{t}" for t in ("bytes", "bytearray", "dict", "list", "str", "tuple", "int", "float",
                                          "bool", "NoneType", "complex", "set", "frozenset", "slice")}
_NUMPY_NAMES = {"ndarray", "dtype", "bool_", "str_", "bytes_", "object_", "float16", "float32", "float64",
                "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}


# How skops rebuilds a node (its ``__loader__``): the loaders of plain values, each with the types it may
# carry. Every other node must be an object of an allowed type rebuilt by ObjectNode or ReduceNode; any other
# loader (FunctionNode, MethodNode, OperatorFuncNode, ...) is refused, whatever type it claims.
_PLAIN_LOADERS = {"JsonNode", "DictNode", "ListNode", "TupleNode", "SetNode", "NdArrayNode", "TypeNode",
                  "SliceNode", "BytesNode", "BytearrayNode", "DTypeNode", "CachedNode"}
_OBJECT_LOADERS = {"ObjectNode", "ReduceNode", "LossNode"}  # LossNode: a ReduceNode for SGD losses


def skops_nodes(path) -> set[tuple[str, str]]:
    """Every ``(loader, module.Class)`` a skops file's schema holds, read without loading anything."""
    import json
    import zipfile

    found: set[tuple[str, str]] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if "__class__" in node:
                found.add((str(node.get("__loader__")), f"{node.get('__module__')}.{node['__class__']}"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    try:
        with zipfile.ZipFile(path) as z:
            walk(json.loads(z.read("schema.json")))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable skops file ({e})") from None
    return found


def skops_types(path) -> set[str]:
    """Every type a skops file names (``module.Class``), read from its schema without loading anything."""
    return {kind for _, kind in skops_nodes(path)}


def check_skops_types(path, objects: tuple[str, ...] | list[str]) -> None:
    """Refuse a skops file with any node but plain values and NumPy arrays (by a plain loader) and objects of
    the types ``objects`` (by skops's object loaders). The loader is checked, not only the type a node claims:
    a function loader that names ``builtins.str`` is refused.

    Raises:
        ValueError: naming the first node that is not allowed (or an unreadable file).
    """
    plain = _PLAIN_TYPES | {f"numpy.{n}" for n in _NUMPY_NAMES}
    for loader, kind in sorted(skops_nodes(path)):
        if loader in _PLAIN_LOADERS and kind in plain or loader in _OBJECT_LOADERS and kind in objects:
            continue
        if kind not in plain and kind not in objects:
            raise ValueError(f"{path}: refusing to load untrusted type {kind}")
        raise ValueError(f"{path}: refusing to load {kind} rebuilt by skops's {loader}")


def skops_load(path, objects: tuple[str, ...] | list[str]):
    """Load a skops file whose types are exactly plain values, NumPy arrays and ``objects``.

    skops trusts many scikit-learn types by default; this refuses anything not listed,
    before skops deserialises a byte.

    Raises:
        ValueError: naming the first type that is not allowed.
    """
    import skops.io as sio

    check_skops_types(path, objects)
    return sio.load(path, trusted=sorted(skops_types(path)))


def load_svc(path):
    """Load an ``.skops`` SVC (``exact``) or approx model (`tasks.core.nystroem.NystroemRidge`, or the SGD
    pipeline of earlier bundles): only the types they are made of are accepted (`skops_load`)."""
    from sklearn.pipeline import Pipeline
    from sklearn.svm import SVC

    from tasks.core.nystroem import NystroemRidge

    model = skops_load(path, (*SVC_TYPES, *APPROX_TYPES, *SGD_APPROX_TYPES))
    if type(model) in (SVC, NystroemRidge):
        return model
    if type(model) is Pipeline and [n for n, _ in model.steps][-2:] == ["scale", "svm"]:
        return model
    raise ValueError(f"{path}: holds a {type(model).__name__}, not an SVC")


def solver_of(model) -> str:
    """``exact`` for an ``SVC``, ``approx`` for the model of `fit_approx` (or an earlier SGD pipeline)."""
    from sklearn.svm import SVC

    return "exact" if isinstance(model, SVC) else "approx"


def fit_searched(train: tuple[np.ndarray, np.ndarray], config: SVCConfig, cv_rows: list[dict[str, Any]] | None,
                 sample_weight: np.ndarray | None = None):
    """Fit an SVC on ``train`` = (X, y) with C and gamma from the search rows when there are any.

    Returns:
        (model, the settings fitted, the search record or None, fit seconds).
    """
    fitted, search = searched_config(config, cv_rows)
    start = time.perf_counter()
    model = fit_svc(*train, fitted, sample_weight)
    return model, fitted, search, time.perf_counter() - start


class CVPoint(BaseModel):
    """One grid point; only what decides its score, so growing the grid keeps the old points cached."""

    model_config = ConfigDict(frozen=True)

    kernel: str
    C: float
    gamma_factor: float
    class_weight: Literal["balanced"] | None
    folds: int
    metric: str
    seed: int
    approx_components: int | Literal["auto"] = "auto"  # what the approx solver fits with, when it is the one

    def svc_config(self, gamma: float | None = None) -> SVCConfig:
        """The ``svc`` settings this point stands for (``gamma`` as resolved on the data)."""
        return SVCConfig(kernel=self.kernel, C=self.C, gamma=gamma if gamma is not None else "scale",
                         class_weight=self.class_weight, seed=self.seed, approx_components=self.approx_components)


def grid(config: SVCConfig) -> list[CVPoint]:
    """The C x gamma-factor points (C only for the linear kernel, which has no gamma). Which solver scores
    them is the fit's decision (``choose_solver``), passed to each point's task."""
    factors = [1.0] if config.kernel == "linear" else config.search_gamma_factor
    return [
        CVPoint(kernel=config.kernel, C=c, gamma_factor=f, class_weight=config.class_weight,
                folds=config.search_folds, metric=config.search_metric, seed=config.seed,
                approx_components=config.approx_components)
        for c in config.search_C for f in dict.fromkeys(factors)
    ]


def fold_count(y: np.ndarray, folds: int) -> int:
    """``folds``, lowered to the smallest class's size; at least 2.

    Raises:
        InputError: a class with a single training row cannot be cross-validated.
    """
    present = np.bincount(y)
    smallest = int(present[present > 0].min()) if y.size else 0
    if smallest < 2:
        raise InputError(f"svc.search: a class has only {smallest} training row(s); CV needs at least 2 per class")
    return min(folds, smallest)


def cv_scores(X: np.ndarray, y: np.ndarray, point: CVPoint, solver: str = "exact") -> tuple[float, list[float]]:
    """(gamma used, per-fold scores) at ``point`` on (X, y) with ``solver`` (``exact``: ``SVC``; or ``approx``)."""
    from sklearn.model_selection import StratifiedKFold

    gamma = point.gamma_factor * rbf_gamma(X, "scale")
    config = point.svc_config(gamma)
    splitter = StratifiedKFold(n_splits=fold_count(y, point.folds), shuffle=True, random_state=point.seed)
    scores, k = [], int(y.max()) + 1
    for fit_rows, score_rows in splitter.split(X, y):
        model = fit_any(X[fit_rows], y[fit_rows], config, solver, k)
        scores.append(metric_value(point.metric, y[score_rows], model.predict(X[score_rows])))
    return gamma, scores


def cv_row(X: np.ndarray, y: np.ndarray, point: CVPoint, solver: str = "exact") -> dict[str, Any]:
    """One scored grid point as ``cv.json`` holds it: the point, the solver and gamma used, fold scores, mean, std."""
    gamma, scores = cv_scores(X, y, point, solver)
    return {**point.model_dump(), "solver": solver, "gamma": gamma, "scores": scores,
            "mean": float(np.mean(scores)), "std": float(np.std(scores))}


def best_point(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(best row, table sorted best first) from the ``cv.json`` rows of scored grid points.

    Best: highest mean score; ties to the smaller C, then the gamma factor nearest 1.
    """
    if not rows:
        raise ValueError("svc.search: no grid points were scored")
    table = sorted(rows, key=lambda r: (-round(r["mean"], 12), r["C"], abs(math.log(r["gamma_factor"]))))
    return table[0], table


def searched_config(config: SVCConfig, rows: list[dict[str, Any]] | None) -> tuple[SVCConfig, dict[str, Any] | None]:
    """``config`` with the chosen C and gamma when ``rows`` came from a search, and the record to save."""
    if not rows:
        return config, None
    best, table = best_point(rows)
    gamma = best["gamma"] if config.kernel != "linear" else config.gamma
    chosen = config.model_copy(update={"C": best["C"], "gamma": gamma})
    columns = ["C", "gamma_factor", "gamma", "mean", "std", "scores"]
    record = {
        "metric": best["metric"], "folds": len(best["scores"]),
        "chosen": {"C": best["C"], "gamma": gamma, "gamma_factor": best["gamma_factor"], "mean": best["mean"]},
        "table": [{k: r[k] for k in columns} for r in table],
    }
    return chosen, record

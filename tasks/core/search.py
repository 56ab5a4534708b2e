"""How an encoder candidate (`tasks.core.candidates`) is trained for the search, and scored.

Training and scoring are separate steps (and separately cached stages): `train_candidate` trains
the network and returns the features of its held-out rows (`Heldout`); `score_heldout` fits the
selection's SVC on them. A change to the scoring SVC (``encoder.search_svc_*``) rescores without
training; the user's ``svc`` section is never read here.

Score: an ``SVC`` with ``encoder.search_svc_kernel``, ``search_svc_C`` and ``search_svc_gamma`` fitted on
the candidate's features of the fitting rows, accuracy on held-out rows (every held-out row counted
once per repeat). With at least ``search_folds_below`` training rows (or a class with a single
non-test row) the held-out rows are the val split (the candidate trained on train with early
stopping on val is also the encoder kept). With fewer, the train and val rows are pooled and split
into ``search_folds`` stratified folds, ``search_repeats`` times; on each fold the candidate trains for
the number of epochs its early-stopped model took, on the other folds. Test rows are never read.

Successive halving (`halving_rungs`, with ``encoder.search_halving`` and the val split): the networks
train a fraction of the step budget, are scored, and the better half continues from its weights,
until one has trained the whole budget. With folds (few rows, cheap fits, a few dozen held-out
rows that would rank noise) every network trains the whole budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.config import EncoderConfig, SVCConfig
from tasks.core.candidates import CHEAP_KINDS, Candidate, rung_fractions
from tasks.core.layout import Layout
from tasks.core.margin import TableRows, step_budget
from tasks.core.networks import Refitter, best_epoch, continue_training, embed, train
from tasks.core.svm import fit_svc
from tasks.obs.progress import OwnTime

# The SVC that scores a candidate fits on at most this many training rows (a seeded sample): an exact
# SVC on more would cost more than training the candidate. Built-in datasets have fewer.
SEARCH_FIT_ROWS = 10_000


@dataclass
class Heldout:
    """What scoring a trained candidate needs: per fold, the features of the rows the SVC fits on and of
    the held-out rows, with their class indices (``folds``: list of ``(F_fit, y_fit, F_held, y_held)``)."""

    folds: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    validation: str = ""

    def arrays(self) -> dict[str, np.ndarray]:
        """The folds as named arrays (``np.savez``)."""
        out = {}
        for i, fold in enumerate(self.folds):
            for name, a in zip(("F_fit", "y_fit", "F_held", "y_held"), fold, strict=True):
                out[f"{i}_{name}"] = a
        return out

    @classmethod
    def from_arrays(cls, arrays: Any, validation: str) -> Heldout:
        n = len({k.split("_", 1)[0] for k in arrays.files if "_" in k})
        return cls([tuple(arrays[f"{i}_{name}"] for name in ("F_fit", "y_fit", "F_held", "y_held"))
                    for i in range(n)], validation)


def joined(heldouts: list[Heldout]) -> Heldout:
    """The held-out features of several candidates side by side, fold by fold (an ensemble's: its features are its
    members' concatenated). Every candidate of one search holds out the same rows in the same order."""
    folds = []
    for parts in zip(*(h.folds for h in heldouts), strict=True):
        if any(not (np.array_equal(p[1], parts[0][1]) and np.array_equal(p[3], parts[0][3])) for p in parts):
            raise ValueError("the candidates' held-out rows differ; they cannot be joined")
        folds.append((np.concatenate([p[0] for p in parts], axis=1), parts[0][1],
                      np.concatenate([p[2] for p in parts], axis=1), parts[0][3]))
    return Heldout(folds, heldouts[0].validation)


def selection_svc(encoder: EncoderConfig) -> SVCConfig:
    """The SVC that scores candidates: the ``encoder.search_svc_*`` keys, the encoder's seed."""
    return SVCConfig(kernel=encoder.search_svc_kernel, C=encoder.search_svc_C, gamma=encoder.search_svc_gamma,
                     seed=encoder.seed)


def uses_folds(n_train: int, class_counts: np.ndarray, config: EncoderConfig, streamed: bool = False) -> bool:
    """True when candidates are scored by folds of train+val (few training rows), else on the val split."""
    return not streamed and n_train < config.search_folds_below and class_counts[class_counts > 0].min() >= 2


def halving_rungs(n_networks: int) -> list[float]:
    """The fractions of the step budget a network has trained at the end of each rung of successive
    halving (η = 2): 3 networks -> [1/4, 1/2, 1], 2 -> [1/2, 1], 1 -> [1]. After rung r the better
    ``ceil(k / 2)`` of its k networks continue."""
    return rung_fractions(max(math.ceil(math.log2(max(n_networks, 1))), 0) + 1)


def search_rungs(kinds: list[str], n_train: int, streamed: bool, config: EncoderConfig) -> list[float] | None:
    """The rungs of successive halving for candidates of ``kinds`` (`halving_rungs` over the networks), or None
    when every candidate trains its whole budget once: ``encoder.search_halving`` off, fewer than two
    networks, or fewer than ``search_folds_below`` training rows held in memory (scored by folds)."""
    networks = sum(k not in CHEAP_KINDS for k in kinds)
    if not config.search_halving or networks < 2 or (n_train < config.search_folds_below and not streamed):
        return None
    return halving_rungs(networks)


def search_graph(specs: list[Candidate], rungs: list[float] | None, train: Callable[..., Any],
                 score: Callable[[Any], Any], together: Callable[[list[list[Any]]], Any] | None = None,
                 ) -> tuple[list[list[Any]], list[list[Any]], Any]:
    """Lay out the search: every training and scoring call of every candidate and rung, each after the calls
    whose results it reads; returns (trained, scored), per candidate and rung, and the ensemble's score.

    ``train(i, spec, rung=[before, fraction] or None)`` trains candidate ``i`` (its first rung; ``rung`` None:
    the whole budget, one rung), and for a later rung also gets ``start`` (its own previous training),
    ``previous`` (every network's previous score) and ``position`` (its index among them); a network's first
    rung also gets ``cheap``, the scores of the cheap candidates (`CHEAP_KINDS`), which are laid out first,
    when they include ``rocket`` (sequences, where this was measured): it stops itself when they already
    decide (`tasks.core.candidates.networks_skipped`). ``score(trained)`` scores one training;
    ``together(rungs)``, when given (`tasks.core.candidates.ensemble_scored`), scores the networks' ensemble from
    every network's trainings, laid out last (None when not given). What a call is belongs to the caller: a
    Prefect task submitted (the flow, where a later rung stops itself when it is not among the better half) or a
    stage function called directly.

    Args:
        rungs: `search_rungs`'s fractions, or None (no successive halving).
    """
    networks = [i for i, c in enumerate(specs) if c.encoder.kind not in CHEAP_KINDS]
    fractions = rungs or [1.0]
    trained: list[list[Any]] = [[] for _ in specs]
    scored: list[list[Any]] = [[] for _ in specs]
    cheap = [i for i in range(len(specs)) if i not in networks]
    gate = any(specs[c].encoder.kind == "rocket" for c in cheap)  # measured on sequences only
    for i in cheap + networks:  # the cheap candidates first: the networks read their scores
        extra = {"cheap": [scored[c][0] for c in cheap]} if i in networks and gate else {}
        trained[i].append(train(i, specs[i], rung=[0.0, fractions[0]] if rungs and i in networks else None, **extra))
        scored[i].append(score(trained[i][-1]))
    for r in range(1, len(fractions)):
        previous = [scored[i][-1] for i in networks]
        for position, i in enumerate(networks):
            trained[i].append(train(i, specs[i], rung=[fractions[r - 1], fractions[r]], start=trained[i][-1],
                                    previous=previous, position=position))
            scored[i].append(score(trained[i][-1]))
    return trained, scored, together([trained[i] for i in networks]) if together is not None else None


def survivors(scores: list[float | None], keep: int) -> list[int]:
    """Indices of the ``keep`` best scores (ties: the earlier), skipping None."""
    ranked = sorted((i for i, s in enumerate(scores) if s is not None), key=lambda i: (-scores[i], i))
    return sorted(ranked[:keep])


def rung_config(config: EncoderConfig, X_train, fraction: float, before: float) -> EncoderConfig:
    """``config`` limited to the steps between ``before`` and ``fraction`` of its full step budget."""
    full = step_budget(X_train, config)
    total = min(config.max_steps, full["epochs"] * full["steps_per_epoch"])
    steps = max(round(total * fraction) - round(total * before), 1)
    return config.model_copy(update={"max_steps": steps})


def _fit_rows(X_train, y_train, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training rows the scoring SVC fits on: all, or a seeded sample of `SEARCH_FIT_ROWS` (of at most
    ``data.batch_rows`` when the rows are streamed)."""
    if isinstance(X_train, TableRows):
        return X_train.sample(min(SEARCH_FIT_ROWS, X_train.batch_rows), seed)
    if len(y_train) <= SEARCH_FIT_ROWS:
        return X_train, y_train
    rows = np.sort(np.random.default_rng(seed).choice(len(y_train), SEARCH_FIT_ROWS, replace=False))
    return X_train[rows], y_train[rows]


def _features(model, fit: tuple[np.ndarray, np.ndarray], held: tuple[np.ndarray, np.ndarray]):
    from tasks.core.networks import cut_at_features

    features = cut_at_features(model)
    return embed(features, fit[0], 1024), fit[1], embed(features, held[0], 1024), held[1]


def train_candidate(
    data: dict[str, tuple[np.ndarray, np.ndarray]], n_classes: int, layout: Layout, candidate: Candidate,
    deadline: float | None = None, callbacks: tuple = (), *, start=None, folds: bool | None = None,
    scaler: dict[str, list[float]] | None = None,
) -> tuple[Any, dict[str, list[float]], Heldout, dict[str, Any]]:
    """Train ``candidate`` and read out the features its score needs.

    Args:
        data: ``{"train": (X, y), "val": (X, y)}`` scaled rows (test rows are not given); a large training
            split is ``(TableRows, None)``, streamed, and the scoring SVC then fits on a sample of it.
        deadline: a ``time.time()`` after which no fit of this candidate starts.
        start: a Keras model to continue training (a rung of successive halving), else a fresh build.
        folds: score by folds (`uses_folds`); None decides from the data.
        scaler: the rows' scaler (a ``rocket`` candidate reads the series unscaled).
    Returns:
        (the encoder kept: trained on train, early-stopped on val; its history; the `Heldout` features;
        ``{"epochs", "train_seconds", "validation"}``).
    Raises:
        tasks.core.networks.BudgetSpent: the deadline passed before one of its fits could start.
    """
    config = candidate.encoder
    (X_train, y_train), (X_val, y_val) = data["train"], data["val"]
    streamed = isinstance(X_train, TableRows)
    pooled = np.bincount(y_val) if streamed else np.bincount(np.concatenate([y_train, y_val]))
    if folds is None:
        folds = uses_folds(len(X_train), pooled, config, streamed)
    with OwnTime() as own:  # not counting waits for the Keras lock
        if start is None:
            model, history = train(X_train, y_train, X_val, y_val, n_classes, config, layout, callbacks,
                                   deadline=deadline, scaler=scaler)
        else:
            model, history = continue_training(start, X_train, y_train, X_val, y_val, n_classes, config, callbacks,
                                               deadline=deadline)
        epochs = best_epoch(history) + 1 if history else 0
        if not folds:
            fit = _fit_rows(X_train, y_train, config.seed)
            heldout = Heldout([_features(model, fit, (X_val, y_val))])
            heldout.validation = "val split" if len(fit[1]) == len(X_train) else \
                f"val split, the SVC fitted on {len(fit[1])} of {len(X_train)} training rows"
        else:
            from sklearn.model_selection import RepeatedStratifiedKFold

            X, y = np.concatenate([X_train, X_val]), np.concatenate([y_train, y_val])
            k = min(config.search_folds, int(pooled[pooled > 0].min()))
            splitter = RepeatedStratifiedKFold(n_splits=k, n_repeats=config.search_repeats, random_state=config.seed)
            heldout, refit = Heldout(validation=f"{k} folds x {config.search_repeats} of train+val"), \
                Refitter(X.shape[1], n_classes, config, layout, scaler)
            for fit_rows, held_rows in splitter.split(X, y):
                fold_model = refit.fit(X[fit_rows], y[fit_rows], max(epochs, 1), deadline)
                heldout.folds.append(_features(fold_model, (X[fit_rows], y[fit_rows]), (X[held_rows], y[held_rows])))
    return model, history, heldout, {"epochs": epochs, "train_seconds": round(own.seconds, 3),
                                     "validation": heldout.validation}


def score_heldout(heldout: Heldout, svc: SVCConfig) -> dict[str, Any]:
    """The selection's SVC fitted on each fold's fitting features, scored on its held-out features.

    Returns:
        ``{"score", "scores", "correct", "validation"}``: ``score`` the share of held-out rows classified
        right, ``scores`` per fold, ``correct`` per held-out row (0/1, in an order every candidate of the same
        data shares, so candidates compare row by row).
    """
    correct = [(fit_svc(F_fit, y_fit, svc).predict(F_held) == y_held).astype(np.int64)
               for F_fit, y_fit, F_held, y_held in heldout.folds]
    every = np.concatenate(correct)
    return {"score": float(every.mean()), "scores": [float(c.mean()) for c in correct], "correct": every.tolist(),
            "validation": heldout.validation}

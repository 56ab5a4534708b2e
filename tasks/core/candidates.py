"""The encoder candidates of ``encoder.kind = "auto"``, and how one is scored on validation rows.

Each layout has a small fixed set; none was chosen by looking at one dataset's test rows.
Every set ends with ``identity`` (the scaled inputs are the features), so the chosen
encoder's features are never worse for the SVC on validation than the raw inputs are.

Image ``[H, W, C]``, shift ``s = max(1, round(min(H, W) / 8))`` pixels:

* ``cnn2d-shift``: conv 32, 64 (3x3, 2x2 max-pool each), flatten, dense 256, 128, dropout 0.3, random shifts of up to ``s``;
* ``cnn2d-deep-shift``: conv 32, 64, 128, otherwise the same;
* ``cnn2d``: conv 32, 64 without shifts;

Sequence ``[T, C]``, shift ``s = max(1, round(0.15 T))`` steps:

* ``cnn1d-wide-shift``: conv 64, 128, 128 (kernel 7), flatten, dense 512, 128, dropout 0.3, shifts of up to ``s``;
* ``cnn1d-norm-gap``: conv 64, 128, 128 (kernel 9) with batch normalisation, global average pooling, dense 128;
* ``cnn1d-norm-gap-shift``: the same with kernel 5 and shifts of up to ``s``;

Table ``[d]``: ``mlp`` (dense 256, 128, dropout 0.1) and ``mlp-narrow`` (dense 64, 32, dropout 0.3).

Training length: candidates with shifts train up to 150 epochs (patience 25, batch 32: each
epoch sees newly shifted rows), the others up to 60 (patience 10, batch 32 or 64). The
learning rate, activation, objective and seed are the ``encoder`` section's.

Score: the features + SVC path, i.e. an ``SVC`` with the ``svc`` section's kernel, C, gamma and
class weights fitted on the candidate's features of the fitting rows, accuracy on held-out
rows. With at least ``search_folds_below`` training rows (or a class with a single non-test row)
the held-out rows are the val split
(the candidate trained on train with early stopping on val is also the encoder kept). With
fewer, the train and val rows are pooled and split into ``search_folds`` stratified folds,
``search_repeats`` times; on each fold the candidate trains for the number of epochs its
early-stopped model took, on the other folds. Test rows are never read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from tasks.config import EncoderConfig, SVCConfig
from tasks.core.layout import Layout
from tasks.core.networks import Refitter, best_epoch, embed, train
from tasks.core.svm import fit_svc, fold_count
from tasks.store.progress import OwnTime

_LONG = {"epochs": 150, "patience": 25, "batch_size": 32}
_SHORT = {"epochs": 60, "patience": 10, "batch_size": 32}


class Candidate(BaseModel):
    """One candidate: a name and the whole encoder section it trains with."""

    model_config = ConfigDict(frozen=True)

    name: str
    encoder: EncoderConfig


def candidate_set(layout: Layout, base: EncoderConfig) -> list[Candidate]:
    """The candidates for ``layout`` (module docstring), built on ``base``'s learning rate, activation,
    objective and seed; ``identity`` last."""
    keep = {"learning_rate": base.learning_rate, "activation": base.activation, "objective": base.objective,
            "seed": base.seed, "search_budget_s": base.search_budget_s, "search_folds": base.search_folds,
            "search_repeats": base.search_repeats, "search_folds_below": base.search_folds_below}
    if layout.kind == "image":
        s = max(1, round(min(layout.shape[:2]) / 8))
        conv = {"kind": "cnn2d", "kernel_size": 3, "pooling": "flatten", "hidden": [256, 128], "dropout": 0.3}
        rows = [("cnn2d-shift", {**conv, "filters": [32, 64], "augment_shift": s, **_LONG}),
                ("cnn2d-deep-shift", {**conv, "filters": [32, 64, 128], "augment_shift": s, **_LONG}),
                ("cnn2d", {**conv, "filters": [32, 64], **_SHORT})]
    elif layout.kind == "sequence":
        s = max(1, round(0.15 * layout.shape[0]))
        gap = {"kind": "cnn1d", "filters": [64, 128, 128], "pooling": "global_avg", "batch_norm": True,
               "hidden": [128], "dropout": 0.1}
        rows = [("cnn1d-wide-shift", {"kind": "cnn1d", "filters": [64, 128, 128], "kernel_size": 7, "pooling": "flatten",
                                      "hidden": [512, 128], "dropout": 0.3, "augment_shift": s, **_LONG}),
                ("cnn1d-norm-gap", {**gap, "kernel_size": 9, **_SHORT}),
                ("cnn1d-norm-gap-shift", {**gap, "kernel_size": 5, "augment_shift": s, **_LONG})]
    else:
        rows = [("mlp", {"kind": "mlp", "hidden": [256, 128], "dropout": 0.1, **_SHORT, "batch_size": 64}),
                ("mlp-narrow", {"kind": "mlp", "hidden": [64, 32], "dropout": 0.3, **_SHORT})]
    rows.append(("identity", {"kind": "identity"}))
    return [Candidate(name=name, encoder=EncoderConfig(**{**keep, **values})) for name, values in rows]


def _svc_accuracy(model, fit: tuple[np.ndarray, np.ndarray], held: tuple[np.ndarray, np.ndarray],
                  svc: SVCConfig) -> float:
    from tasks.core.networks import cut_at_features

    features = cut_at_features(model)
    F_fit, F_held = embed(features, fit[0], 1024), embed(features, held[0], 1024)
    pred = fit_svc(F_fit, fit[1], svc).predict(F_held)
    return float(np.mean(pred == held[1]))


def score_candidate(
    data: dict[str, tuple[np.ndarray, np.ndarray]], n_classes: int, layout: Layout, candidate: Candidate,
    svc: SVCConfig, deadline: float | None = None, callbacks: tuple = (),
) -> tuple[Any, dict[str, list[float]], dict[str, Any]]:
    """Train ``candidate`` and score its features + SVC on held-out non-test rows.

    Args:
        data: ``{"train": (X, y), "val": (X, y)}`` scaled rows (test rows are not given).
        deadline: a ``time.time()`` after which no fit of this candidate starts.
    Returns:
        (the encoder kept: trained on train, early-stopped on val; its history;
        ``{"score", "scores", "validation", "epochs", "seconds"}``).
    Raises:
        tasks.core.networks.BudgetSpent: the deadline passed before one of its fits could start.
    """
    config = candidate.encoder
    (X_train, y_train), (X_val, y_val) = data["train"], data["val"]
    with OwnTime() as own:  # not counting waits for the Keras lock
        model, history = train(X_train, y_train, X_val, y_val, n_classes, config, layout, callbacks,
                               deadline=deadline)
        epochs = best_epoch(history) + 1 if history else 0
        pooled = np.bincount(np.concatenate([y_train, y_val]))
        if len(y_train) >= config.search_folds_below or pooled[pooled > 0].min() < 2:
            scores, how = [_svc_accuracy(model, (X_train, y_train), (X_val, y_val), svc)], "val split"
        else:
            from sklearn.model_selection import RepeatedStratifiedKFold

            X, y = np.concatenate([X_train, X_val]), np.concatenate([y_train, y_val])
            k = fold_count(y, config.search_folds)
            folds = RepeatedStratifiedKFold(n_splits=k, n_repeats=config.search_repeats, random_state=config.seed)
            scores, refit = [], Refitter(X.shape[1], n_classes, config, layout)
            for fit_rows, held_rows in folds.split(X, y):
                fold_model = refit.fit(X[fit_rows], y[fit_rows], max(epochs, 1), deadline)
                scores.append(_svc_accuracy(fold_model, (X[fit_rows], y[fit_rows]), (X[held_rows], y[held_rows]),
                                            svc))
            how = f"{k} folds x {config.search_repeats} of train+val"
    return model, history, {"score": float(np.mean(scores)), "scores": scores, "validation": how,
                            "epochs": epochs, "seconds": round(own.seconds, 3)}

"""How an encoder candidate (`tasks.core.candidates`) is scored on validation rows.

Score: the features + SVC path, i.e. an ``SVC`` with the ``svc`` section's kernel, C, gamma and
class weights fitted on the candidate's features of the fitting rows, accuracy on held-out
rows (every held-out row counted once per repeat). With at least ``search_folds_below`` training rows (or a class with a single non-test row)
the held-out rows are the val split
(the candidate trained on train with early stopping on val is also the encoder kept). With
fewer, the train and val rows are pooled and split into ``search_folds`` stratified folds,
``search_repeats`` times; on each fold the candidate trains for the number of epochs its
early-stopped model took, on the other folds. Test rows are never read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.config import SVCConfig
from tasks.core.candidates import Candidate
from tasks.core.layout import Layout
from tasks.core.margin import TableRows
from tasks.core.networks import Refitter, best_epoch, embed, train
from tasks.core.svm import fit_svc
from tasks.store.progress import OwnTime

# The SVC that scores a candidate fits on at most this many training rows (a seeded sample): an exact
# SVC on more would cost more than training the candidate. Built-in datasets have fewer.
SEARCH_FIT_ROWS = 10_000


def _fit_rows(X_train, y_train, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training rows the scoring SVC fits on: all, or a seeded sample of `SEARCH_FIT_ROWS` (of at most
    ``data.batch_rows`` when the rows are streamed)."""
    if isinstance(X_train, TableRows):
        from tasks.store.tables import load_split

        return load_split(X_train.ref, X_train.split, max_rows=min(SEARCH_FIT_ROWS, X_train.batch_rows), seed=seed)
    if len(y_train) <= SEARCH_FIT_ROWS:
        return X_train, y_train
    rows = np.sort(np.random.default_rng(seed).choice(len(y_train), SEARCH_FIT_ROWS, replace=False))
    return X_train[rows], y_train[rows]


def _svc_accuracy(model, fit: tuple[np.ndarray, np.ndarray], held: tuple[np.ndarray, np.ndarray],
                  svc: SVCConfig) -> np.ndarray:
    """(n_held,) 1 where the SVC on the model's features classifies a held-out row right, else 0."""
    from tasks.core.networks import cut_at_features

    features = cut_at_features(model)
    F_fit, F_held = embed(features, fit[0], 1024), embed(features, held[0], 1024)
    pred = fit_svc(F_fit, fit[1], svc).predict(F_held)
    return (pred == held[1]).astype(np.int64)


def score_candidate(
    data: dict[str, tuple[np.ndarray, np.ndarray]], n_classes: int, layout: Layout, candidate: Candidate,
    svc: SVCConfig, deadline: float | None = None, callbacks: tuple = (),
) -> tuple[Any, dict[str, list[float]], dict[str, Any]]:
    """Train ``candidate`` and score its features + SVC on held-out non-test rows.

    Args:
        data: ``{"train": (X, y), "val": (X, y)}`` scaled rows (test rows are not given); a large training
            split is ``(TableRows, None)``, streamed, and the scoring SVC then fits on a sample of it.
        deadline: a ``time.time()`` after which no fit of this candidate starts.
    Returns:
        (the encoder kept: trained on train, early-stopped on val; its history;
        ``{"score", "scores", "correct", "validation", "epochs", "train_seconds"}``: ``score`` the share of
        held-out rows classified right, ``scores`` per fold, ``correct`` per held-out row (0/1, in an order
        every candidate of the same data shares, so candidates compare row by row).
    Raises:
        tasks.core.networks.BudgetSpent: the deadline passed before one of its fits could start.
    """
    config = candidate.encoder
    (X_train, y_train), (X_val, y_val) = data["train"], data["val"]
    with OwnTime() as own:  # not counting waits for the Keras lock
        model, history = train(X_train, y_train, X_val, y_val, n_classes, config, layout, callbacks,
                               deadline=deadline)
        epochs = best_epoch(history) + 1 if history else 0
        streamed = isinstance(X_train, TableRows)
        pooled = np.bincount(y_val) if streamed else np.bincount(np.concatenate([y_train, y_val]))
        if streamed or len(y_train) >= config.search_folds_below or pooled[pooled > 0].min() < 2:
            fit = _fit_rows(X_train, y_train, config.seed)
            correct = [_svc_accuracy(model, fit, (X_val, y_val), svc)]
            how = "val split" if len(fit[1]) == len(X_train) else \
                f"val split, the SVC fitted on {len(fit[1])} of {len(X_train)} training rows"
        else:
            from sklearn.model_selection import RepeatedStratifiedKFold

            X, y = np.concatenate([X_train, X_val]), np.concatenate([y_train, y_val])
            k = min(config.search_folds, int(pooled[pooled > 0].min()))
            folds = RepeatedStratifiedKFold(n_splits=k, n_repeats=config.search_repeats, random_state=config.seed)
            correct, refit = [], Refitter(X.shape[1], n_classes, config, layout)
            for fit_rows, held_rows in folds.split(X, y):
                fold_model = refit.fit(X[fit_rows], y[fit_rows], max(epochs, 1), deadline)
                correct.append(_svc_accuracy(fold_model, (X[fit_rows], y[fit_rows]), (X[held_rows], y[held_rows]),
                                             svc))
            how = f"{k} folds x {config.search_repeats} of train+val"
    every = np.concatenate(correct)
    return model, history, {"score": float(every.mean()), "scores": [float(c.mean()) for c in correct],
                            "correct": every.tolist(), "validation": how, "epochs": epochs,
                            "train_seconds": round(own.seconds, 3)}

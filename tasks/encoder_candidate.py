"""Stage encoder_candidate: train one candidate encoder of ``encoder.kind = "auto"`` (one rung of it).

The flow maps this task over `tasks.core.candidates.candidate_set` (one cached task per candidate
and rung of successive halving), ``score_candidate`` scores each, and ``train_encoder`` keeps the
best. Output artifact ``encoder_candidate``: ``encoder.keras``, ``config.json`` (as
``train_encoder`` writes it, plus the candidate's name and rung), ``history.json`` (every rung so
far), ``train.json`` (epochs, seconds, how it is validated) and ``heldout.npz`` (the features the
score needs, `tasks.core.search.Heldout`). Test rows are never read, and neither is the ``svc``
section: scoring is ``score_candidate``'s.

``deadline`` (not part of the cache key) is the search budget's end: a candidate that is not
cached and cannot start before it returns nothing and writes nothing. A rung after the first
(``start``: this candidate's artifact of the previous rung; ``previous``: every network's score
of that rung) continues from the previous rung's weights, or returns nothing when the candidate is
not among the better half of the previous rung. A survivor whose previous rung ended by early
stopping has converged: its artifact goes on to the next rung unchanged (and its score is a cache hit).
"""

from __future__ import annotations

import numpy as np

from tasks._rows import keras_rows
from tasks.core.candidates import Candidate, networks_skipped
from tasks.core.layout import Layout
from tasks.core.margin import budget_used, step_budget
from tasks.core.networks import BudgetSpent, encoder_config_json, load_encoder, save_keras
from tasks.core.search import rung_config, survivors, train_candidate
from tasks.obs.progress import SHARED_IMPORTS, import_once
from tasks.obs.runlog import epoch_progress, stage_logger
from tasks.store.artifacts import ArtifactRef, ArtifactWriter, read_json
from tasks.store.cache import stage
from tasks.store.kinds import CONFIG, ENCODER_MODEL, HELDOUT, HISTORY, SCALER, SCORE, TRAINING
from tasks.store.tables import read_meta


def candidate_row(inputs: dict) -> str:
    """The display row of a candidate's training: ``candidate <name>``."""
    return f"candidate {inputs['candidate'].name}"


@stage("encoder_candidate", imports=(), label=candidate_row)
def encoder_candidate(scaled: ArtifactRef, candidate: Candidate, root: str, rung: list[float] | None = None,
                      start: ArtifactRef | None = None, previous: list[ArtifactRef | None] | None = None,
                      position: int = 0, deadline: float | None = None,
                      cheap: list[ArtifactRef | None] | None = None) -> ArtifactRef | None:
    """Train ``candidate`` on ``scaled``'s train rows (early stopping on val); None when the budget is spent
    or successive halving stopped it.

    Args:
        rung: ``[before, fraction]``: train from ``before`` to ``fraction`` of the step budget (None: all of it,
            and score by folds when the data is small).
        start, previous, position: a later rung's inputs (module docstring); ``position`` is this
            candidate's index in ``previous``.
        cheap: a network's first rung: the cheap candidates' scores; nothing is trained when they decide
            (`tasks.core.candidates.networks_skipped`).
    """
    log = stage_logger()
    if cheap:
        reason = networks_skipped([None if c is None else read_json(c, SCORE)["score"] for c in cheap],
                                  int(read_meta(scaled)["split_sizes"]["train"]), candidate.encoder)
        if reason is not None:
            log.info("encoder candidate %s: not trained: %s", candidate.name, reason)
            return None
    if previous is not None:
        scores = [None if p is None else read_json(p, SCORE)["score"] for p in previous]
        alive = [i for i, s in enumerate(scores) if s is not None]
        if start is None or position not in survivors(scores, (len(alive) + 1) // 2):
            log.info("encoder candidate %s: stopped by successive halving after %.0f%% of its steps",
                     candidate.name, 100 * (rung or [0.0])[0])
            return None
    before = None if start is None else read_json(start, TRAINING)
    if before is not None and before.get("stopped_early"):
        log.info("encoder candidate %s: early stopping ended its last rung, it goes on as it is", candidate.name)
        return start
    import_once(*SHARED_IMPORTS)
    X_train, y_train, val, meta = keras_rows(scaled, candidate.encoder)
    layout = Layout.from_meta(meta)
    n_classes = len(meta["classes"])
    config = candidate.encoder if rung is None else rung_config(candidate.encoder, X_train, rung[1], rung[0])
    try:
        model, history, heldout, info = train_candidate(
            {"train": (X_train, y_train), "val": val}, n_classes, layout, candidate.model_copy(update={"encoder": config}),
            None if start is not None else deadline, callbacks=(epoch_progress("encoder_candidate"),),
            start=None if start is None else load_encoder(start.file(ENCODER_MODEL)),
            folds=None if rung is None else False, scaler=read_json(scaled, SCALER))
    except BudgetSpent:
        log.info("encoder candidate %s: not started, encoder.search_budget_s is spent", candidate.name)
        return None
    info["stopped_early"] = bool(history) and len(history["loss"]) < step_budget(X_train, config)["epochs"]
    if start is not None:  # the whole training so far
        earlier = read_json(start, HISTORY)
        history = {k: earlier.get(k, []) + v for k, v in history.items()}
        info["train_seconds"] = round(info["train_seconds"] + before["train_seconds"], 3)
    if rung is not None:  # what the report shows: epochs trained in all, over every rung (no folds follow)
        info["epochs"] = len(history.get("loss", []))
    log.info("encoder candidate %s: trained %s%d epochs, %.1f s", candidate.name,
             "" if rung is None else f"to {100 * rung[1]:.0f}% of its step budget, ", len(history.get("loss", [])),
             info["train_seconds"])
    params = {"scaled": scaled.sha256, "candidate": candidate.model_dump(), "rung": rung,
              "start": None if start is None else start.sha256}
    with ArtifactWriter(root, "encoder_candidate", params) as w:
        save_keras(model, w.path(ENCODER_MODEL))
        w.write_json(CONFIG, {**encoder_config_json(candidate.encoder, layout, val[0].shape[1], n_classes,
                                                           info["epochs"]), "candidate": candidate.name,
                                     # the whole budget, as the history covers every rung so far
                                     "rung": rung, "budget": budget_used(X_train, candidate.encoder, history)})
        w.write_json(HISTORY, history)
        w.write_json(TRAINING, {"candidate": candidate.name, "rung": rung, **info})
        with open(w.path(HELDOUT), "wb") as f:
            np.savez(f, **heldout.arrays())
    return w.ref

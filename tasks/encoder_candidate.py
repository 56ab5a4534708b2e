"""Stage encoder_candidate: train one candidate encoder of ``encoder.kind = "auto"`` and score it.

The flow maps this task over `tasks.core.candidates.candidate_set` (one cached task per
candidate), and ``train_encoder`` keeps the best. Output artifact ``encoder_candidate``:
``encoder.keras``, ``config.json`` (as ``train_encoder`` writes it, plus the candidate's name),
``history.json`` and ``score.json`` (validation score, per-fold scores, epochs, seconds).
Test rows are never read. ``deadline`` (not part of the cache key) is the search budget's end:
a candidate that is not cached and cannot start before it returns nothing and writes nothing.
"""

from __future__ import annotations

from tasks.config import SVCConfig
from tasks.core.candidates import Candidate
from tasks.core.layout import Layout
from tasks.core.margin import budget_used
from tasks.core.networks import BudgetSpent, encoder_config_json, keras_rows
from tasks.core.search import score_candidate
from tasks.store.artifacts import ArtifactRef, ArtifactWriter
from tasks.store.cache import stage
from tasks.store.runlog import epoch_progress, stage_logger


@stage("encoder_candidate")
def encoder_candidate(scaled: ArtifactRef, candidate: Candidate, svc: SVCConfig, root: str,
                      deadline: float | None = None) -> ArtifactRef | None:
    """Train and score ``candidate`` on ``scaled``'s train and val rows; None when the budget is spent."""
    X_train, y_train, val, meta = keras_rows(scaled, candidate.encoder)
    layout = Layout.from_meta(meta)
    n_classes = len(meta["classes"])
    log = stage_logger()
    try:
        model, history, score = score_candidate(
            {"train": (X_train, y_train), "val": val}, n_classes, layout, candidate, svc, deadline,
            callbacks=(epoch_progress("encoder_candidate"),))
    except BudgetSpent:
        log.info("encoder candidate %s: not started, encoder.search_budget_s is spent", candidate.name)
        return None
    log.info("encoder candidate %s: validation accuracy %.4f (%s), %d epochs, %.1f s", candidate.name,
             score["score"], score["validation"], score["epochs"], score["train_seconds"])
    params = {"scaled": scaled.sha256, "candidate": candidate.model_dump(), "svc": svc.model_dump()}
    with ArtifactWriter(root, "encoder_candidate", params) as w:
        model.save(w.path("encoder.keras"))
        w.write_json("config.json", {**encoder_config_json(candidate.encoder, layout, val[0].shape[1], n_classes,
                                                           score["epochs"]), "candidate": candidate.name,
                                     "budget": budget_used(X_train, candidate.encoder, history)})
        w.write_json("history.json", history)
        w.write_json("score.json", {"candidate": candidate.name, **score})
    return w.ref

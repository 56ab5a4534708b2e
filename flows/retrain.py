"""The retrain flow: run the pipeline on the configured source, then champion vs challenger.

1. The pipeline runs as a subflow. Unchanged data and config mean every stage is a cache
   hit: no model is trained and the bundle is the one already registered.
2. Its bundle is registered (`tasks.registry`); with no champion yet it becomes champion.
3. Otherwise the challenger and the champion are both loaded from their verified bundles
   and scored on the same rows: this run's test split, raw features in, labels compared in
   their original values. The challenger is promoted when its ``retrain.metric`` is at
   least the champion's minus ``retrain.tolerance``.
4. The decision, with both scores, is logged, appended to the registry's history and
   published as a Prefect markdown artifact (key ``marginflow-decision``).

``marginflow retrain`` runs this flow once; ``marginflow serve --cron`` serves it on a schedule.
"""

# No ``from __future__ import annotations`` here: Prefect builds the flow's parameter model
# from the real annotation objects when a served run loads this module by its entrypoint.
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from pydantic import BaseModel

from flows.pipeline import PipelineResult, pipeline
from tasks.artifacts import ArtifactRef
from tasks.config import Config
from tasks.errors import InputError
from tasks.registry import Registry


class Decision(BaseModel):
    challenger: str | None
    champion_before: str | None
    champion_after: str | None
    promoted: bool
    metric: str
    tolerance: float
    challenger_score: float | None = None
    champion_score: float | None = None
    n_rows: int = 0
    reason: str


@task(name="score_models")
def score_models(dataset: ArtifactRef, models: dict[str, str], metric: str) -> dict[str, Any]:
    """Score each bundle (role -> directory) on the test rows of a ``dataset`` artifact.

    Returns role -> score, or role -> error text when a bundle cannot read these rows.
    """
    from tasks.bundle import Bundle
    from tasks.evaluate import metric_value
    from tasks.ingest import LABEL, SPLIT, read_dataset

    frame, meta = read_dataset(dataset)
    test = frame[frame[SPLIT] == "test"]
    y = np.asarray(meta["classes"], dtype=object)[test[LABEL].to_numpy()]
    X = test[meta["feature_names"]]
    scores: dict[str, Any] = {"n_rows": int(len(test))}
    for role, path in models.items():
        try:
            predicted = Bundle.load(path).predict(X)
            scores[role] = metric_value(metric, y.astype(str), np.asarray(predicted).astype(str))
        except InputError as e:
            scores[role] = f"cannot score: {e}"
    return scores


def _markdown(d: Decision) -> str:
    def shown(v):
        return "n/a" if v is None else f"{v:.4f}"

    return "\n".join([
        f"# Retrain decision: {'promoted ' + str(d.challenger) if d.promoted else 'kept ' + str(d.champion_after)}",
        "",
        "| | version | " + d.metric + " |",
        "|---|---|---|",
        f"| challenger | {d.challenger} | {shown(d.challenger_score)} |",
        f"| champion before | {d.champion_before} | {shown(d.champion_score)} |",
        "",
        f"Scored on {d.n_rows} test rows; tolerance {d.tolerance}. {d.reason}",
        f"Champion now: **{d.champion_after}**.",
    ]) + "\n"


def decide(challenger_score: float, champion_score: float, tolerance: float) -> bool:
    """Promote when the challenger is at least as good, within ``tolerance``."""
    return challenger_score >= champion_score - tolerance - 1e-12


@flow(name="marginflow-retrain", description="Retrain on the configured source; promote the challenger if it is at least as good")
def retrain(config: Config, data_dir: str = "data") -> Decision:
    """Run the pipeline, register its model, and promote it over the champion if good enough."""
    log = get_run_logger()
    root = str(Path(data_dir).resolve())
    registry = Registry(root)
    before = registry.champion()
    result: PipelineResult = pipeline(config=config, data_dir=root)
    challenger, metric, tol = result.model, config.retrain.metric, config.retrain.tolerance
    common = {"challenger": challenger, "champion_before": before, "metric": metric, "tolerance": tol}
    if before is None:
        decision = Decision(**common, champion_after=registry.champion(), promoted=True,
                            reason="No champion yet: the first model is promoted.")
    elif challenger == before:
        decision = Decision(**common, champion_after=before, promoted=False,
                            reason="Nothing new: this run's model is the champion's bundle (the stages came from the cache).")
    else:
        scores = score_models(result.artifacts["ingest"],
                              {"challenger": str(registry.path(challenger)), "champion": str(registry.path(before))},
                              metric)
        if isinstance(scores["challenger"], str):
            raise InputError(f"model {challenger}: {scores['challenger']}")
        ch, champ = scores["challenger"], scores["champion"]
        if isinstance(champ, str):
            promote, champ_score = True, None
            reason = f"The champion {champ}; the challenger is promoted."
        else:
            promote, champ_score = decide(ch, champ, tol), champ
            reason = (f"Challenger {metric} {ch:.4f} vs champion {champ:.4f}: "
                      + ("at least as good within tolerance, promoted." if promote else "worse, not promoted."))
        if promote:
            registry.promote(challenger, reason=f"retrain: {reason}")
        decision = Decision(**common, champion_after=registry.champion(), promoted=promote,
                            challenger_score=ch, champion_score=champ_score, n_rows=scores["n_rows"], reason=reason)
    log.info("retrain decision: %s", decision.reason)
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=_markdown(decision), key="marginflow-decision",
                             description="champion/challenger decision of this retrain run")
    registry.log_decision(decision.model_dump())
    return decision

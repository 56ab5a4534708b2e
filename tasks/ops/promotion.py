"""Champion vs challenger: score two model bundles on the same rows and decide a promotion.

Plain functions; the ``choose_champion`` task (`tasks.choose_champion`) runs `choose` in the
``retrain`` flow and publishes the decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from tasks.config import RetrainConfig
from tasks.core.metrics import metric_value
from tasks.errors import InputError
from tasks.ops.bundle import Bundle
from tasks.ops.registry import ChampionChanged, Registry
from tasks.store.artifacts import ArtifactRef
from tasks.store.tables import batch_rows_of, iter_split, labels, read_meta


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


@dataclass(frozen=True)
class Score:
    """One bundle's score on the test rows: ``value``, or ``problem`` (why it cannot be scored on them)."""

    value: float | None = None
    problem: str | None = None


def score_models(dataset: ArtifactRef, models: dict[str, str], metric: str) -> tuple[int, dict[str, Score]]:
    """Score each bundle (role -> directory) on the test rows of a ``dataset`` artifact.

    Returns (the number of test rows, role -> `Score`); a bundle that cannot read these rows gets its problem.
    """
    import pandas as pd

    meta = read_meta(dataset)
    classes = np.asarray(meta["classes"], dtype=object)
    y = classes[labels(dataset, "test")]
    scores: dict[str, Score] = {}
    for role, path in models.items():
        try:
            model = Bundle.load(path)
            predicted = [model.predict(pd.DataFrame(X, columns=meta["feature_names"]))
                         for X, _ in iter_split(dataset, "test", batch_rows_of(meta))]  # a batch at a time
            scores[role] = Score(value=metric_value(metric, y.astype(str), np.concatenate(predicted).astype(str)))
        except InputError as e:
            scores[role] = Score(problem=str(e))
    return int(len(y)), scores


def markdown(d: Decision) -> str:
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


def choose(dataset: ArtifactRef, challenger: str | None, before: str | None, config: RetrainConfig,
           root: str) -> Decision:
    """Promote ``challenger`` over the champion of the moment if it scores well enough.

    The challenger is compared with the champion when the decision is made (not when the run began: a version
    promoted by hand meanwhile is the one to beat), and promoted only if that version is still champion,
    checked under the registry lock; if another process changed the champion in between, the decision is made
    again against the new one (`CHAMPION_RETRIES` times at most).

    Args:
        dataset: the run's ``dataset`` artifact; both models are scored on its test rows.
        challenger: the run's registered version; before: the champion when the run began (None: none yet).
    """
    registry = Registry(root)
    metric, tol = config.metric, config.tolerance
    for _ in range(CHAMPION_RETRIES):
        current = registry.champion()
        common = {"challenger": challenger, "champion_before": current, "metric": metric, "tolerance": tol}
        if before is None and current == challenger:
            decision = Decision(**common, champion_after=current, promoted=True,
                                reason="No champion yet: the first model is promoted.")
        elif challenger == current:
            stored = registry.version(current).metrics  # scored when it was made; this run's rows are the same
            value = stored.get(metric)
            value = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
            decision = Decision(**common, champion_after=current, promoted=False, challenger_score=value,
                                champion_score=value,
                                n_rows=stored["n_test"] if isinstance(stored.get("n_test"), int) else 0,
                                reason="Nothing new: this run's model is the champion's bundle (the stages came from "
                                       "the cache); the scores shown are the champion's stored test scores.")
        else:
            roles = {"challenger": str(registry.path(challenger))}
            if current is not None:
                roles["champion"] = str(registry.path(current))
            n_rows, scores = score_models(dataset, roles, metric)
            if scores["challenger"].problem is not None:
                raise InputError(f"model {challenger}: cannot score: {scores['challenger'].problem}")
            champion = scores.get("champion", Score(problem="no champion"))
            ch, champ = scores["challenger"].value, champion.value
            if champ is None:
                promote = True
                reason = f"champion unusable: {champion.problem}; the challenger is promoted."
            else:
                promote = decide(ch, champ, tol)
                reason = (f"Challenger {metric} {ch:.4f} vs champion {champ:.4f}: "
                          + ("at least as good within tolerance, promoted." if promote else "worse, not promoted."))
            if current != before:
                reason += f" (The champion was {before} when this run began; {current} was promoted meanwhile.)"
            if promote:
                try:
                    registry.promote(challenger, reason=f"retrain: {reason}", expected=current)
                except ChampionChanged:
                    continue  # decided against a champion that is not champion any more: decide again
            decision = Decision(**common, champion_after=registry.champion(), promoted=promote,
                                challenger_score=ch, champion_score=champ, n_rows=n_rows,
                                reason=reason)
        registry.log_decision(decision.model_dump())
        return decision
    raise InputError(f"{registry.dir}: the champion changed {CHAMPION_RETRIES} times while this retrain decided; "
                     "run it again")


CHAMPION_RETRIES = 3

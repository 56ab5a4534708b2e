"""Stage score_candidate: score one trained ``encoder_candidate`` with the selection's SVC.

The SVC is the ``encoder`` section's ``search_svc_kernel`` (``auto``: linear for ``rocket``, rbf for the
others), ``search_svc_C`` and ``search_svc_gamma`` (`tasks.core.search.selection_svc`), fitted on the features ``encoder_candidate`` stored and scored on
its held-out rows; the ``svc`` section is never read. A change to those keys rescores every candidate
without training one. Output artifact ``candidate_score``: ``score.json`` (validation score, per-fold
scores, per-row correctness, and the candidate's epochs and seconds). Nothing to score (a candidate
not trained: budget spent, or stopped by successive halving) returns nothing.

With ``members`` (images and sequences, `tasks.core.candidates.ensemble_scored`) it scores the ensemble instead: every network
of the search at the last rung it trained, their stored held-out features side by side
(`tasks.core.search.joined`), under the same SVC (rbf for ``search_svc_kernel = "auto"``); ``score.json`` then
names the ``members`` and their ``member_artifacts``. Fewer than two networks trained: nothing.
"""

from __future__ import annotations

import numpy as np

from tasks.config import SVCConfig
from tasks.core.candidates import ENSEMBLE, last_trained
from tasks.core.search import Heldout, joined, score_heldout
from tasks.core.svm import resolve_kernel
from tasks.obs.runlog import stage_logger
from tasks.store.artifacts import ArtifactRef, ArtifactWriter, read_json
from tasks.store.cache import stage
from tasks.store.kinds import HELDOUT, SCORE, TRAINING


def scored_row(inputs: dict) -> str | None:
    """The display row of a candidate's score: its candidate's (``candidate <name>``); None when nothing is scored."""
    if inputs.get("members") is not None:
        return f"candidate {ENSEMBLE}"
    trained = inputs["candidate"]
    return None if trained is None else f"candidate {trained.params['candidate']['name']}"


def _score_ensemble(members: list[list[ArtifactRef | None]], config: SVCConfig, root: str) -> ArtifactRef | None:
    trained = [t for t in (last_trained(rungs) for rungs in members) if t is not None]
    if len(trained) < 2:
        return None
    heldouts, names = [], []
    for ref in trained:
        record = read_json(ref, TRAINING)
        names.append(record["candidate"])
        with np.load(ref.file(HELDOUT)) as arrays:
            heldouts.append(Heldout.from_arrays(arrays, record["validation"]))
    config = resolve_kernel(config, ENSEMBLE)
    score = score_heldout(joined(heldouts), config)
    stage_logger().info("encoder candidate %s (%s): validation accuracy %.4f (%s)", ENSEMBLE, " + ".join(names),
                        score["score"], score["validation"])
    digests = [t.sha256 for t in trained]
    with ArtifactWriter(root, "candidate_score", {"members": digests, "svc": config.model_dump()}) as w:
        w.write_json(SCORE, {"candidate": ENSEMBLE, "members": names, "member_artifacts": digests, "rung": None,
                                    "epochs": None, "train_seconds": 0.0, **score})
    return w.ref


@stage("score_candidate", imports=(), label=scored_row)
def score_candidate(candidate: ArtifactRef | None, config: SVCConfig, root: str,
                    members: list[list[ArtifactRef | None]] | None = None) -> ArtifactRef | None:
    """``score.json`` of ``candidate``'s features under the SVC ``config``, or of the ensemble of ``members``
    (per network, its ``encoder_candidate`` of each rung); None when there is nothing to score."""
    if members is not None:
        return _score_ensemble(members, config, root)
    if candidate is None:
        return None
    trained = read_json(candidate, TRAINING)
    config = resolve_kernel(config, candidate.params["candidate"]["encoder"]["kind"])  # search_svc_kernel = auto
    with np.load(candidate.file(HELDOUT)) as arrays:
        score = score_heldout(Heldout.from_arrays(arrays, trained["validation"]), config)
    stage_logger().info("encoder candidate %s%s: validation accuracy %.4f (%s)", trained["candidate"],
                        "" if trained.get("rung") is None else f" at {100 * trained['rung'][1]:.0f}% of its steps",
                        score["score"], score["validation"])
    with ArtifactWriter(root, "candidate_score", {"candidate": candidate.sha256, "svc": config.model_dump()}) as w:
        w.write_json(SCORE, {"candidate": trained["candidate"], "rung": trained.get("rung"),
                                    "epochs": trained["epochs"], "train_seconds": trained["train_seconds"], **score})
    return w.ref

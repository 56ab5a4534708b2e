"""Stage score_candidate: score one trained ``encoder_candidate`` with the selection's SVC.

The SVC is the ``encoder`` section's ``search_svc_kernel`` (``auto``: linear for ``rocket``, rbf for the
others), ``search_svc_C`` and ``search_svc_gamma`` (`tasks.core.search.selection_svc`), fitted on the features ``encoder_candidate`` stored and scored on
its held-out rows; the ``svc`` section is never read. A change to those keys rescores every candidate
without training one. Output artifact ``candidate_score``: ``score.json`` (validation score, per-fold
scores, per-row correctness, and the candidate's epochs and seconds). Nothing to score (a candidate
not trained: budget spent, or stopped by successive halving) returns nothing.
"""

from __future__ import annotations

import numpy as np

from tasks.config import SVCConfig
from tasks.core.search import Heldout, score_heldout
from tasks.core.svm import resolve_kernel
from tasks.store.artifacts import ArtifactRef, ArtifactWriter, read_json
from tasks.store.cache import stage
from tasks.store.runlog import stage_logger


def scored_row(inputs: dict) -> str | None:
    """The display row of a candidate's score: its candidate's (``candidate <name>``); None when nothing is scored."""
    trained = inputs["candidate"]
    return None if trained is None else f"candidate {trained.params['candidate']['name']}"


@stage("score_candidate", imports=(), label=scored_row)
def score_candidate(candidate: ArtifactRef | None, config: SVCConfig, root: str) -> ArtifactRef | None:
    """``score.json`` of ``candidate``'s features under the SVC ``config``; None for no candidate."""
    if candidate is None:
        return None
    trained = read_json(candidate, "train.json")
    config = resolve_kernel(config, candidate.params["candidate"]["encoder"]["kind"])  # search_svc_kernel = auto
    with np.load(candidate.file("heldout.npz")) as arrays:
        score = score_heldout(Heldout.from_arrays(arrays, trained["validation"]), config)
    stage_logger().info("encoder candidate %s%s: validation accuracy %.4f (%s)", trained["candidate"],
                        "" if trained.get("rung") is None else f" at {100 * trained['rung'][1]:.0f}% of its steps",
                        score["score"], score["validation"])
    with ArtifactWriter(root, "candidate_score", {"candidate": candidate.sha256, "svc": config.model_dump()}) as w:
        w.write_json("score.json", {"candidate": trained["candidate"], "rung": trained.get("rung"),
                                    "epochs": trained["epochs"], "train_seconds": trained["train_seconds"], **score})
    return w.ref

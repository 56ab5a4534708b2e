"""Task choose_solver: which SVM solver fits an SVC stage's training rows (``svc.solver``; for ``auto``, by
the exact fit's predicted cost: `tasks.core.svm.resolve_solver`).

The flow runs it once per SVC stage (``train_svc`` on the features, ``raw_svc`` on the scaled rows), before
the stage and its ``svc.search`` points, which all fit with the one decision. Output artifact ``solver``:
``solver.json`` (``solver``, ``reason``, ``n_train`` and, when the exact fit's cost was predicted,
``predicted_seconds`` and ``probe_seconds``: the sample fits and the growth exponent).
"""

from __future__ import annotations

from tasks._svc_stage import solver_record
from tasks.config import SVCConfig
from tasks.obs.progress import SVC_IMPORTS
from tasks.obs.runlog import stage_logger
from tasks.store.artifacts import ArtifactRef, ArtifactWriter
from tasks.store.cache import stage
from tasks.store.kinds import SOLVER


@stage("choose_solver", imports=SVC_IMPORTS)
def choose_solver(data: ArtifactRef, config: SVCConfig, root: str) -> ArtifactRef:
    """Decide the solver for ``data``'s (a ``features`` or ``scaled`` artifact) training rows."""
    record = solver_record(data, config)
    predicted = record.get("predicted_seconds")
    stage_logger().info("choose_solver on %s: %s (%s)%s", data.kind, record["solver"], record["reason"],
                        "" if predicted is None else f"; exact fit predicted {predicted:.1f} s, time ~ n^"
                                                     f"{record['probe_seconds']['exponent']:.2f}")
    with ArtifactWriter(root, "solver", {"data": data.sha256, "config": config.model_dump()}) as w:
        w.write_json(SOLVER, record)
    return w.ref

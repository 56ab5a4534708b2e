"""Stage svc_cv: score one ``svc.search`` grid point by stratified k-fold CV on the training rows.

The flow maps this task over the grid (one cached task per point) for ``train_svc`` and
``raw_svc``. The point is scored with the solver the fit will use (the ``choose_solver`` artifact of
the same rows; decided here when none is given) on the training rows, or past ``data.batch_rows`` of
them on a seeded sample of that many. Output artifact ``svc_cv``: ``cv.json`` with the point, the solver, the
resolved gamma and the per-fold scores. Validation and test rows are never read.
"""

from __future__ import annotations

from tasks._svc_stage import for_data, solver_record
from tasks.core.svm import CVPoint, cv_row
from tasks.obs.progress import SVC_IMPORTS
from tasks.obs.runlog import stage_logger
from tasks.store.artifacts import ArtifactRef, ArtifactWriter, read_json
from tasks.store.cache import stage
from tasks.store.kinds import CV, SOLVER
from tasks.store.tables import batch_rows_of, load_split, read_meta


@stage("svc_cv", imports=SVC_IMPORTS)
def svc_cv(data: ArtifactRef, point: CVPoint, root: str, solver: ArtifactRef | None = None) -> ArtifactRef:
    """Score ``point`` on ``data``'s (a ``features`` or ``scaled`` artifact) training rows with the solver of
    ``solver`` (``choose_solver``'s artifact for ``data``)."""
    meta = read_meta(data)
    batch, n_train = batch_rows_of(meta), int(meta["split_sizes"]["train"])
    point = point.model_copy(update={"kernel": for_data(point.svc_config(), meta).kernel})  # svc.kernel = auto
    decision = read_json(solver, SOLVER) if solver is not None else solver_record(data, point.svc_config())
    solver_name = decision["solver"]
    X, y = load_split(data, "train", max_rows=batch, seed=point.seed)
    row = cv_row(X, y, point, solver_name)
    stage_logger().info("svc_cv on %s: C=%g gamma_factor=%g (%s, %d of %d training rows) -> mean %s %.4f over %d "
                        "folds", data.kind, point.C, point.gamma_factor, solver_name, len(y), n_train, point.metric,
                        row["mean"], len(row["scores"]))
    with ArtifactWriter(root, "svc_cv", {"data": data.sha256, "point": point.model_dump(), "solver": solver_name}) as w:
        w.write_json(CV, row)
    return w.ref

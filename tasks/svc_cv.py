"""Stage svc_cv: score one ``svc.search`` grid point by stratified k-fold CV on the training rows.

The flow maps this task over the grid (one cached task per point) for ``train_svc`` and
``raw_svc``. Output artifact ``svc_cv``: ``cv.json`` with the point, the resolved gamma
and the per-fold scores. Validation and test rows are never read.
"""

from __future__ import annotations

from tasks.core.svm import CVPoint, cv_row
from tasks.store.artifacts import ArtifactRef, ArtifactWriter
from tasks.store.cache import stage
from tasks.store.runlog import stage_logger
from tasks.store.tables import feature_matrix, read_table


@stage("svc_cv")
def svc_cv(data: ArtifactRef, point: CVPoint, root: str) -> ArtifactRef:
    """Score ``point`` on ``data``'s (a ``features`` or ``scaled`` artifact) training rows."""
    frame, _ = read_table(data)
    X, y = feature_matrix(frame, "train")
    row = cv_row(X, y, point)
    stage_logger().info("svc_cv on %s: C=%g gamma_factor=%g -> mean %s %.4f over %d folds",
                        data.kind, point.C, point.gamma_factor, point.metric, row["mean"], len(row["scores"]))
    with ArtifactWriter(root, "svc_cv", {"data": data.sha256, "point": point.model_dump()}) as w:
        w.write_json("cv.json", row)
    return w.ref

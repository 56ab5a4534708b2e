"""Stage train_svc (approach ``features_svc``): scikit-learn ``SVC`` fitted on the encoder's training features.

Output artifact ``features_svc``: ``svc.skops`` (loaded without unrestricted pickle), ``config.json``
(the settings fitted), ``predictions.json``, ``timing.json`` and, after ``svc.search``,
``search.json`` (chosen point and CV table).
"""

from __future__ import annotations

from tasks._svc_stage import fit_svc_artifact
from tasks.config import SVCConfig
from tasks.obs.progress import SVC_IMPORTS
from tasks.store.artifacts import ArtifactRef
from tasks.store.cache import stage


@stage("train_svc", imports=SVC_IMPORTS)
def train_svc(features: ArtifactRef, config: SVCConfig, root: str, cv: list[ArtifactRef] | None = None,
              solver: ArtifactRef | None = None) -> ArtifactRef:
    """Fit on the ``features`` artifact's train rows; write the ``svc`` artifact.

    ``cv``: the ``svc_cv`` artifacts of a search over ``features`` (``svc.search``); ``solver``: the
    ``choose_solver`` artifact of ``features`` (decided here when None).
    """
    return fit_svc_artifact(features, config, cv, root, "features_svc", solver)

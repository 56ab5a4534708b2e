"""Stage raw_svc (approach ``raw_svc``): scikit-learn ``SVC`` on the scaled raw features, the reference.

Same settings (and ``svc.search``) as ``train_svc``; output artifact ``raw_svc`` with the same files as ``svc``.
"""

from __future__ import annotations

from tasks._svc_stage import fit_svc_artifact
from tasks.config import SVCConfig
from tasks.obs.progress import SVC_IMPORTS
from tasks.store.artifacts import ArtifactRef
from tasks.store.cache import stage


@stage("raw_svc", imports=SVC_IMPORTS)
def raw_svc(scaled: ArtifactRef, config: SVCConfig, root: str, cv: list[ArtifactRef] | None = None,
            solver: ArtifactRef | None = None) -> ArtifactRef:
    """SVC on the scaled raw features, with the same settings (and search) as the features SVC."""
    return fit_svc_artifact(scaled, config, cv, root, "raw_svc", solver)

"""Task register_model: add a run's ``bundle`` artifact to the registry (not cached: it is a side effect)."""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks._publish import publish_models
from tasks.obs.runlog import stage_logger
from tasks.ops.registry import Registry
from tasks.store.artifacts import ArtifactRef


@task(name="register_model")
def register_model(bundle: ArtifactRef, root: str, run: dict[str, Any] | None = None) -> tuple[str, bool]:
    """Register ``bundle`` under ``root``'s registry; returns (version, newly added).

    A bundle whose identity is already a version is recognised and not registered twice.
    ``run`` (flow run id and name, report path) is recorded with a new version. The registry
    is published as the ``marginflow-models`` table artifact when it changed (a cached run leaves the table
    as it was: listing it checks every version's files).
    """
    registry = Registry(root)
    version, new = registry.register(bundle.at(root).dir, run=run)
    log = stage_logger()
    if registry.repaired:
        log.warning("registry repaired: %s", "; ".join(registry.repaired))
    log.info("model %s %s", version, "registered" if new else "already registered (same model)")
    if new or registry.repaired:  # else the registry, and so the dashboard's table of it, is as it was
        publish_models(registry)
    return version, new

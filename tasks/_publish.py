"""Publishing the registry to the dashboard, shared by the tasks that change it (and ``promote``).

Not a stage itself; only stage modules and flows import it.
"""

from __future__ import annotations

from tasks.obs.runlog import flow_run_link, publish_table
from tasks.ops.registry import Registry, models_table
from tasks.ops.runs import root_key


def models_key(root) -> str:
    """The dashboard key of one data root's models table: ``marginflow-models-<root digest>`` (`tasks.ops.runs.root_key`),
    so the registries of two data roots never mix in one table."""
    return f"marginflow-models-{root_key(root)}"


def publish_models(registry: Registry) -> None:
    """The registry as the data root's models table artifact (a new version of it each time; inside a run)."""
    root = registry.dir.parent.resolve()
    publish_table(models_table(registry.versions(), flow_run_link), models_key(root),
                  f"model versions of the data root {root}: champion, test metrics, config changes from defaults, "
                  "registering run")

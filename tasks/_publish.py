"""Publishing the registry to the dashboard, shared by the tasks that change it (and ``promote``).

Not a stage itself; only stage modules and flows import it.
"""

from __future__ import annotations

from tasks.ops.registry import Registry, models_table
from tasks.store.runlog import flow_run_link, publish_table


def publish_models(registry: Registry) -> None:
    """The registry as the ``marginflow-models`` table artifact (a new version of it each time; inside a run)."""
    publish_table(models_table(registry.versions(), flow_run_link), "marginflow-models",
                  "model versions: champion, test metrics, config changes from defaults, registering run")

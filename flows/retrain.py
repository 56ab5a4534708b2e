"""The retrain flow: run the pipeline on the configured source, then champion vs challenger.

1. The pipeline runs as a subflow. Unchanged data and config mean every stage is a cache
   hit: no model is trained and the bundle is the one already registered.
2. Its bundle is registered (`tasks.ops.registry`); with no champion yet it becomes champion.
3. Otherwise the challenger and the champion are both loaded from their verified bundles
   and scored on the same rows: this run's test split, raw features in, labels compared in
   their original values. The challenger is promoted when its ``retrain.metric`` is at
   least the champion's minus ``retrain.tolerance``.
4. The decision, with both scores, is logged, appended to the registry's history and
   published as a Prefect markdown artifact (key ``marginflow-decision``).

The scoring and the decision are in `tasks.ops.promotion`; this module only wires.

``marginflow retrain`` runs this flow once; ``marginflow serve --cron`` serves it on a schedule.
"""

# No ``from __future__ import annotations`` here: Prefect builds the flow's parameter model
# from the real annotation objects when a served run loads this module by its entrypoint.
from pathlib import Path

from prefect import flow

from flows.engine import run_pipeline
from flows.pipeline import flow_run_name, run_tags
from tasks.choose_champion import choose_champion
from tasks.config import Config
from tasks.obs.runlog import add_tags, tracked_run
from tasks.ops.promotion import Decision
from tasks.ops.registry import Registry


@flow(name="marginflow-retrain", flow_run_name=flow_run_name("retrain-"),
      description="Retrain on the configured source; promote the challenger if it is at least as good")
def retrain(config: Config, data_dir: str = "data") -> Decision:
    """Run the pipeline, register its model, and promote it over the champion if good enough."""
    root = str(Path(data_dir).resolve())
    with tracked_run(root):
        registry = Registry(root)
        registry.recover()
        before = registry.champion()
        result = run_pipeline(config, root)
        decision = choose_champion(result.artifacts["ingest"], result.model, before, config.retrain, root)
        add_tags(*run_tags(config, result.model), *(["promoted"] if decision.promoted else []))
        return decision

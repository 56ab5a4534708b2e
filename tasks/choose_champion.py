"""Task choose_champion: the retrain flow's champion/challenger decision, logged and published."""

from __future__ import annotations

from prefect import task

from tasks._publish import publish_models
from tasks.config import RetrainConfig
from tasks.obs.runlog import publish_markdown, stage_logger
from tasks.ops.promotion import Decision, choose, markdown
from tasks.ops.registry import Registry
from tasks.store.artifacts import ArtifactRef


@task(name="choose_champion")
def choose_champion(dataset: ArtifactRef, challenger: str | None, before: str | None, config: RetrainConfig,
                    root: str) -> Decision:
    """Promote ``challenger`` over ``before`` (the champion when the run began) if it scores well enough.

    Args:
        dataset: the run's ``dataset`` artifact; both models are scored on its test rows.
        challenger: the run's registered version; before: the champion before the run (None: none yet).
    """
    decision = choose(dataset.at(root), challenger, before, config, root)
    stage_logger().info("retrain decision: %s", decision.reason)
    publish_markdown(markdown(decision), "marginflow-decision", "champion/challenger decision of this retrain run")
    publish_models(Registry(root))
    return decision

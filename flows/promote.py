"""A small flow that records a promotion made by hand (``marginflow promote``) in the dashboard:
it publishes the registry's ``marginflow-models`` table and is tagged with the new champion.
Run only when ``PREFECT_API_URL`` names a server; the promotion itself never depends on it."""

from prefect import flow

from tasks._publish import publish_models
from tasks.obs.runlog import add_tags
from tasks.ops.registry import Registry


@flow(name="marginflow-promote", flow_run_name="promote-{version}",
      description="a model version was promoted by hand; publishes the models table")
def promoted(version: str, data_dir: str) -> None:
    publish_models(Registry(data_dir))
    add_tags("marginflow", f"model:{version}", "promoted")

"""The pipeline flow: runs the stage table of `flows.plan` (laid out by `flows.runner`).

Main path: ingest -> scale -> train_encoder -> extract_features -> train_svc -> evaluate ->
bundle; beside it the other approaches of `tasks.catalog` train from the same scaled split.
Every stage is submitted to the flow's task runner with the futures of exactly the stages
it reads, so independent stages overlap and the dashboard's graph is the table's graph.
Each stage is content-cached (`tasks.store.cache`); this module only wires. The flow's
parameters are the whole typed config, so the dashboard shows what a run used.
"""

# No ``from __future__ import annotations`` here: Prefect builds the flow's parameter model
# from the real annotation objects when a served run loads this module by its entrypoint.
import time
from pathlib import Path
from typing import Literal

from prefect import flow
from pydantic import BaseModel

from flows.runner import PrefectRunner, lay_out
from tasks.config import Config
from tasks.config_text import changes, run_name, source_name
from tasks.core.report import render_stages
from tasks.obs.progress import emit
from tasks.obs.runlog import (
    add_tags,
    current_flow_run,
    flow_run_link,
    publish_markdown,
    publish_table,
    stage_logger,
    tracked_run,
)
from tasks.ops.runreport import RunInfo, report_dir, write_run_report
from tasks.ops.runs import list_runs, root_key, runs_table
from tasks.register_model import register_model
from tasks.store.artifacts import ArtifactRef, clean_staging
from tasks.store.cache import describe


class StageRun(BaseModel):
    status: Literal["ran", "cached", "skipped"]
    seconds: float  # the stage's own work
    artifact: str
    where: str = ""
    waited: float = 0.0  # seconds it waited for the Keras lock (other fits running), not in ``seconds``


class PipelineResult(BaseModel):
    stages: dict[str, StageRun]
    artifacts: dict[str, ArtifactRef]
    model: str | None = None  # the registry version of this run's bundle (full runs only)
    model_is_new: bool = False
    engine: str = "threads"  # config.engine.kind: where the tasks ran (each stage's worker: StageRun.where)
    report: str | None = None  # this run's report folder (report.md, report.html), when it evaluated
    flow_run_id: str = ""
    flow_run_name: str = ""


def flow_run_name(prefix: str = ""):
    """A flow's ``flow_run_name``: ``<prefix><source>-<config digest>`` (`tasks.config.run_name`)
    from the run's ``config`` parameter, so runs of one source and config share a name."""

    def name() -> str:
        from prefect.runtime import flow_run

        config = flow_run.parameters.get("config")
        try:
            return prefix + run_name(config if isinstance(config, Config) else Config.model_validate(config))
        except Exception:  # a name is never worth failing a run over
            return prefix + "marginflow-run"

    return name


def run_tags(config: Config, model: str | None = None) -> list[str]:
    """The tags of a run: the data source, the model version it registered, the tool. (The dashboard sorts tags
    and shows the first few: one tag per approach compared came first and hid these; the runs table and the
    report list the approaches.)"""
    return [f"dataset:{source_name(config.data)}", *([f"model:{model}"] if model else []), "marginflow"]


@flow(name="marginflow-pipeline", flow_run_name=flow_run_name(),
      description="SVM-style classifiers: encoder features -> SVC, compared with four other approaches")
def pipeline(
    config: Config,
    data_dir: str = "data",
    refresh: list[str] | None = None,
    until: str | None = None,
) -> PipelineResult:
    """Run the stages, each from cache when its inputs are unchanged.

    Args:
        config: the whole config; each stage receives its own section(s).
        data_dir: the data root (artifacts and cache records).
        refresh: stages to recompute even when cached (``["all"]`` for every stage).
        until: run only this stage and the stages it reads (used by ``marginflow stage``).
    """
    started = time.monotonic()
    root = str(Path(data_dir).resolve())
    with tracked_run(root) as crashed:
        removed = clean_staging(root)
        if crashed or removed:
            stage_logger().info("marked %d flow run(s) of killed processes Crashed; removed %d staging folder(s) "
                                "of killed writers", len(crashed), len(removed))
        return _run(config, root, refresh, until, started)


def _run(config: Config, root: str, refresh: list[str] | None, until: str | None, started: float) -> PipelineResult:
    """Submit the planned stages with the futures of their inputs (`flows.runner.lay_out`); collect their states
    in table order."""
    laid = lay_out(config, root, PrefectRunner(), refresh, until)
    plan, futures, searches = laid.plan, laid.handles, laid.rows
    emit("plan", stages=[stage.name for stage in plan], flow_run_id=current_flow_run()[0])

    result = PipelineResult(stages={}, artifacts={}, engine=config.engine.kind)
    for stage in plan:  # in table order, so the first failure raised is the earliest stage's own
        value = futures[stage.name].result()
        info = describe(futures[stage.name].state)
        emit("stage_done", stage=stage.name, **info)  # the terminal's display, also for stages run elsewhere
        if value is None:  # an approach skipped at this size (tasks.catalog.skip_reason)
            result.stages[stage.name] = StageRun(artifact="skipped at this size (see the report)", **info)
            continue
        ref = value.at(root)
        result.stages[stage.name] = StageRun(artifact=str(ref.dir), **info)
        result.artifacts[stage.name] = ref
    for name, (what, mapped) in searches.items():
        runs = [describe(f.state) for f in mapped]
        skipped = sum(r["status"] == "skipped" for r in runs)
        result.stages[name] = StageRun(
            status=next((s for s in ("ran", "cached") if any(r["status"] == s for r in runs)), "skipped"),
            seconds=round(sum(r["seconds"] for r in runs), 3), waited=round(sum(r["waited"] for r in runs), 3),
            artifact=str(mapped[0].result().at(root).dir) if what is None else
            f"{len(runs)} {what}" + (f", {skipped} not run (stopped by successive halving, or the search budget "
                                     "spent)" if skipped else ""),
            where=", ".join(sorted({r["where"] for r in runs})))
    result.flow_run_id, result.flow_run_name = current_flow_run()
    info = RunInfo(flow_run_id=result.flow_run_id, flow_run_name=result.flow_run_name,
                   changes=changes(config.model_dump(mode="json")), engine=config.engine.kind)
    evaluated = "evaluate" in result.artifacts
    if until is None:
        run = {"flow_run_id": info.flow_run_id, "flow_run_name": info.flow_run_name,
               "report": str(report_dir(root, info)) if evaluated else None}
        result.model, result.model_is_new = register_model(futures["bundle"], root, run)  # one edge: from bundle
        info = info.model_copy(update={"version": result.model, "new_version": result.model_is_new})
    add_tags(*run_tags(config, result.model))
    if evaluated:  # on every run, cached or not: the report of this run, with its version, date and run id
        info = info.model_copy(update={"wall_seconds": round(time.monotonic() - started, 1)})
        report = write_run_report(root, result.artifacts["evaluate"], info, config.evaluate.digits)
        result.report = report.dir
        publish_markdown(report.dashboard_markdown, "marginflow-report",
                         f"marginflow report of this run ({report.dir})")
        publish_table(report.table, "marginflow-approaches",
                      f"{config.data.dataset or config.data.input}: approaches compared on the same test rows")
        publish_table(runs_table(list_runs(root), flow_run_link), f"marginflow-runs-{root_key(root)}",
                      f"every evaluated run of the data root {root}, newest first: config changes, each approach's "
                      "test accuracy, wall time, model version")
    publish_markdown(render_stages({k: v.model_dump() for k, v in result.stages.items()}, result.engine),
                     "marginflow-run", "where and how long each stage of this run ran")
    return result

"""The pipeline flow: runs the stage table of `flows.plan`.

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
from typing import Any, Literal

from prefect import flow, unmapped
from pydantic import BaseModel

from flows.plan import (
    CANDIDATE_TASK,
    SCORE_TASK,
    SEARCH_TASK,
    SOLVER_TASK,
    STAGES,
    TASKS,
    load_task,
    refresh_name,
    stage_config,
    stages_needed,
)
from tasks.catalog import BY_NAME
from tasks.choose_solver import choose_solver
from tasks.config import Config, changes, run_name, source_name
from tasks.core.candidates import CHEAP_KINDS, ENSEMBLE, candidate_set, ensemble_scored
from tasks.core.layout import Layout
from tasks.core.report import render_stages
from tasks.core.search import search_graph, search_rungs, selection_svc
from tasks.core.svm import grid
from tasks.encoder_candidate import encoder_candidate
from tasks.ingest import describe_source
from tasks.ops.runreport import RunInfo, report_dir, write_run_report
from tasks.ops.runs import list_runs, root_key, runs_table
from tasks.register_model import register_model
from tasks.score_candidate import score_candidate
from tasks.store.artifacts import ArtifactRef, clean_staging
from tasks.store.cache import describe, warm_code_versions
from tasks.store.progress import emit
from tasks.store.runlog import (
    add_tags,
    current_flow_run,
    flow_run_link,
    publish_markdown,
    publish_table,
    stage_logger,
    tracked_run,
)
from tasks.store.tables import batch_rows_of, read_meta
from tasks.svc_cv import svc_cv


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


def _submit_candidates(scaled, config: Config, root: str,
                       refresh: bool) -> tuple[list[list[Any]], list[list[Any]], Any | None]:
    """Submit the encoder search for the scaled rows' layout (waits for ``scaled``): per candidate, one
    ``encoder_candidate`` and one ``score_candidate`` per rung of successive halving (one rung without it).

    Returns (training futures, score futures), per candidate and rung, and the future of the networks'
    ensemble's score (None when none is scored: `tasks.core.candidates.ensemble_scored`). Every task is submitted now: a later
    rung reads the previous rung's scores and stops itself when it is not among the better half
    (`tasks.encoder_candidate`), so the graph is static and each rung is cached on its own. The search
    budget starts now: every network gets its deadline, the cheap candidates (which are laid out first and
    take seconds) none, so at least one always runs and no network starts after ``encoder.search_budget_s``.
    """
    meta = read_meta(scaled.result().at(root))
    layout = Layout.from_meta(meta)
    specs = candidate_set(layout, config.encoder)
    n_train = int(meta["split_sizes"]["train"])
    streamed = n_train > batch_rows_of(meta)
    rungs = search_rungs([c.encoder.kind for c in specs], n_train, streamed, config.encoder)
    deadline = time.time() + config.encoder.search_budget_s
    train = encoder_candidate.with_options(refresh_cache=refresh)
    score = score_candidate.with_options(refresh_cache=refresh)
    svc = selection_svc(config.encoder)
    names: dict[int, str] = {}  # a training future -> the name of its task runs: the candidate, and its rung

    def trained(i: int, spec, **rung):
        part = rung.get("rung")
        name = spec.name + ("" if part is None else f" to {100 * part[1]:.0f}%")
        future = train.with_options(task_run_name=f"{CANDIDATE_TASK} {name}").submit(  # cheap ones always run
            scaled, spec, root=root, deadline=None if spec.encoder.kind in CHEAP_KINDS else deadline, **rung)
        names[id(future)] = name
        return future

    def together(networks):
        return score.with_options(task_run_name=f"{SCORE_TASK} {ENSEMBLE}").submit(None, svc, root=root,
                                                                                     members=networks)

    return search_graph(specs, rungs, trained, lambda future: score.with_options(
        task_run_name=f"{SCORE_TASK} {names[id(future)]}").submit(future, svc, root=root),
        together if ensemble_scored(layout, config.encoder, streamed) else None)


def _run(config: Config, root: str, refresh: list[str] | None, until: str | None, started: float) -> PipelineResult:
    """Submit the planned stages with the futures of their inputs; collect their states in table order."""
    forced = {*STAGES, *TASKS} if "all" in (refresh or []) else {refresh_name(s) for s in refresh or []}
    plan = stages_needed(config.evaluate.approaches, until)
    # every code digest of the run's cache keys, here in the flow's thread before any task starts
    warm_code_versions([f"tasks.{name}" for name in (*(s.name for s in plan), *TASKS)])
    futures: dict[str, Any] = {}
    # "<stage>.cv" / "<stage>.candidates" / "<stage>.solver": (what they are, futures); what None: one task, whose
    # artifact its row shows
    searches: dict[str, tuple[str | None, list[Any]]] = {}
    emit("plan", stages=[stage.name for stage in plan], flow_run_id=current_flow_run()[0])
    for stage in plan:
        task = load_task(stage.name).with_options(refresh_cache=stage.name in forced)
        args = [futures[name] for name in stage.inputs] or [describe_source(config.data)]
        kwargs: dict[str, Any] = {"config": stage_config(config, stage), "root": root}
        if stage.models:
            kwargs["models"] = {a: futures[BY_NAME[a].stage] for a in config.evaluate.approaches}
        if stage.search:  # an SVC stage: one solver decision for its fit and its search points
            decided = choose_solver.with_options(refresh_cache=SOLVER_TASK in forced).submit(
                futures[stage.inputs[0]], config.svc, root=root)
            searches[f"{stage.name}.solver"] = (None, [decided])
            kwargs["solver"] = decided
        if stage.search and config.svc.search:
            cv = svc_cv.with_options(refresh_cache=SEARCH_TASK in forced).map(
                unmapped(futures[stage.inputs[0]]), grid(config.svc), root=unmapped(root), solver=unmapped(decided))
            searches[f"{stage.name}.cv"] = (f"{SEARCH_TASK} points", cv)
            kwargs["cv"] = cv
        if stage.candidates and config.encoder.kind == "auto":
            futures[stage.inputs[0]].wait()
            if not futures[stage.inputs[0]].state.is_completed():  # the search needs the rows' layout
                for name in futures:  # in table order: the earliest stage's own error, as below
                    futures[name].result()
            trained, scored, together = _submit_candidates(futures[stage.inputs[0]], config, root,
                                                           CANDIDATE_TASK in forced)
            searches[f"{stage.name}.candidates"] = (f"{CANDIDATE_TASK} tasks for {len(trained)} candidates",
                                                    [f for rungs in trained for f in rungs])
            searches[f"{stage.name}.scores"] = (f"{SCORE_TASK}s", [f for rungs in scored for f in rungs]
                                                + ([together] if together is not None else []))
            kwargs["candidates"], kwargs["scores"] = trained, scored
            if together is not None:
                kwargs["ensemble"] = together
        futures[stage.name] = task.submit(*args, **kwargs)

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

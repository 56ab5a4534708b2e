"""Lay the plan of `flows.plan` out on a runner: one loop over the stages, one method per kind of fan-out.

Two runners: `PrefectRunner` submits each task to the flow's task runner with the futures of exactly the
tasks it reads (so independent work overlaps and the dashboard's graph is the table's graph); `DirectRunner`
calls each stage function in turn, without Prefect (``benchmarks/speed.py`` measures the flow's overhead
against it). Both run the same `lay_out`, so the benchmark cannot drift from the flow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flows.plan import (
    FANOUT_TASKS,
    STAGES,
    TASKS,
    Candidates,
    Grid,
    Models,
    Solver,
    Stage,
    refresh_name,
    stage_config,
    stages_needed,
)
from tasks.catalog import BY_NAME
from tasks.core.candidates import CHEAP_KINDS, ENSEMBLE, candidate_set, ensemble_scored
from tasks.core.layout import Layout
from tasks.core.search import search_graph, search_rungs, selection_svc
from tasks.core.svm import grid
from tasks.ingest import describe_source
from tasks.store.cache import warm_code_versions
from tasks.store.tables import batch_rows_of, read_meta


class DirectRunner:
    """Each task's function called at once in this thread; a handle is the artifact itself."""

    def submit(self, task, *args, name: str | None = None, refresh: bool = False, **kwargs):
        return task.fn(*args, **kwargs)

    def value(self, handle):
        return handle

    def ready(self, handle, earlier: list[Any]) -> None:
        """Nothing to wait for: a call that failed raised already."""


class PrefectRunner:
    """Each task submitted to the current flow's task runner; a handle is its Prefect future."""

    def submit(self, task, *args, name: str | None = None, refresh: bool = False, **kwargs):
        options: dict[str, Any] = {"refresh_cache": refresh}
        if name:
            options["task_run_name"] = name
        return task.with_options(**options).submit(*args, **kwargs)

    def value(self, handle):
        return handle.result()

    def ready(self, handle, earlier: list[Any]) -> None:
        """Wait for ``handle``; if it did not complete, raise the error of the earliest of ``earlier`` that
        failed (in table order: the earliest stage's own error)."""
        handle.wait()
        if not handle.state.is_completed():
            for future in earlier:
                future.result()


@dataclass
class Laid:
    """What `lay_out` submitted: the stages in table order, a handle per stage, and the rows of the tasks
    inside stages (``"<stage>.<row>"`` -> (what they are, or None for one task whose artifact its row shows;
    their handles))."""

    plan: list[Stage]
    handles: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, tuple[str | None, list[Any]]] = field(default_factory=dict)


def forced_names(refresh: list[str] | None) -> set[str]:
    """The stages and inner tasks ``--refresh`` names (``all``: every one)."""
    return {*STAGES, *TASKS} if "all" in (refresh or []) else {refresh_name(s) for s in refresh or []}


def lay_out(config, root: str, runner, refresh: list[str] | None = None, until: str | None = None) -> Laid:
    """Submit the planned stages (and the tasks inside them) on ``runner``, each with the handles of its inputs."""
    forced = forced_names(refresh)
    out = Laid(stages_needed(config.evaluate.approaches, until))
    # every code digest of the run's cache keys, here in one thread before any task starts
    warm_code_versions([*(s.task for s in out.plan), *FANOUT_TASKS.values()])
    for stage in out.plan:
        args = [out.handles[name] for name in stage.inputs] or [describe_source(config.data)]
        kwargs: dict[str, Any] = {"config": stage_config(config, stage), "root": root}
        for fanout in stage.fanouts:
            if fanout.applies(config):
                kwargs.update(_FANOUTS[type(fanout)](runner, stage, out, kwargs, config, root, forced))
        out.handles[stage.name] = runner.submit(stage.task, *args, refresh=stage.name in forced, **kwargs)
    return out


def _solver(runner, stage: Stage, out: Laid, kwargs: dict, config, root: str, forced: set[str]) -> dict:
    task = Solver().tasks[0]
    decided = runner.submit(task, out.handles[stage.inputs[0]], config.svc, root=root, refresh=task.name in forced)
    out.rows[f"{stage.name}.solver"] = (None, [decided])
    return {"solver": decided}


def _grid(runner, stage: Stage, out: Laid, kwargs: dict, config, root: str, forced: set[str]) -> dict:
    task = Grid().tasks[0]
    cv = [runner.submit(task, out.handles[stage.inputs[0]], point, root=root, solver=kwargs["solver"],
                        refresh=task.name in forced) for point in grid(config.svc)]
    out.rows[f"{stage.name}.cv"] = (f"{task.name} points", cv)
    return {"cv": cv}


def _models(runner, stage: Stage, out: Laid, kwargs: dict, config, root: str, forced: set[str]) -> dict:
    return {"models": {a: out.handles[BY_NAME[a].stage] for a in config.evaluate.approaches}}


def _candidates(runner, stage: Stage, out: Laid, kwargs: dict, config, root: str, forced: set[str]) -> dict:
    """The encoder search for the first input's layout (waits for it): per candidate, one ``encoder_candidate``
    and one ``score_candidate`` per rung of successive halving (one rung without it), and the networks'
    ensemble's score when one is scored (`tasks.core.candidates.ensemble_scored`).

    Every task is submitted now: a later rung reads the previous rung's scores and stops itself when it is not
    among the better half (`tasks.encoder_candidate`), so the graph is static and each rung is cached on its own.
    The search budget starts now: every network gets its deadline, the cheap candidates (which are laid out
    first and take seconds) none, so at least one always runs and no network starts after
    ``encoder.search_budget_s``.
    """
    train, score = Candidates().tasks
    first = out.handles[stage.inputs[0]]
    runner.ready(first, [out.handles[s.name] for s in out.plan if s.name in out.handles])
    meta = read_meta(runner.value(first).at(root))
    layout = Layout.from_meta(meta)
    specs = candidate_set(layout, config.encoder)
    n_train = int(meta["split_sizes"]["train"])
    streamed = n_train > batch_rows_of(meta)
    rungs = search_rungs([c.encoder.kind for c in specs], n_train, streamed, config.encoder)
    deadline = time.time() + config.encoder.search_budget_s
    svc = selection_svc(config.encoder)
    names: dict[int, str] = {}  # a training handle -> the name of its task runs: the candidate, and its rung

    def trained(i: int, spec, **rung):
        part = rung.get("rung")
        name = spec.name + ("" if part is None else f" to {100 * part[1]:.0f}%")
        handle = runner.submit(train, first, spec, root=root, name=f"{train.name} {name}",
                               refresh=train.name in forced,
                               deadline=None if spec.encoder.kind in CHEAP_KINDS else deadline,  # cheap: always run
                               **rung)
        names[id(handle)] = name
        return handle

    def scored(handle):
        return runner.submit(score, handle, svc, root=root, name=f"{score.name} {names[id(handle)]}",
                             refresh=score.name in forced)

    def together(networks):
        return runner.submit(score, None, svc, root=root, members=networks, name=f"{score.name} {ENSEMBLE}",
                             refresh=score.name in forced)

    done, scores, ensemble = search_graph(specs, rungs, trained, scored,
                                          together if ensemble_scored(layout, config.encoder, streamed) else None)
    out.rows[f"{stage.name}.candidates"] = (f"{train.name} tasks for {len(done)} candidates",
                                            [h for rungs_ in done for h in rungs_])
    out.rows[f"{stage.name}.scores"] = (f"{score.name}s", [h for rungs_ in scores for h in rungs_]
                                        + ([ensemble] if ensemble is not None else []))
    return {"candidates": done, "scores": scores, **({"ensemble": ensemble} if ensemble is not None else {})}


_FANOUTS = {Solver: _solver, Grid: _grid, Models: _models, Candidates: _candidates}

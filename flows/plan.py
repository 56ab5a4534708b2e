"""The pipeline, declared once as data: which stages exist, what each reads, which config it gets.

`flows.pipeline` runs this table, the CLI takes its names, ``benchmarks/speed.py`` reuses it,
and a test compares it with the graph the dashboard shows. No Prefect import here, so
``marginflow --help`` stays fast; `load_task` imports a stage's module when it is run.

Names: a stage is verb_noun (``train_encoder``), the artifact it writes is a noun
(``encoder``), an approach is named in `tasks.catalog` (``features_svc`` is trained by
``train_svc``). The CLI accepts the artifact and approach names as aliases of their stage.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from tasks.catalog import APPROACHES, BY_NAME, MAIN_APPROACH
from tasks.config import MODEL_SECTIONS


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline.

    Attributes:
        name: the stage's name: its Prefect task, its module ``tasks/<name>.py``, its key in ``--json``.
        artifact: the kind of artifact it writes.
        inputs: the stages whose artifacts it reads, in argument order (ingest reads the source).
        config: the config sections it receives; one is passed as itself, several as ``{section: ...}``.
        models: ``evaluate`` only: it also reads ``{approach: model artifact}`` of the selected approaches.
        search: an SVC stage: it also reads ``solver`` (``choose_solver`` on its first input: which SVM solver
            fits) and, with ``svc.search``, ``cv``: the ``svc_cv`` grid mapped over its first input.
        candidates: with ``encoder.kind = "auto"``, it also reads ``candidates`` and ``scores``: per candidate of
            the first input's layout, one ``encoder_candidate`` and one ``score_candidate`` per rung of the
            search (given the ``encoder`` section only).
    """

    name: str
    artifact: str
    inputs: tuple[str, ...]
    config: tuple[str, ...]
    models: bool = False
    search: bool = False
    candidates: bool = False


MAIN_PATH: tuple[Stage, ...] = (
    Stage("ingest", "dataset", (), ("data",)),
    Stage("scale", "scaled", ("ingest",), ("scale",)),
    Stage("train_encoder", "encoder", ("scale",), ("encoder",), candidates=True),
    Stage("extract_features", "features", ("scale", "train_encoder"), ("features",)),
)
MAIN_STAGE: str = BY_NAME[MAIN_APPROACH].stage  # train_svc: the SVC on the encoder's features
# the main path's SVC first, then the other approaches in catalog order; each approach's stage
# writes an artifact of its own name, except the main path's ("svc")
APPROACH_STAGES: tuple[Stage, ...] = tuple(
    Stage(a.stage, "svc" if a.main else a.stage, a.reads, (a.section,), search=a.search)
    for a in sorted(APPROACHES, key=lambda a: not a.main)
)
PIPELINE: tuple[Stage, ...] = (
    *MAIN_PATH,
    *APPROACH_STAGES,
    Stage("evaluate", "report", ("scale", "train_encoder"), ("evaluate",), models=True),
    Stage("bundle", "bundle", ("scale", "train_encoder", MAIN_STAGE), MODEL_SECTIONS),
)
BY_STAGE: dict[str, Stage] = {s.name: s for s in PIPELINE}
STAGES: tuple[str, ...] = tuple(BY_STAGE)
SEARCH_TASK = "svc_cv"
SOLVER_TASK = "choose_solver"
CANDIDATE_TASK = "encoder_candidate"
SCORE_TASK = "score_candidate"
# the tasks inside stages (a search point, a solver decision, a candidate and its score): --refresh takes them too
TASKS: tuple[str, ...] = (SEARCH_TASK, SOLVER_TASK, CANDIDATE_TASK, SCORE_TASK)
ALIASES: dict[str, str] = {
    **{s.artifact: s.name for s in PIPELINE if s.artifact != s.name},
    **{a.name: a.stage for a in APPROACHES if a.name != a.stage},
}
CHOICES: tuple[str, ...] = STAGES + tuple(ALIASES)


def stage_name(name: str) -> str:
    """The stage a name or alias stands for (``svc`` and ``features_svc`` -> ``train_svc``).

    Raises:
        ValueError: not a stage name or alias.
    """
    name = ALIASES.get(name, name)
    if name not in BY_STAGE:
        raise ValueError(f"unknown stage {name!r} (one of {', '.join(CHOICES)})")
    return name


def refresh_name(name: str) -> str:
    """What ``--refresh NAME`` recomputes: a stage (by name or alias, `stage_name`) or one of the `TASKS`
    (``choose_solver``: decide the solver again, e.g. on a faster machine).

    Raises:
        ValueError: neither.
    """
    if name in TASKS:
        return name
    try:
        return stage_name(name)
    except ValueError:
        raise ValueError(f"unknown stage or task {name!r} (one of {', '.join(CHOICES + TASKS)})") from None


def _closure(name: str, approaches: list[str], out: set[str]) -> None:
    if name in out:
        return
    out.add(name)
    stage = BY_STAGE[name]
    reads = list(stage.inputs) + ([BY_NAME[a].stage for a in approaches] if stage.models else [])
    for upstream in reads:
        _closure(upstream, approaches, out)


def stages_needed(approaches: list[str], until: str | None = None) -> list[Stage]:
    """The stages a run executes, in table order: for a full run, every stage that ``evaluate``
    (with the selected ``approaches``) and ``bundle`` need; else ``until`` and what it reads."""
    needed: set[str] = set()
    for target in (["evaluate", "bundle"] if until is None else [stage_name(until)]):
        _closure(target, approaches, needed)
    return [s for s in PIPELINE if s.name in needed]


def stage_config(config, stage: Stage):
    """What ``stage`` receives as ``config``: its one section, or ``{section: ...}`` for several."""
    if len(stage.config) == 1:
        return getattr(config, stage.config[0])
    return {name: getattr(config, name) for name in stage.config}


def load_task(name: str):
    """The Prefect task of stage (or task) ``name``: attribute ``name`` of module ``tasks.<name>``."""
    return getattr(importlib.import_module(f"tasks.{name}"), name)

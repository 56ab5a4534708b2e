"""The pipeline, declared once as data: which stages exist, the task each runs, what each reads, which
config it gets, and the tasks it fans out to (a solver decision, the SVC grid, the encoder search).

`flows.runner` lays this table out on a runner: Prefect's task runner (`flows.pipeline`) or plain calls
(``benchmarks/speed.py``); the CLI takes its names, and a test compares it with the graph the dashboard
shows. Importing it imports the stage modules but not Prefect (a stage's Prefect task is built on first
use: `tasks.store.cache.StageTask`), so ``marginflow --help`` stays fast.

Names: a stage is verb_noun (``train_encoder``), the artifact it writes is a noun
(``encoder``), an approach is named in `tasks.catalog` (``features_svc`` is trained by
``train_svc``). The CLI accepts the artifact and approach names as aliases of their stage.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from tasks.bundle import bundle
from tasks.catalog import APPROACHES, BY_NAME, MAIN_APPROACH
from tasks.choose_solver import choose_solver
from tasks.config import MODEL_SECTIONS
from tasks.deep_hinge import deep_hinge
from tasks.encoder_candidate import encoder_candidate
from tasks.evaluate import evaluate
from tasks.extract_features import extract_features
from tasks.ingest import ingest
from tasks.knn import knn
from tasks.linear_hinge import linear_hinge
from tasks.raw_svc import raw_svc
from tasks.rff_svm import rff_svm
from tasks.scale import scale
from tasks.score_candidate import score_candidate
from tasks.svc_cv import svc_cv
from tasks.train_encoder import train_encoder
from tasks.train_svc import train_svc

# --------------------------------------------------------------------------- fan-outs: tasks inside a stage


@dataclass(frozen=True)
class Solver:
    """One ``choose_solver`` task on the stage's first input (which SVM solver fits those rows), passed as
    ``solver``; it reads the ``svc`` section."""

    tasks: tuple[Any, ...] = (choose_solver,)
    kwargs: tuple[str, ...] = ("solver",)

    def applies(self, config) -> bool:
        return True


@dataclass(frozen=True)
class Grid:
    """With ``svc.search``: one ``svc_cv`` task per point of `tasks.core.svm.grid` on the first input, each
    after the stage's `Solver`, passed as ``cv``."""

    tasks: tuple[Any, ...] = (svc_cv,)
    kwargs: tuple[str, ...] = ("cv",)

    def applies(self, config) -> bool:
        return bool(config.svc.search)


@dataclass(frozen=True)
class Candidates:
    """With ``encoder.kind = "auto"``: per candidate of the first input's layout, one ``encoder_candidate`` and
    one ``score_candidate`` per rung of the search, and the networks' ensemble's score (`tasks.core.search.
    search_graph`), passed as ``candidates``, ``scores`` and ``ensemble``; laid out once the first input exists
    (its layout decides the candidates)."""

    tasks: tuple[Any, ...] = (encoder_candidate, score_candidate)
    kwargs: tuple[str, ...] = ("candidates", "scores", "ensemble")

    def applies(self, config) -> bool:
        return config.encoder.kind == "auto"


@dataclass(frozen=True)
class Models:
    """The model artifact of each approach in ``evaluate.approaches`` (by its stage), passed as ``models``."""

    tasks: tuple[Any, ...] = ()
    kwargs: tuple[str, ...] = ("models",)

    def applies(self, config) -> bool:
        return True


Fanout = Solver | Grid | Candidates | Models


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline.

    Attributes:
        task: the stage's task (a `tasks.store.cache.stage`): its name is the stage's name, its Prefect task's,
            its key in ``--json``; its function's parameters are checked against the rest of this row.
        artifact: the kind of artifact it writes.
        inputs: the stages whose artifacts it reads, in argument order (ingest reads the source).
        config: the config sections it receives; one is passed as itself, several as ``{section: ...}``.
        fanouts: the tasks it also reads (`Solver`, `Grid`, `Candidates`, `Models`), by keyword.
    """

    task: Any
    artifact: str
    inputs: tuple[str, ...]
    config: tuple[str, ...]
    fanouts: tuple[Fanout, ...] = ()

    @property
    def name(self) -> str:
        return self.task.name

    def reads(self, approaches: list[str]) -> list[str]:
        """The stages whose artifacts it reads, its `Models` included."""
        models = [BY_NAME[a].stage for a in approaches] if any(isinstance(f, Models) for f in self.fanouts) else []
        return [*self.inputs, *models]

    def check(self) -> None:
        """Raise TypeError unless the task's function takes exactly this row's arguments (as Kedro's nodes are
        checked against their functions): one positional parameter per input (the source for the first stage),
        then by keyword ``config``, each fan-out's keywords and ``root``, and nothing else."""
        params = list(inspect.signature(self.task.fn.__wrapped__).parameters.values())
        n_inputs = len(self.inputs) or 1
        keywords = {"config", "root", *(k for f in self.fanouts for k in f.kwargs)}
        positional = [p for p in params[:n_inputs] if p.default is inspect.Parameter.empty]
        rest = {p.name for p in params[n_inputs:]}
        if len(positional) != n_inputs or rest != keywords or len(params) != n_inputs + len(keywords):
            raise TypeError(f"stage {self.name}: its function takes {[p.name for p in params]}, the plan gives "
                            f"{n_inputs} input(s) and {sorted(keywords)}")


_TASKS = {t.name: t for t in (ingest, scale, train_encoder, extract_features, train_svc, raw_svc, linear_hinge,
                              deep_hinge, rff_svm, knn, evaluate, bundle)}
MAIN_PATH: tuple[Stage, ...] = (
    Stage(ingest, "dataset", (), ("data",)),
    Stage(scale, "scaled", ("ingest",), ("scale",)),
    Stage(train_encoder, "encoder", ("scale",), ("encoder",), (Candidates(),)),
    Stage(extract_features, "features", ("scale", "train_encoder"), ("features",)),
)
MAIN_STAGE: str = BY_NAME[MAIN_APPROACH].stage  # train_svc: the SVC on the encoder's features
# the main path's SVC first, then the other approaches in catalog order; each approach's stage writes an artifact
# of the approach's name (train_svc writes features_svc)
APPROACH_STAGES: tuple[Stage, ...] = tuple(
    Stage(_TASKS[a.stage], a.name, a.reads, (a.section,), (Solver(), Grid()) if a.search else ())
    for a in sorted(APPROACHES, key=lambda a: not a.main)
)
PIPELINE: tuple[Stage, ...] = (
    *MAIN_PATH,
    *APPROACH_STAGES,
    Stage(evaluate, "report", ("scale", "train_encoder"), ("evaluate",), (Models(),)),
    Stage(bundle, "bundle", ("scale", "train_encoder", MAIN_STAGE), MODEL_SECTIONS),
)
BY_STAGE: dict[str, Stage] = {s.name: s for s in PIPELINE}
STAGES: tuple[str, ...] = tuple(BY_STAGE)
FANOUT_TASKS: dict[str, Any] = {t.name: t for s in PIPELINE for f in s.fanouts for t in f.tasks}
SEARCH_TASK, SOLVER_TASK, CANDIDATE_TASK, SCORE_TASK = svc_cv.name, choose_solver.name, encoder_candidate.name, \
    score_candidate.name
# the tasks inside stages (a search point, a solver decision, a candidate and its score): --refresh takes them too
TASKS: tuple[str, ...] = tuple(FANOUT_TASKS)
# former artifact names the CLI still takes: name -> the stage
RENAMED_ARTIFACTS: dict[str, str] = {"svc": MAIN_STAGE}
ALIASES: dict[str, str] = {
    **{s.artifact: s.name for s in PIPELINE if s.artifact != s.name},
    **{a.name: a.stage for a in APPROACHES if a.name != a.stage},
    **RENAMED_ARTIFACTS,
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
    for upstream in BY_STAGE[name].reads(approaches):
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

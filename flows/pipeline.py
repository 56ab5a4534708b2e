"""The pipeline flow. Main path: ingest -> scale -> train_encoder -> extract_features -> train_svc
-> evaluate; beside it, the other approaches (raw_svc, linear_hinge, deep_hinge, rff_svm) run
from the same scaled split, submitted to the flow's task runner so they overlap the main path.
Keras fits take one lock (`tasks.margin.KERAS_FIT_LOCK`) because Keras' seeds are process-wide.

Each stage is a cached task (see `tasks.cache`); this module only wires them. The flow's
parameters are the whole typed config, so the dashboard shows what a run used.
"""

# No ``from __future__ import annotations`` here: Prefect builds the flow's parameter model
# from the real annotation objects when a served run loads this module by its entrypoint.
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from prefect import flow, unmapped
from pydantic import BaseModel

from flows.stages import APPROACH_STAGE, MAIN, SIDE, STAGES, stage_name
from tasks.approaches import deep_hinge, linear_hinge, raw_svc, rff_svm
from tasks.artifacts import ArtifactRef
from tasks.bundle import bundle
from tasks.cache import result_storage
from tasks.config import Config
from tasks.encoder import train_encoder
from tasks.evaluate import evaluate
from tasks.features import extract_features
from tasks.ingest import describe_source, ingest
from tasks.registry import register_model
from tasks.scale import scale
from tasks.search import grid, svc_cv
from tasks.svc import train_svc


def stages_needed(config: Config, until: str | None) -> list[str]:
    """The stages a run executes: all (main path + selected approaches + evaluate), or ``until`` and its inputs."""
    side = [APPROACH_STAGE[a] for a in config.evaluate.approaches if APPROACH_STAGE[a] in SIDE]
    if until is None:
        return [*MAIN, *side, "evaluate", "bundle"]
    until = stage_name(until)
    if until in MAIN:
        return list(MAIN[: MAIN.index(until) + 1])
    if until in SIDE:
        return ["ingest", "scale", until]
    if until == "bundle":
        return [*MAIN, "bundle"]
    return [*MAIN, *side, "evaluate"]


class StageRun(BaseModel):
    status: Literal["ran", "cached"]
    seconds: float
    artifact: str


class PipelineResult(BaseModel):
    stages: dict[str, StageRun]
    artifacts: dict[str, ArtifactRef]
    model: str | None = None  # the registry version of this run's bundle (full runs only)
    model_is_new: bool = False


@flow(name="marginflow-pipeline", description="SVM-style classifiers: encoder features -> SVC, compared with four other approaches")
def pipeline(
    config: Config,
    data_dir: str = "data",
    refresh: list[str] | None = None,
    until: str | None = None,
) -> PipelineResult:
    """Run the stages, each from cache when its inputs are unchanged.

    Args:
        config: the whole config; each stage receives its own section.
        data_dir: the data root (artifacts and cache records).
        refresh: stages to recompute even when cached (``["all"]`` for every stage).
        until: run only this stage and the stages it needs (used by ``marginflow stage``).
    """
    root = str(Path(data_dir).resolve())
    storage = result_storage(root)
    forced = {*STAGES, "svc_cv"} if "all" in (refresh or []) else {stage_name(s) for s in refresh or []}
    needed = stages_needed(config, until)
    result = PipelineResult(stages={}, artifacts={})

    def bound(task):
        return task.with_options(result_storage=storage, refresh_cache=task.name in forced)

    def record(name: str, state, seconds: float) -> ArtifactRef:
        ref = state.result()
        result.stages[name] = StageRun(
            status="cached" if state.name == "Cached" else "ran", seconds=round(seconds, 3), artifact=ref.path
        )
        result.artifacts[name] = ref
        return ref

    def run(task, *inputs):
        if task.name not in needed:
            return None
        start = time.perf_counter()
        state = bound(task)(*inputs, root=root, return_state=True)
        return record(task.name, state, time.perf_counter() - start)

    def search(data: ArtifactRef | None, target: str) -> list | None:
        """Map the ``svc.search`` grid over ``data`` (one svc_cv task per point); None without a search."""
        if data is None or not config.svc.search or target not in needed:
            return None
        began = datetime.now(UTC)
        futures = bound(svc_cv).map(unmapped(data), grid(config.svc), root=unmapped(root))
        searches[target] = (began, futures)
        return futures

    def record_search(target: str) -> None:
        began, futures = searches[target]
        states = [f.state for f in futures]
        ran = any(st.name != "Cached" for st in states)
        ended = max(st.timestamp for st in states)
        result.stages[f"{target}.cv"] = StageRun(status="ran" if ran else "cached",
                                                 seconds=round((ended - began).total_seconds(), 3),
                                                 artifact=f"{len(states)} svc_cv points")

    searches: dict[str, tuple] = {}
    dataset = run(ingest, describe_source(config.data), config.data)
    scaled = run(scale, dataset, config.scale)
    side_inputs = {raw_svc: config.svc, linear_hinge: config.linear_hinge, deep_hinge: config.encoder, rff_svm: config.rff}
    side_extra = {"raw_svc": {"cv": search(scaled, "raw_svc")}} if config.svc.search else {}
    submitted = {
        t.name: (datetime.now(UTC), bound(t).submit(scaled, cfg, root=root, **side_extra.get(t.name, {})))
        for t, cfg in side_inputs.items() if t.name in needed
    }
    encoder = run(train_encoder, scaled, config.encoder)
    features = run(extract_features, scaled, encoder, config.features) if encoder else None
    if features and "train_svc" in needed:
        cv = search(features, "train_svc")
        start = time.perf_counter()
        state = bound(train_svc)(features, config.svc, root=root, cv=cv, return_state=True)
        record("train_svc", state, time.perf_counter() - start)
    for name, (began, future) in submitted.items():
        future.wait()
        record(name, future.state, (future.state.timestamp - began).total_seconds())
    for target in searches:
        record_search(target)
    if "evaluate" in needed:
        models = {a: result.artifacts[APPROACH_STAGE[a]] for a in config.evaluate.approaches}
        run(evaluate, scaled, models, encoder, config.evaluate)
    if "bundle" in needed:
        svc = result.artifacts["train_svc"]
        bundled = run(bundle, scaled, encoder, svc, config)
        if until is None:
            result.model, result.model_is_new = register_model(bundled, root)
    return result

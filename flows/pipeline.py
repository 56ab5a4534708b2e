"""The pipeline flow: ingest -> scale -> train_encoder -> extract_features -> train_svc -> evaluate.

Each stage is a cached task (see `tasks.cache`); this module only wires them. The
flow's parameters are the whole typed config, so the dashboard shows what a run used.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from prefect import flow
from pydantic import BaseModel

from flows.stages import STAGES, stage_name
from tasks.artifacts import ArtifactRef
from tasks.cache import result_storage
from tasks.config import Config
from tasks.encoder import train_encoder
from tasks.evaluate import evaluate
from tasks.features import extract_features
from tasks.ingest import describe_source, ingest
from tasks.scale import scale
from tasks.svc import train_svc


class _Done(Exception):
    """Raised after the ``until`` stage to skip the rest."""


class StageRun(BaseModel):
    status: Literal["ran", "cached"]
    seconds: float
    artifact: str


class PipelineResult(BaseModel):
    stages: dict[str, StageRun]
    artifacts: dict[str, ArtifactRef]


@flow(name="marginflow-pipeline", description="ingest -> scale -> train_encoder -> extract_features -> train_svc -> evaluate")
def pipeline(
    config: Config,
    data_dir: str = "data",
    refresh: list[str] | None = None,
    until: str | None = None,
) -> PipelineResult:
    """Run the stages in order, each from cache when its inputs are unchanged.

    Args:
        config: the whole config; each stage receives its own section.
        data_dir: the data root (artifacts and cache records).
        refresh: stages to recompute even when cached (``["all"]`` for every stage).
        until: stop after this stage (used by ``marginflow stage``).
    """
    root = str(Path(data_dir).resolve())
    storage = result_storage(root)
    forced = set(STAGES) if "all" in (refresh or []) else {stage_name(s) for s in refresh or []}
    last = stage_name(until) if until else STAGES[-1]
    result = PipelineResult(stages={}, artifacts={})

    def run(task, *inputs):
        name = task.name
        start = time.perf_counter()
        state = task.with_options(result_storage=storage, refresh_cache=name in forced)(
            *inputs, root=root, return_state=True
        )
        ref = state.result()
        result.stages[name] = StageRun(
            status="cached" if state.name == "Cached" else "ran",
            seconds=round(time.perf_counter() - start, 3),
            artifact=ref.path,
        )
        result.artifacts[name] = ref
        if name == last:
            raise _Done
        return ref

    try:
        dataset = run(ingest, describe_source(config.data), config.data)
        scaled = run(scale, dataset, config.scale)
        encoder = run(train_encoder, scaled, config.encoder)
        features = run(extract_features, scaled, encoder, config.features)
        svc = run(train_svc, features, config.svc)
        run(evaluate, features, svc, config.evaluate)
    except _Done:
        pass
    return result

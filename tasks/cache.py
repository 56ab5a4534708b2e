"""The stage cache: a Prefect cache policy keyed by content, and the `stage` task decorator.

The cache key of a stage is the SHA-256 of

* the SHA-256 of each input artifact (never its path),
* the stage's own config section (canonical JSON),
* the source code of the stage's module (its code version).

Prefect stores each result record (the stage's `ArtifactRef`, as JSON) under
``<root>/cache/<key>``, so a new process, a fresh ``PREFECT_HOME`` or a scheduled run
all reuse it. Before Prefect trusts a record, `ArtifactCache` checks that the
artifact it names is still intact; a missing or altered artifact drops the record,
and the stage runs again instead of handing on a stale file.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from pydantic import BaseModel

from tasks.artifacts import ArtifactRef, sha256_text

CACHE_DIR = "cache"


def cache_dir(root: str | Path) -> Path:
    return Path(root) / CACHE_DIR


def result_storage(root: str | Path) -> Path:
    """Where Prefect keeps the result records of the stages for data root ``root``.

    A `Path` (not an unsaved block): Prefect turns it into a local file system itself.
    """
    return cache_dir(root).resolve()


@functools.cache
def code_version(module_name: str) -> str:
    """SHA-256 of a module's source: any edit to a stage's module invalidates its cache."""
    return sha256_text(inspect.getsource(importlib.import_module(module_name)))


def _canonical(value: Any) -> Any:
    if isinstance(value, ArtifactRef):
        return {"artifact": value.kind, "sha256": value.sha256}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def stage_key(stage: str, module_name: str, inputs: dict[str, Any]) -> str:
    """The cache key of one stage call; the ``root`` argument is not part of it."""
    material = {
        "stage": stage,
        "code": code_version(module_name),
        "inputs": {k: _canonical(v) for k, v in sorted(inputs.items()) if k != "root"},
    }
    return sha256_text(json.dumps(material, sort_keys=True, default=str))


class ArtifactCache(CachePolicy):
    """Content-addressed cache policy for marginflow stages (see the module docstring)."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        fn = task_ctx.task.fn
        key = stage_key(task_ctx.task.name, fn.__module__, inputs)
        record = cache_dir(inputs["root"]) / key
        if record.exists() and not _record_is_intact(task_ctx, key):
            record.unlink(missing_ok=True)
        return key


def _record_is_intact(task_ctx: TaskRunContext, key: str) -> bool:
    try:
        value = task_ctx.result_store.read(key).result
    except Exception:  # unreadable or foreign record: recompute
        return False
    return isinstance(value, ArtifactRef) and value.is_intact()


def stage(name: str):
    """Turn a ``fn(..., root: str) -> ArtifactRef`` into a cached Prefect stage task.

    The flow binds ``result_storage`` to the run's data root with `result_storage`.
    """

    def wrap(fn):
        return task(
            fn,
            name=name,
            cache_policy=ArtifactCache(),
            persist_result=True,
            result_serializer="json",
        )

    return wrap

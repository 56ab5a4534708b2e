"""The stage cache: keys over content and code, plain-JSON records, and the `stage` task decorator.

The cache key of a stage call is the SHA-256 of

* the stage's name;
* the SHA-256 of each input artifact (never its path or data root);
* the config it receives (its section, canonical JSON);
* the code version: the text of the stage function **and of every function, class and constant
  of ``tasks.*`` it can reach** (at any depth, across modules: `tasks.store.code`), plus the
  installed versions of keras, jax, scikit-learn and numpy. Comments, docstrings and config
  help texts are not part of it; editing a function no stage reaches reruns nothing.

What the key does not see: code outside ``tasks`` other than those four libraries (pandas,
pyarrow, matplotlib, Prefect), the machine, and environment variables such as
``KERAS_BACKEND``. Computing a key reads files and has no side effects.

A record is ``<root>/cache/<key>.json``: plain JSON that this module writes and validates
itself (format, stage, key, and an artifact reference whose path must lie under
``<root>/artifacts``). Nothing named inside a record is ever imported or deserialised as a
class: a record that does not parse or validate is a miss, and the stage recomputes. A
hit also requires the artifact's files to have the bytes the record lists. Paths in
records are relative to the data root, so a copied or moved root keeps its cache.

Prefect's own result persistence and cache policies are not used for stages: a stage task
returns a ``Completed`` state named ``Cached`` on a hit, so the dashboard still tells the two apart.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import socket
import tempfile
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tasks import faults
from tasks.obs.progress import SHARED_IMPORTS, OwnTime, emit, import_once, in_row
from tasks.store.artifacts import ArtifactRef, StoredRef, sha256_text
from tasks.store.code import code_units

CACHE_DIR = "cache"
RECORD_FORMAT = "marginflow-cache/1"
LIBRARIES = ("keras", "jax", "scikit-learn", "numpy")
_MAX_RECORD_BYTES = 1 << 20


def cache_dir(root: str | os.PathLike[str]) -> Path:
    return Path(root) / CACHE_DIR


# --------------------------------------------------------------------------- code version


def library_versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            out[lib] = "absent"
    return out


_CODE_VERSIONS: dict[str, str] = {}
_CODE_LOCK = threading.Lock()  # one computation per entry per process, even when stages start together


def entry(fn) -> str:
    """The code entry of a function: ``"module:name"``."""
    return f"{fn.__module__}:{fn.__qualname__}"


def code_version(entry: str) -> str:
    """SHA-256 over the units `tasks.store.code.code_units` reaches from ``entry`` (``"tasks.x:fn"``) and the
    `LIBRARIES` versions.

    Computed once per process: it describes the code this process imported.
    """
    with _CODE_LOCK:
        if entry not in _CODE_VERSIONS:
            lines = [f"{name}\0{digest}" for name, digest in code_units(entry).items()]
            lines += [f"{lib}=={v}" for lib, v in library_versions().items()]
            _CODE_VERSIONS[entry] = sha256_text("\n".join(lines))
        return _CODE_VERSIONS[entry]


def warm_code_versions(functions) -> None:
    """Compute the code versions of stage ``functions`` (tasks or plain functions) now, in one thread, so that
    stages started together in threads only read them."""
    for fn in functions:
        code_version(entry(getattr(getattr(fn, "fn", fn), "__wrapped__", fn)))


# --------------------------------------------------------------------------- keys and records


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


# arguments that say where or until when a stage runs, not what it computes: never in a key
UNKEYED = ("root", "deadline")


def stage_key(stage: str, fn, inputs: dict[str, Any]) -> str:
    """The cache key of one call of stage function ``fn``; the `UNKEYED` arguments are not part of it."""
    material = {
        "stage": stage,
        "code": code_version(entry(fn)),
        "inputs": {k: _canonical(v) for k, v in sorted(inputs.items()) if k not in UNKEYED},
    }
    return sha256_text(json.dumps(material, sort_keys=True, default=str))


def record_path(root: str | os.PathLike[str], key: str) -> Path:
    return cache_dir(root) / f"{key}.json"


class RecordProblem(ValueError):
    """Why a cache record was not used."""


def read_record(root: str | os.PathLike[str], stage: str, key: str) -> ArtifactRef | None:
    """The artifact of a valid record whose files are intact, resolved against ``root``; None on a miss.

    Raises:
        RecordProblem: a record exists but is not a valid marginflow record, or its artifact
            is missing or altered (the caller treats this as a miss and says why).
    """
    path = record_path(root, key)
    try:
        if path.stat().st_size > _MAX_RECORD_BYTES:
            raise RecordProblem(f"{path}: larger than any marginflow record")
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise RecordProblem(f"{path}: unreadable ({e})") from None
    try:
        record = json.loads(text)
    except ValueError:
        raise RecordProblem(f"{path}: not JSON") from None
    if not isinstance(record, dict) or set(record) != {"format", "stage", "key", "artifact"}:
        raise RecordProblem(f"{path}: not a {RECORD_FORMAT} record")
    if record["format"] != RECORD_FORMAT or record["stage"] != stage or record["key"] != key:
        raise RecordProblem(f"{path}: format, stage or key does not match")
    try:
        stored = StoredRef.model_validate(record["artifact"])
    except ValidationError as e:
        raise RecordProblem(f"{path}: invalid artifact reference ({e.errors()[0]['msg']})") from None
    if stored.path.split("/")[1] != stored.kind:
        raise RecordProblem(f"{path}: artifact path does not match its kind")
    ref = ArtifactRef.model_validate(stored.model_dump()).at(root)
    if not ref.is_intact():
        raise RecordProblem(f"{path}: its artifact {ref.path} is missing or altered")
    return ref


def write_record(root: str | os.PathLike[str], stage: str, key: str, ref: ArtifactRef) -> None:
    """Write the record atomically (temp file + rename)."""
    directory = cache_dir(root)
    directory.mkdir(parents=True, exist_ok=True)
    record = {"format": RECORD_FORMAT, "stage": stage, "key": key, "artifact": ref.model_dump(mode="json")}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".record-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, sort_keys=True)
        os.replace(tmp, record_path(root, key))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- the stage decorator


def _resolved(value: Any, root: str) -> Any:
    """``value`` with every `ArtifactRef` inside it resolved against ``root``."""
    if isinstance(value, ArtifactRef):
        return value if value.kind == "source" else value.at(root)
    if isinstance(value, dict):
        return {k: _resolved(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v, root) for v in value]
    return value


def where() -> str:
    """This process, as ``host pid N`` (shown for each stage run)."""
    return f"{socket.gethostname()} pid {os.getpid()}"


def row_name(name: str, label, inputs: dict[str, Any]) -> str:
    """The display row of a stage call: ``label(inputs)`` (a part of a stage, such as one search candidate), else
    the stage's name; a label that fails never fails the stage."""
    if label is None:
        return name
    try:
        return str(label(inputs) or name)
    except Exception:
        return name


def run_cached(name: str, fn, args: tuple, kwargs: dict, refresh: bool = False,
               imports: tuple[str, ...] = SHARED_IMPORTS, label=None) -> tuple[ArtifactRef | None, bool, OwnTime]:
    """Call stage function ``fn`` unless a valid record for its key exists.

    A stage function may return None (it had nothing to do: a search candidate past its
    budget, or stopped by successive halving); then no record is written and the next call runs it
    again. Before a call the libraries ``imports`` are imported (`import_once`, counted as waiting).

    Returns:
        (artifact or None, cached, the call's own seconds and its seconds spent waiting: `OwnTime`).
    """
    from tasks.obs.runlog import stage_logger

    with OwnTime() as took:
        root, inputs, key = _call(name, fn, args, kwargs)
        row = row_name(name, label, inputs)
        with in_row(name, row):
            emit("stage_start")
            ref = None
            if not refresh:
                try:
                    ref = read_record(root, name, key)
                except RecordProblem as e:
                    stage_logger().warning("%s: cache record not used, recomputing: %s", name, e)
            cached = ref is not None
            if ref is None:
                import_once(*imports)
                ref = fn(**inputs)
                faults.point(f"stage:{name}")
                if ref is not None:
                    write_record(root, name, key, ref)
    status = "cached" if cached else "ran" if ref is not None else "skipped"
    with in_row(name, row):
        emit("stage_end", status=status, seconds=took.seconds, waited=took.waited)
    return ref, cached, took


def _call(name: str, fn, args: tuple, kwargs: dict) -> tuple[str, dict[str, Any], str]:
    """(data root, the call's arguments by name with artifacts resolved against it, cache key) of a stage call."""
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    root = str(bound.arguments["root"])
    inputs = {k: _resolved(v, root) for k, v in bound.arguments.items()}
    return root, inputs, stage_key(name, fn, inputs)


def lookup(task, *args: Any, **kwargs: Any) -> ArtifactRef | None:
    """The artifact a `stage` task would return from its cache for these arguments, or None on a miss;
    nothing runs and nothing is written (a damaged record is a miss)."""
    root, _, key = _call(task.name, task.fn.__wrapped__, args, kwargs)
    try:
        return read_record(root, task.name, key)
    except RecordProblem:
        return None


def _unshared(ref: ArtifactRef) -> ArtifactRef:
    """``ref`` without its data root and with a kind string of its own.

    Prefect links a task's result *and each of its fields* to the task by ``id()``, and takes
    any argument of a later task with the same ``id()`` (at any depth) for an upstream edge.
    The flow's root string, or an interned literal such as ``"report"`` (an artifact kind that
    is also a key or an approach name elsewhere), would then draw false edges in the graph.
    Annotating every argument with ``quote()`` instead does not survive the Dask task runner.
    """
    return ref.model_copy(update={"root": None, "kind": ref.kind.encode().decode()})


def stage(name: str, imports: tuple[str, ...] = SHARED_IMPORTS, label=None):
    """Turn ``fn(..., root: str) -> ArtifactRef`` into a content-cached Prefect task named ``name``.

    Inside a Prefect run the task returns a ``Completed`` state (named ``Cached`` on a hit) whose
    message says what happened, how long it took and where it ran; `describe` reads it back.
    Called as ``task.fn(...)`` outside Prefect it returns the `ArtifactRef` itself (same cache).
    ``refresh_cache=True`` on the task (``task.with_options``) forces recomputation.
    ``imports``: the libraries imported before the stage function runs (not on a cache hit), their time
    counted as waiting (`tasks.obs.progress.import_once`): Keras, scikit-learn's SVM and skops by default;
    stages that need fewer name them, and a stage that may decide to do nothing (a candidate stopped by
    successive halving) names none and imports what it needs once it knows.
    ``label``: ``inputs -> str``, the display row of one call when the stage runs once per part of something
    (``candidate cnn2d-shift``); it also names the Prefect task run when the caller gave it no name.
    """

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            from prefect.context import TaskRunContext

            ctx = TaskRunContext.get()
            refresh = bool(ctx and ctx.task.refresh_cache)
            ref, cached, took = run_cached(name, fn, args, kwargs, refresh, imports, label)
            if ctx is None:
                return ref
            from prefect.states import Completed

            status = "cached" if cached else "ran" if ref is not None else "skipped"
            waited = f" (waited {took.waited:.3f} s)" if took.waited >= 0.001 else ""
            if took.waited >= 1:  # the dashboard's duration includes the wait: its name tells the two apart
                ctx.task_run.name = f"{ctx.task_run.name} ({took.seconds:.0f} s work, {took.waited:.0f} s waiting)"
            return Completed(data=None if ref is None else _unshared(ref),
                             name={"cached": "Cached", "ran": "Completed", "skipped": "Skipped"}[status],
                             message=f"{status} in {took.seconds:.3f} s{waited} on {where()}")

        return StageTask(name, run)

    return wrap


class StageTask:
    """A stage function as a Prefect task, built on first use: importing a stage module (the plan does, and
    the CLI reads the plan) does not import Prefect.

    ``task.fn(...)`` calls the stage outside Prefect (same cache) and ``task.fn.__wrapped__`` is the stage
    function itself; every other attribute (``submit``, ``map``, ``with_options``) is the Prefect task's.
    """

    def __init__(self, name: str, run):
        self.name = name
        self.fn = run
        self._task = None
        self._lock = threading.Lock()

    @property
    def task(self):
        with self._lock:
            if self._task is None:
                from prefect import task
                from prefect.cache_policies import NO_CACHE

                self._task = task(self.fn, name=self.name, cache_policy=NO_CACHE, persist_result=False)
            return self._task

    def __getattr__(self, attr: str):
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self.task, attr)

    def __call__(self, *args, **kwargs):
        return self.task(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<stage task {self.name}>"

    def __reduce__(self):  # by reference (a flow that names a stage task is sent to Dask workers with it)
        return _stage_task, (self.fn.__module__, self.fn.__name__)


def _stage_task(module: str, name: str) -> StageTask:
    """The stage task ``name`` of ``module`` (what a pickled `StageTask` stands for)."""
    import importlib

    return getattr(importlib.import_module(module), name)


def describe(state) -> dict[str, Any]:
    """``{"status", "seconds", "waited", "where"}`` of a finished stage state (from its message).

    ``seconds`` is the stage's own work; ``waited`` the time it spent waiting for the Keras lock or a
    first shared import (`tasks.obs.progress`).
    """
    m = re.fullmatch(r"(ran|cached|skipped) in ([0-9.]+) s(?: \(waited ([0-9.]+) s\))? on (.+)", state.message or "")
    if m is None:
        return {"status": "cached" if state.name == "Cached" else "ran", "seconds": float("nan"), "waited": 0.0,
                "where": "?"}
    return {"status": m[1], "seconds": float(m[2]), "waited": float(m[3] or 0.0), "where": m[4]}

"""What a running stage tells the process it runs in: its start and end, its epochs, its waits.

Two small, Prefect-free facilities:

* **Events.** `emit` hands ``(event, fields)`` to the listeners of this process (the terminal's
  progress display, `flows.display`). Stages emit ``stage_start``, ``stage_end``, ``epoch``, and
  ``wait``/``resume`` around a wait for the Keras lock; each carries its stage and display row
  (`in_row`). With no listener (a Dask worker, a test) an event costs one list lookup.
* **Waiting time.** `waiting` measures time a thread spends blocked on a shared resource (the
  Keras fit lock, `tasks.core.margin.seeded_keras`, and the first import of the libraries the
  stages share, `import_once`); `OwnTime` measures a block's elapsed time less that waiting,
  so stage and fit seconds are the work's own and not the queue's.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

Listener = Callable[[str, dict[str, Any]], None]
_LISTENERS: list[Listener] = []
_LOCAL = threading.local()


def emit(event: str, **fields: Any) -> None:
    """Tell every listener of this process; a listener's failure never reaches the stage.

    An event emitted inside `in_row` (a stage call) carries that stage and display row unless it names its own.
    """
    if not _LISTENERS:
        return
    current = getattr(_LOCAL, "row", None)
    if current is not None:
        fields = {"stage": current[0], "row": current[1], **fields}
    for listener in list(_LISTENERS):
        with contextlib.suppress(Exception):
            listener(event, fields)


@contextlib.contextmanager
def in_row(stage: str, row: str) -> Iterator[None]:
    """Events this thread emits in the block belong to ``stage``, shown on display row ``row`` (a stage's own
    name, or one part of it: ``candidate cnn2d-shift``)."""
    before = getattr(_LOCAL, "row", None)
    _LOCAL.row = (stage, row)
    try:
        yield
    finally:
        _LOCAL.row = before


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Receive this process's events for the duration."""
    _LISTENERS.append(listener)
    try:
        yield
    finally:
        _LISTENERS.remove(listener)


def waited() -> float:
    """Seconds this thread has spent inside `waiting` blocks so far."""
    return getattr(_LOCAL, "seconds", 0.0)


@contextlib.contextmanager
def waiting(for_what: str | None = None) -> Iterator[None]:
    """Count the block's duration as this thread's waiting time (wrap only the blocking call). With
    ``for_what``, tell the listeners too (events ``wait``, then ``resume``), so a display shows the stage as
    waiting, not running."""
    start = time.perf_counter()
    if for_what:
        emit("wait", reason=for_what)
    try:
        yield
    finally:
        _LOCAL.seconds = waited() + time.perf_counter() - start
        if for_what:
            emit("resume")


# Libraries most stages need, imported in the first minutes of a run by several threads at once.
SHARED_IMPORTS = ("keras", "sklearn.svm", "skops.io")
SVC_IMPORTS = ("sklearn.svm", "skops.io")  # stages that fit or save an SVC and never touch Keras


_IMPORT_LOCK = threading.Lock()
_IMPORTED: set[str] = set()


def import_once(*names: str) -> list[Any]:
    """The modules ``names``, imported one thread at a time in this process.

    Python's per-module import locks do not stop a thread from seeing a half-initialised module
    when two threads import packages that import each other (matplotlib's pyplot and a library
    that imports it on the way): every import a stage starts from a worker thread goes through here.
    The time spent here counts as waiting (`waiting`), not as the stage's own work.
    """
    import importlib
    import sys

    if _IMPORTED.issuperset(names):  # imported whole by an earlier call (sys.modules also holds half-made ones)
        return [sys.modules[n] for n in names]
    with waiting(), _IMPORT_LOCK:
        modules = [importlib.import_module(n) for n in names]
        _IMPORTED.update(names)
        return modules


class OwnTime:
    """Elapsed seconds of a ``with`` block less the time its thread spent waiting (`waiting`).

    Attributes (after the block): ``seconds`` own work, ``waited`` time blocked.
    """

    seconds: float = 0.0
    waited: float = 0.0

    def __enter__(self) -> OwnTime:
        self._start, self._waited = time.perf_counter(), waited()
        return self

    def __exit__(self, *exc: object) -> None:
        self.waited = waited() - self._waited
        self.seconds = max(0.0, time.perf_counter() - self._start - self.waited)

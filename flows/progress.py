"""What the terminal shows while a pipeline runs, and where the full logs go.

* On a terminal (stderr is a TTY): a live display, redrawn a few times a second: stage k of n,
  every stage's state (waiting, running with its epoch and an ETA, ran or cached with its
  seconds). Prefect's console lines are held back to warnings; the full logs still go to the
  Prefect API (the dashboard) and to ``--log-file``.
* Elsewhere (CI, cron, a pipe): Prefect's plain log lines, as before.
* ``--quiet``: neither; errors only.

The display listens to `tasks.store.progress` events: stage start and end and Keras epochs
from stages running in this process (the thread engine), and each stage's result as the flow
collects it (every engine, Dask workers included).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tasks.store.progress import listening


class RunFormatter(logging.Formatter):
    """``time LEVEL run: message``, the run being the task run or flow run that logged the line."""

    def format(self, record: logging.LogRecord) -> str:
        run = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None) or record.name
        record.run = run
        return super().format(record)


LOG_FORMAT = "%(asctime)s %(levelname)-7s %(run)s: %(message)s"


def console_handlers() -> list[logging.Handler]:
    """Prefect's console handlers (on the ``prefect`` logger tree)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    found = []
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        found += [h for h in logging.getLogger(name).handlers if isinstance(h, PrefectConsoleHandler)]
    return found


class _OneLineInputErrors(logging.Formatter):
    """A console handler's formatter that leaves out the traceback of bad input.

    Prefect logs a failed task's or flow's exception with its traceback; for an `InputError`, which the CLI
    reports as one line (exit 2), the console keeps the log line and drops the traceback. The Prefect API and
    ``--log-file`` still get it whole (the record is put back as it was once formatted).
    """

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        from tasks.errors import InputError

        if not (record.exc_info and isinstance(record.exc_info[1], InputError)):
            return self.inner.format(record)
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = saved


@contextlib.contextmanager
def log_setup(log_file: str | None, console_level: int | None, keep_level: bool = False) -> Iterator[None]:
    """Send every run log line to ``log_file`` (appended; INFO and up) and, when ``console_level``
    is given, raise Prefect's console handlers to it for the duration (and after, with
    ``keep_level``: the temporary server's goodbye line at exit is noise too).

    The file needs INFO records from the loggers; without ``console_level`` the console keeps the
    level it had (``PREFECT_LOGGING_LEVEL``).
    """
    import prefect.main  # noqa: F401  (importing it configures Prefect's logging; done first, so not again after)
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()  # the handlers must exist before they can be adjusted
    loggers = [logging.getLogger("prefect"), logging.getLogger("marginflow")]
    level = console_level
    if log_file and level is None and loggers[0].getEffectiveLevel() > logging.INFO:
        level = loggers[0].getEffectiveLevel()
    handlers = console_handlers() if level is not None else []
    consoles = console_handlers()
    formatters = [h.formatter for h in consoles]
    for h in consoles:
        if not isinstance(h.formatter, _OneLineInputErrors):
            h.setFormatter(_OneLineInputErrors(h.formatter))
    handler_levels = [h.level for h in handlers]
    logger_levels = [lg.level for lg in loggers]
    for h in handlers:
        h.setLevel(level)
    file_handler = None
    if log_file:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(RunFormatter(LOG_FORMAT))
        for lg in loggers:
            lg.addHandler(file_handler)
            if lg.getEffectiveLevel() > logging.INFO:
                lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        if not keep_level:
            for h, before in zip(handlers, handler_levels, strict=True):
                h.setLevel(before)
            for h, before in zip(consoles, formatters, strict=True):
                h.setFormatter(before)
        if file_handler is not None:
            for lg, before in zip(loggers, logger_levels, strict=True):
                lg.removeHandler(file_handler)
                lg.setLevel(before)
            file_handler.close()


# tasks that run as part of a stage: their progress is that stage's
PART_OF = {"encoder_candidate": "train_encoder", "score_candidate": "train_encoder"}


@dataclass
class StageState:
    status: str = "waiting"  # waiting | running | ran | cached
    started: float = 0.0
    seconds: float = 0.0
    epoch: int = 0
    epochs: int = 0
    epoch_at: float = 0.0
    epochs_from: float = 0.0  # when the current fit began (a search trains several in turn)
    unit: str = "epoch"  # or "batch": stages that stream a table report batches done


class Progress:
    """The state the display draws: one `StageState` per planned stage, updated by events."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stages: dict[str, StageState] = {}
        self.started = time.monotonic()

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        with self.lock:
            if event == "plan":
                for name in fields["stages"]:
                    self.stages.setdefault(name, StageState())
                return
            name = fields.get("stage")
            if name is None:
                return
            now = time.monotonic()
            if name in PART_OF:  # one candidate of a stage's search: shown on that stage's line
                s = self.stages.setdefault(PART_OF[name], StageState())
                if event == "stage_end":
                    s.epoch = s.epochs = 0  # the next candidate's epochs follow
                    return
                if event == "stage_start":
                    s.epochs_from = now
            else:
                s = self.stages.setdefault(name, StageState())
            if event == "stage_start" and s.status == "waiting":
                s.status, s.started = "running", now
                s.epochs_from = s.epochs_from or now
            elif event in ("stage_end", "stage_done") and s.status in ("waiting", "running"):
                s.status, s.seconds = fields["status"], float(fields["seconds"])
            elif event == "epoch" and s.status in ("waiting", "running"):
                if s.status == "waiting":
                    s.status, s.started = "running", now
                    s.epochs_from = s.epochs_from or now
                s.epoch, s.epochs, s.epoch_at = int(fields["epoch"]), int(fields["epochs"]), now
                s.unit = str(fields.get("unit", "epoch"))

    def lines(self) -> list[str]:
        """The display as plain text lines (the same text the live view shows)."""
        with self.lock:
            items = list(self.stages.items())
        done = sum(s.status in ("ran", "cached") for _, s in items)
        running = [n for n, s in items if s.status == "running"]
        elapsed = time.monotonic() - self.started
        if not items:
            return [f"marginflow: starting (the Prefect API, the engine) {elapsed:5.0f} s"]
        head = f"marginflow: stage {min(done + 1, len(items))} of {len(items)}"
        head += f" ({done} done; running: {', '.join(running) or '-'}) {elapsed:5.0f} s"
        out = [head]
        now = time.monotonic()
        for name, s in items:
            if s.status == "cached":
                out.append(f"  ✓ {name:<18} cached")
            elif s.status == "ran":
                out.append(f"  ✓ {name:<18} ran in {s.seconds:.1f} s")
            elif s.status == "running":
                detail = f"running {now - s.started:.0f} s"
                if s.epochs and s.epoch:
                    per_epoch = (s.epoch_at - (s.epochs_from or s.started)) / s.epoch
                    eta = per_epoch * (s.epochs - s.epoch)
                    detail += f", {s.unit} {s.epoch}/{s.epochs}, <= {eta:.0f} s left"  # early stopping may end it sooner
                out.append(f"  ▸ {name:<18} {detail}")
            else:
                out.append(f"  · {name:<18} waiting")
        return out


@contextlib.contextmanager
def live_display(enabled: bool) -> Iterator[Progress | None]:
    """A live view of the run on stderr while the block runs (only when ``enabled``)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    progress = Progress()
    console = Console(file=sys.stderr)

    class View:
        def __rich__(self) -> Text:
            return Text("\n".join(progress.lines()))

    with listening(progress), Live(View(), console=console, refresh_per_second=4, transient=False):
        yield progress

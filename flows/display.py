"""What the terminal shows while a pipeline runs, and where the full logs go.

* On a terminal (stderr is a TTY): a live display, redrawn a few times a second: stage k of n,
  an estimate of the time left, the dashboard link (when a dashboard outlives the run), every
  stage's state (not started, running with its epoch and an ETA, waiting for another Keras fit,
  ran or cached with its seconds), and each encoder candidate as a row of its own. Prefect's console lines are held back to warnings; the full logs still go to the
  Prefect API (the dashboard) and to ``--log-file``.
* Elsewhere (CI, cron, a pipe): Prefect's plain log lines, as before.
* ``--quiet``: neither; errors only.

The display listens to `tasks.obs.progress` events: stage start and end and Keras epochs
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

from tasks.obs.progress import listening


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


# tasks that run as part of a stage: each call is a row of its own under that stage (``candidate cnn2d-shift``)
PART_OF = {"encoder_candidate": "train_encoder", "score_candidate": "train_encoder"}
# the stages that fit a Keras model (one at a time in a process: `tasks.core.margin.seeded_keras`); train_encoder
# fits one unless it keeps a search's candidate
FITS = ("train_encoder", "encoder_candidate", "linear_hinge", "rff_svm", "deep_hinge")


@dataclass
class StageState:
    status: str = "waiting"  # waiting (not started) | running | blocked (waiting for the Keras lock) | ran | cached
    #                          | stopped (a candidate stopped by successive halving or the search budget)
    started: float = 0.0
    seconds: float = 0.0
    epoch: int = 0
    epochs: int = 0
    epoch_at: float = 0.0
    epochs_from: float = 0.0  # when the current fit began (a candidate trains once per rung)
    unit: str = "epoch"  # or "batch": stages that stream a table report batches done
    parent: str | None = None  # the stage this row is a part of
    stage: str = ""  # the task whose row this is
    blocked_since: float = 0.0
    waited: float = 0.0  # seconds spent blocked so far (not running)
    reason: str = ""  # what it waits for


def _clock(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.0f} s" if seconds < 100 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


class Progress:
    """The state the display draws: one `StageState` per planned stage and per part of one, updated by events."""

    def __init__(self, dashboard: str | None = None) -> None:
        self.lock = threading.Lock()
        self.stages: dict[str, StageState] = {}
        self.started = time.monotonic()
        self.dashboard = dashboard  # the dashboard's base URL, when there is one to open
        self.link: str | None = None

    def _row(self, fields: dict[str, Any]) -> StageState | None:
        stage = fields.get("stage")
        if stage is None:
            return None
        row = fields.get("row") or stage
        if stage not in PART_OF:
            return self.stages.setdefault(stage, StageState(stage=stage if stage in FITS else ""))
        if row == stage:  # a part with no row of its own (a score of nothing): not shown
            return None
        parent = self.stages.setdefault(PART_OF[stage], StageState())
        parent.stage = ""  # a search's stage keeps a candidate: its parts are the fits
        s = self.stages.setdefault(row, StageState(parent=PART_OF[stage]))
        if stage in FITS:
            s.stage = stage
        return s

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        with self.lock:
            if event == "plan":
                for name in fields["stages"]:
                    self.stages.setdefault(name, StageState(stage=name if name in FITS else ""))
                if self.dashboard and fields.get("flow_run_id"):
                    self.link = f"{self.dashboard}/runs/flow-run/{fields['flow_run_id']}"
                return
            s = self._row(fields)
            if s is None:
                return
            now = time.monotonic()
            part = s.parent is not None
            if part and s.parent in self.stages and self.stages[s.parent].status == "waiting":
                self.stages[s.parent].status, self.stages[s.parent].started = "running", now  # the search began
            if event == "stage_start" and (s.status == "waiting" or part and s.status in ("ran", "cached")):
                s.status, s.started, s.epoch, s.epochs = "running", now, 0, 0  # a part runs again: its next rung
                s.epochs_from = now
            elif event in ("stage_end", "stage_done") and s.status in ("waiting", "running", "blocked"):
                status = fields["status"]
                s.status = "stopped" if status == "skipped" else status
                s.seconds += float(fields["seconds"])
            elif event == "wait" and s.status in ("waiting", "running"):
                s.status, s.blocked_since, s.reason = "blocked", now, str(fields.get("reason", ""))
                s.started = s.started or now
            elif event == "resume" and s.status == "blocked":
                s.status, s.waited = "running", s.waited + now - s.blocked_since
                s.epochs_from = max(s.epochs_from, now)
            elif event == "epoch" and s.status in ("waiting", "running"):
                if s.status == "waiting":
                    s.status, s.started = "running", now
                if int(fields["epoch"]) == 0:  # a fit begins
                    s.epochs_from = now
                s.epochs_from = s.epochs_from or now
                s.epoch, s.epochs, s.epoch_at = int(fields["epoch"]), int(fields["epochs"]), now
                s.unit = str(fields.get("unit", "epoch"))

    @staticmethod
    def _eta(s: StageState) -> float | None:
        """Seconds left of a running fit at its measured rate (early stopping may end it sooner); None unmeasured."""
        if s.status != "running" or not (s.epochs and s.epoch):
            return None
        return (s.epoch_at - s.epochs_from) / s.epoch * (s.epochs - s.epoch)

    def time_left(self, items: list[tuple[str, StageState]]) -> float | None:
        """An estimate of the run's time left. Keras fits run one at a time (they share one lock) and take most
        of a run, so: each running fit at its measured rate, plus each fit not started or waiting its turn at
        the mean time of this run's finished fits. None until a fit has finished or measured its rate."""
        fits = [(n, s) for n, s in items if s.stage in FITS]
        etas = [e for _, s in fits if (e := self._eta(s)) is not None]
        done = [s.seconds for _, s in fits if s.status == "ran" and s.seconds > 0]
        pending = sum(s.status in ("waiting", "blocked") or s.status == "running" and self._eta(s) is None
                      for _, s in fits)
        if not done and not etas:
            return None
        mean = sum(done) / len(done) if done else max(etas)
        return sum(etas) + pending * mean

    def lines(self) -> list[str]:
        """The display as plain text lines (the same text the live view shows)."""
        with self.lock:
            items = list(self.stages.items())
            link = self.link
        stages = [(n, s) for n, s in items if s.parent is None]
        done = sum(s.status in ("ran", "cached") for _, s in stages)
        running = [n for n, s in stages if s.status == "running"]
        elapsed = time.monotonic() - self.started
        if not items:
            return [f"marginflow: starting (the Prefect API, the engine) {elapsed:5.0f} s"]
        head = f"marginflow: stage {min(done + 1, len(stages))} of {len(stages)}"
        head += f" ({done} done; running: {', '.join(running) or '-'}) {elapsed:5.0f} s"
        left = self.time_left(items) if done < len(stages) else None
        if left is not None:
            head += f", about {_clock(left)} left"
        out = [head]
        if link:
            out.append(f"  dashboard: {link}")
        now = time.monotonic()
        order = [n for n, s in stages]
        for parent in {s.parent for _, s in items if s.parent}:  # parts right under their stage
            at = order.index(parent) + 1 if parent in order else len(order)
            order[at:at] = [n for n, s in items if s.parent == parent]
        for name in order:
            s = self.stages[name]
            pad, width = ("    ", 24) if s.parent else ("  ", 18)
            if s.status == "cached":
                out.append(f"{pad}✓ {name:<{width}} cached")
            elif s.status == "ran":
                out.append(f"{pad}✓ {name:<{width}} ran in {s.seconds:.1f} s"
                           + (f" (waited {s.waited:.0f} s)" if s.waited >= 1 else ""))
            elif s.status == "stopped":
                out.append(f"{pad}– {name:<{width}} stopped (successive halving or the search budget)")
            elif s.status == "blocked":
                out.append(f"{pad}⏸ {name:<{width}} waiting for {s.reason or 'its turn'} {now - s.blocked_since:.0f} s")
            elif s.status == "running":
                detail = f"running {now - s.started - s.waited:.0f} s"
                eta = self._eta(s)
                if eta is not None:
                    detail += f", {s.unit} {s.epoch}/{s.epochs}, <= {eta:.0f} s left"  # early stopping may end it sooner
                elif s.epochs:
                    detail += f", {s.unit} {s.epoch}/{s.epochs}"
                out.append(f"{pad}▸ {name:<{width}} {detail}")
            else:
                out.append(f"{pad}· {name:<{width}} waiting")
        return out


@contextlib.contextmanager
def live_display(enabled: bool, dashboard: str | None = None) -> Iterator[Progress | None]:
    """A live view of the run on stderr while the block runs (only when ``enabled``); ``dashboard``: the base URL
    of a dashboard that outlives the run, whose flow run page the view links to."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    progress = Progress(dashboard)
    console = Console(file=sys.stderr)

    class View:
        def __rich__(self) -> Text:
            return Text("\n".join(progress.lines()))

    with listening(progress), Live(View(), console=console, refresh_per_second=4, transient=False):
        yield progress

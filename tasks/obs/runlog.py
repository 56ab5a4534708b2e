"""Logging and Prefect artifacts from inside a stage; outside a Prefect run, plain logging.

Prefect is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from tasks.obs.processes import process_alive
from tasks.obs.progress import emit


def in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return bool(TaskRunContext.get() or FlowRunContext.get())


def stage_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run, else the ``marginflow`` logger."""
    if in_prefect_run():
        from prefect import get_run_logger

        return get_run_logger()
    return logging.getLogger("marginflow")


def batch_progress(name: str, total_rows: int, batch_rows: int):
    """``done(rows)``: tell the terminal's display how many of a stage's ``total_rows`` rows it has
    streamed, as batches of ``batch_rows`` (the display shows ``batch 3/20`` and an ETA)."""
    batches = max(-(-total_rows // max(batch_rows, 1)), 1)

    def done(rows: int) -> None:
        emit("epoch", stage=name, epoch=min(-(-rows // max(batch_rows, 1)), batches), epochs=batches, unit="batch")

    return done


PROGRESS_EVERY_S = 2.0  # a fit's progress artifact: made and updated at most this often (seconds)


def epoch_progress(name: str):
    """A Keras callback that logs each epoch (of the ``epochs`` its fit was given) and, inside a task run, keeps a
    progress artifact up to date for a fit that trains longer than `PROGRESS_EVERY_S`.

    The artifact is made at the first epoch that ends `PROGRESS_EVERY_S` after the fit began and updated at most
    that often, then set to 100 % at the end: each update is a request the fit waits for and work for the Prefect
    server (updated at every epoch, the 308 epochs of a small iris run took the server 2.5 of its 3.8 CPU-s), while
    a fit of a second or two has nothing to show in progress that its task's state does not.
    """
    import time

    import keras
    from prefect.context import TaskRunContext

    log = stage_logger()
    in_task = TaskRunContext.get() is not None

    class EpochLog(keras.callbacks.Callback):
        artifact_id, epochs, sent = None, 0, 0.0

        def on_train_begin(self, logs=None) -> None:
            self.epochs = int(self.params.get("epochs") or 0)
            self.sent = time.monotonic()
            emit("epoch", stage=name, epoch=0, epochs=self.epochs)

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            shown = " ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()) if k != "learning_rate")
            log.info("%s epoch %d/%d %s", name, epoch + 1, self.epochs, shown)
            emit("epoch", stage=name, epoch=epoch + 1, epochs=self.epochs)
            if in_task and time.monotonic() - self.sent >= PROGRESS_EVERY_S:
                self._publish(100.0 * (epoch + 1) / max(self.epochs, 1))

        def on_train_end(self, logs=None) -> None:
            if self.artifact_id is not None:
                self._publish(100.0)

        def _publish(self, percent: float) -> None:
            from prefect.artifacts import create_progress_artifact, update_progress_artifact

            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(progress=percent, description=f"{name}: epochs done (%)")
            else:
                update_progress_artifact(self.artifact_id, progress=percent)
            self.sent = time.monotonic()

    return EpochLog()


def ui_url() -> str | None:
    """The dashboard's base URL for the Prefect API this process reports to (None: no API set)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().ui_url
    return str(url).rstrip("/") if url else None


def flow_run_link(flow_run_id: str) -> str:
    """A dashboard link to a flow run (its id alone when no dashboard is known)."""
    base = ui_url()
    return f"{base}/runs/flow-run/{flow_run_id}" if base and flow_run_id else flow_run_id


def publish_table(table: list[dict[str, Any]], key: str, description: str) -> None:
    """One Prefect table artifact (inside a run)."""
    if not in_prefect_run():
        return
    from prefect.artifacts import create_table_artifact

    create_table_artifact(table=table, key=key, description=description)


def current_flow_run() -> tuple[str, str]:
    """(id, name) of the flow run this code runs in; ("", "") outside one."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return "", ""
    return str(ctx.flow_run.id), ctx.flow_run.name


def add_tags(*tags: str) -> None:
    """Put ``tags`` first among the current flow run's tags (shown and filterable in the dashboard, which shows
    the first few), in the order given."""
    from prefect.client.orchestration import get_client

    flow_run_id, _ = current_flow_run()
    if not flow_run_id:
        return
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        client.update_flow_run(flow_run_id, tags=list(dict.fromkeys([*tags, *run.tags])))


def publish_markdown(markdown: str, key: str, description: str) -> None:
    """One Prefect markdown artifact (inside a run)."""
    if not in_prefect_run():
        return
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=markdown, key=key, description=description)


RUNS_DIR = "runs"


def _mark_crashed(flow_run_id: str, message: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
            if run.state is None or run.state.is_final():
                return False
            client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
            return True
    except Exception:  # the run may be on another server, or gone: nothing to mark
        return False


@contextlib.contextmanager
def tracked_run(root: str):
    """Inside a flow run: first mark as Crashed the flow runs whose process died (recorded under
    ``<root>/runs``), then record this run there until it ends. Yields what it marked."""
    import json
    import os
    import socket
    from pathlib import Path

    from prefect.context import FlowRunContext

    runs = Path(root) / RUNS_DIR
    marked: list[str] = []
    for record in sorted(runs.glob("*.json")) if runs.is_dir() else []:
        try:
            info = json.loads(record.read_text())
            host, pid, run_id = str(info["host"]), int(info["pid"]), str(info["flow_run_id"])
        except (OSError, ValueError, KeyError, TypeError):
            record.unlink(missing_ok=True)
            continue
        if not process_alive(host, pid):
            if _mark_crashed(run_id, f"its process ({host} pid {pid}) was killed before the run ended"):
                marked.append(run_id)
            record.unlink(missing_ok=True)
    ctx = FlowRunContext.get()
    own = None
    if ctx is not None and ctx.flow_run is not None:
        runs.mkdir(parents=True, exist_ok=True)
        own = runs / f"{ctx.flow_run.id}.json"
        own.write_text(json.dumps({"flow_run_id": str(ctx.flow_run.id), "host": socket.gethostname(),
                                   "pid": os.getpid()}))
    try:
        yield marked
    finally:
        if own is not None:
            own.unlink(missing_ok=True)

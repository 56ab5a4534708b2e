"""Logging that goes to the Prefect run log inside a run, and to the ``marginflow`` logger outside."""

from __future__ import annotations

import logging


def stage_logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect.context import FlowRunContext, TaskRunContext

    if TaskRunContext.get() or FlowRunContext.get():
        from prefect import get_run_logger

        return get_run_logger()
    return logging.getLogger("marginflow")

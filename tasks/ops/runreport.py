"""A run's report: the ``evaluate`` artifact's report with the run's own facts on top.

The ``report`` artifact is content-addressed and cached, so it cannot say which run, date or
model version it belongs to. Every pipeline run that evaluates writes its own copy under
``<root>/reports/<run name>-<first 8 of the flow run id>/``: ``report.md`` (charts as PNG
files beside it), ``report.html`` (self-contained) and ``run.json``. The folder is built
beside its final name and renamed into place, so it appears whole or not at all.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tasks.config_text import shown
from tasks.core.report import inline_images, render_header, render_html, render_report
from tasks.store.artifacts import ArtifactRef, read_json
from tasks.store.kinds import CHARTS, METRICS, REPORT_HTML, REPORT_MD, RUN

REPORTS_DIR = "reports"


class RunInfo(BaseModel):
    """What a run knows about itself once its model is registered."""

    flow_run_id: str = ""
    flow_run_name: str = ""
    version: str | None = None  # the registered model version (None: this run registers none)
    new_version: bool = False
    changes: dict[str, Any] = {}  # config keys that differ from the defaults
    engine: str = "threads"
    date: str = ""  # ISO date and time (UTC) the report was written; set by `write_run_report`
    wall_seconds: float | None = None  # the run's whole time until its report, cached stages included


class RunReport(BaseModel):
    dir: str
    markdown: str  # report.md's text (images referenced by file name)
    dashboard_markdown: str  # the same with the images inline (the dashboard cannot read the folder)
    table: list[dict[str, Any]]  # one row per approach, for the dashboard's table artifact


def report_dir(root: str | Path, info: RunInfo) -> Path:
    """Where the report of the run ``info`` describes goes (known before it is written)."""
    return Path(root) / REPORTS_DIR / f"{info.flow_run_name or 'run'}-{info.flow_run_id[:8] or 'local'}"


def header_rows(info: RunInfo) -> list[tuple[str, str]]:
    if info.version is None:
        version = "none registered (a partial run)"
    else:
        version = f"{info.version} ({'registered by this run' if info.new_version else 'already registered'})"
    wall = [] if info.wall_seconds is None else [("wall time", f"{info.wall_seconds:.1f} s (cached stages included)")]
    return [("model version", version), ("date", info.date), ("flow run", f"{info.flow_run_name} ({info.flow_run_id})"),
            ("engine", info.engine), *wall, ("config changes from defaults", shown(info.changes))]


def approaches_table(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's table of the approaches: ranked (when the report ranks them), with their 95 % intervals."""
    approaches = metrics["approaches"]
    ranked = metrics.get("ranking") or [{"approach": n} for n in approaches]
    rows = []
    for r in ranked:
        a = approaches[r["approach"]]
        rows.append({"rank": r.get("rank"), "approach": r["approach"], "accuracy": round(a["accuracy"], 4),
                     "95 % interval": f"{r['low']:.4f} - {r['high']:.4f}" if "low" in r else "",
                     "within noise of the best": ("best" if r.get("rank") == 1 else "yes" if r.get("within_noise")
                                                  else "no") if "within_noise" in r else "",
                     "macro_f1": round(a["macro_f1"], 4), "fit_seconds": a["fit_seconds"],
                     "with inputs s": round(a["fit_seconds"] + a.get("inputs_seconds", 0.0), 2),
                     "predict_seconds": a["predict_seconds"], "objective": a["objective"]})
    return rows


def write_run_report(root: str | Path, report: ArtifactRef, info: RunInfo, digits: int) -> RunReport:
    """Write the run's report folder (see the module docstring) from the ``report`` artifact."""
    info = info.model_copy(update={"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")})
    metrics = read_json(report, METRICS)
    charts = [tuple(c) for c in read_json(report, CHARTS)] if CHARTS in report.files else []
    markdown = render_report(metrics, digits, charts, render_header(header_rows(info)))
    final = report_dir(root, info)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        images = {name: report.file(name).read_bytes() for _, name in charts}
        for name, data in images.items():
            (tmp / name).write_bytes(data)
        (tmp / REPORT_MD).write_text(markdown)
        (tmp / REPORT_HTML).write_text(render_html(markdown, images))
        (tmp / RUN).write_text(json.dumps({**info.model_dump(), "report_artifact": report.path}, indent=2))
        if final.exists():  # the same run writing again (a retried task): replace its report
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RunReport(dir=str(final), markdown=markdown, dashboard_markdown=inline_images(markdown, images),
                     table=approaches_table(metrics))

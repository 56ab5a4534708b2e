"""The runs of a data root as one table: what ``marginflow runs`` prints and the dashboard's runs table shows.

Every pipeline run that evaluates leaves ``<root>/reports/<run>/run.json`` (`tasks.ops.runreport`): its
name, date, config changes from the defaults, wall time, model version and the ``report`` artifact whose
``metrics.json`` holds every approach's test accuracy. A run is one row, newest first; a folder whose files
are missing or damaged is listed as such, never a reason to fail.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tasks.catalog import NAMES
from tasks.ops.registry import json_object
from tasks.ops.runreport import REPORTS_DIR
from tasks.store.kinds import METRICS, RUN


def root_key(root: str | Path) -> str:
    """A dashboard artifact key's suffix naming one data root: the first 8 hex digits of its path's SHA-256."""
    return hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:8]


def read_run(root: str | Path, folder: str | Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """A run's report folder: (its ``run.json``, the ``metrics.json`` of the report artifact it names, that
    file's path); {} for what is missing or unreadable. The artifact's path is relative to the data root."""
    info = json_object(Path(folder) / RUN)
    metrics_file = Path(root) / str(info.get("report_artifact") or "-") / METRICS
    return info, json_object(metrics_file) if info.get("report_artifact") else {}, metrics_file


def accuracies(metrics: dict[str, Any]) -> dict[str, float]:
    """approach -> test accuracy, from a ``metrics.json`` ({} when it holds none)."""
    approaches = metrics.get("approaches") if isinstance(metrics.get("approaches"), dict) else {}
    return {n: a["accuracy"] for n, a in approaches.items() if isinstance(a, dict) and "accuracy" in a}


def list_runs(root: str | Path) -> list[dict[str, Any]]:
    """One dict per evaluated run of ``root``, newest first: ``run``, ``flow_run_id``, ``date``, ``dataset``,
    ``changes`` (config keys that differ from the defaults), ``accuracy`` (approach -> test accuracy),
    ``main`` (the bundled approach's), ``wall_seconds`` (None for runs recorded before it was), ``version``,
    ``new_version``, ``report`` (the folder), ``problem`` (why a row is incomplete, else None)."""
    folder = Path(root) / REPORTS_DIR
    rows = []
    for path in sorted(folder.glob("*/run.json")) if folder.is_dir() else []:
        info, metrics, metrics_file = read_run(root, path.parent)
        problem = None if info and metrics else (f"{path}: unreadable" if not info else
                                                 f"{metrics_file}: missing or unreadable (its metrics are not shown)")
        rows.append({
            "run": str(info.get("flow_run_name") or path.parent.name), "flow_run_id": str(info.get("flow_run_id") or ""),
            "date": str(info.get("date") or ""), "dataset": str(metrics.get("source") or ""),
            "changes": info.get("changes") if isinstance(info.get("changes"), dict) else {},
            "accuracy": accuracies(metrics),
            "main": metrics.get("main"), "wall_seconds": info.get("wall_seconds"),
            "version": info.get("version"), "new_version": bool(info.get("new_version")),
            "report": str(path.parent), "problem": problem,
        })
    return sort_runs(rows, "date")


def _written(row: dict[str, Any]) -> int:
    """When a run's run.json was written (ns): orders runs whose dates fall in the same second."""
    try:
        return (Path(row["report"]) / RUN).stat().st_mtime_ns
    except OSError:
        return 0


def approach_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The approaches any of ``rows`` scored, in catalog order."""
    seen = {n for r in rows for n in r["accuracy"]}
    return [n for n in NAMES if n in seen]


def runs_table(rows: list[dict[str, Any]], link=lambda flow_run_id: flow_run_id) -> list[dict[str, Any]]:
    """``rows`` as the dashboard's table: one column per approach's test accuracy."""
    from tasks.config_text import shown

    names = approach_columns(rows)
    return [{"run": r["run"], "date": r["date"], "dataset": r["dataset"], "config changes": shown(r["changes"]),
             **{n: None if r["accuracy"].get(n) is None else round(float(r["accuracy"][n]), 4) for n in names},
             "wall s": None if r["wall_seconds"] is None else round(float(r["wall_seconds"]), 1),
             "version": (r["version"] or "") + (" (new)" if r["new_version"] else ""),
             "run link": link(r["flow_run_id"]) if r["flow_run_id"] else ""} for r in rows]


SORT_KEYS = ("date", "wall", *NAMES)


def sort_runs(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """``rows`` sorted by ``key``: ``date`` (newest first), ``wall`` (fastest first) or an approach's test
    accuracy (best first); rows without the value last."""
    if key == "date":
        return sorted(rows, key=lambda r: (r["date"], _written(r)), reverse=True)
    if key == "wall":
        return sorted(rows, key=lambda r: (r["wall_seconds"] is None, r["wall_seconds"] or 0.0))
    return sorted(rows, key=lambda r: (r["accuracy"].get(key) is None, -(r["accuracy"].get(key) or 0.0)))


def _beyond(changes: dict[str, Any], shared: dict[str, Any]) -> str:
    """``changes`` less the ``shared`` ones, on one line; ``-`` when nothing is left of a run with shared changes."""
    from tasks.config_text import shown

    rest = {k: v for k, v in changes.items() if k not in shared}
    return shown(rest) if rest or not shared else "-"


def shared_changes(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The config changes from the defaults that every one of ``rows`` has, with the same value."""
    first = rows[0]["changes"] if rows else {}
    return {k: v for k, v in first.items() if all(k in r["changes"] and r["changes"][k] == v for r in rows)}


def render_runs(rows: list[dict[str, Any]]) -> str:
    """The runs as aligned text columns: date, run, dataset, each approach's test accuracy (* the bundled one),
    wall seconds, version, config changes (last: the widest)."""
    from tasks.config_text import shown
    from tasks.errors import printable

    names = approach_columns(rows)
    shared = shared_changes(rows) if len(rows) > 1 else {}
    head = ["date (UTC)", "run", "dataset", *names, "wall s", "version",
            "config changes from defaults" + (" (beyond those every run has)" if shared else "")]
    body = []
    for r in rows:
        accuracy = [("-" if r["accuracy"].get(n) is None else f"{float(r['accuracy'][n]):.4f}")
                    + ("*" if n == r["main"] else " ") for n in names]
        body.append([r["date"].removesuffix(" UTC"), printable(r["run"])[:28], printable(r["dataset"])[-16:], *accuracy,
                     "-" if r["wall_seconds"] is None else f"{float(r['wall_seconds']):.1f}",
                     (r["version"] or "-") + (" new" if r["new_version"] else ""),
                     printable(_beyond(r["changes"], shared))])
    width = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head) - 1)]
    right = set(range(3, 3 + len(names) + 1))  # numbers right-aligned
    lines = [f"every run: {printable(shown(shared))}"] if shared else []
    for cells in [head, *body]:
        lines.append("  ".join(f"{c:>{w}}" if i in right else f"{c:<{w}}" for i, (c, w) in enumerate(
            zip(cells[:-1], width, strict=True))) + "  " + cells[-1])
    lines.append("test accuracy per approach (* the bundled one); wall s: the run's whole time, cached stages "
                 "included; version: the model it registered (new) or found registered")
    return "\n".join(lines)

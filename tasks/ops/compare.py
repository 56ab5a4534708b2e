"""Two registered model versions side by side: test metrics, the config that made each model
(its bundle's ``config.json``) and the run that registered it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.config import flatten
from tasks.ops.registry import Version, json_object

METRICS = ("accuracy", "macro_f1", "n_test", "source")


def compare_versions(a: Version, b: Version, everything: bool = False) -> dict[str, Any]:
    """``{"versions", "metrics", "config", "same_keys", "runs"}``: ``metrics`` and ``config`` map
    a key to ``[value in a, value in b]``; ``config`` holds only differing keys unless ``everything``."""
    ca, cb = (flatten(json_object(Path(v.path) / "config.json")) for v in (a, b))
    keys = sorted(set(ca) | set(cb))
    missing = "(absent)"
    config = {k: [ca.get(k, missing), cb.get(k, missing)] for k in keys
              if everything or ca.get(k, missing) != cb.get(k, missing)}
    same = sum(ca.get(k, missing) == cb.get(k, missing) for k in keys)
    return {
        "versions": [a.version, b.version],
        "champion": [a.champion, b.champion],
        "metrics": {m: [a.metrics.get(m), b.metrics.get(m)] for m in METRICS},
        "config": config,
        "same_keys": same,
        "runs": [a.run, b.run],
    }


def _cell(value: Any, digits: bool = False) -> str:
    if digits and isinstance(value, float):
        return f"{value:.4f}"
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def render_comparison(c: dict[str, Any]) -> str:
    """The comparison as aligned text columns for the terminal."""
    a, b = c["versions"]
    names = [f"{v}{' (champion)' if champ else ''}" for v, champ in zip(c["versions"], c["champion"], strict=True)]
    rows: list[tuple[str, str, str]] = [("", *names)]
    rows += [(m, _cell(va, digits=True), _cell(vb, digits=True)) for m, (va, vb) in c["metrics"].items()]
    rows.append(("flow run", *(str(r.get("flow_run_name") or "-") for r in c["runs"])))
    rows.append(("", "", ""))
    if c["config"]:
        rows += [(k, _cell(va), _cell(vb)) for k, (va, vb) in c["config"].items()]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]}".rstrip() for r in rows]
    differ = sum(va != vb for va, vb in c["config"].values())
    lines.append(f"config: {differ} key(s) differ, {c['same_keys']} the same"
                 + ("" if differ or not c["config"] else " (shown with --all)"))
    if not differ and a != b:
        lines.append("the two models were made with the same config (different data or code)")
    return "\n".join(lines)

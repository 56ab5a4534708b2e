"""Two registered model versions side by side: test metrics, the config that made each model
(its bundle's ``config.json``) and the run that registered it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.catalog import NAMES
from tasks.config_text import flatten
from tasks.ops.bundle import MANIFEST, MODEL_FILES
from tasks.ops.registry import Version, json_object
from tasks.ops.runs import accuracies, read_run
from tasks.store.kinds import CONFIG

METRICS = ("accuracy", "macro_f1", "n_test", "source")


def run_accuracies(v: Version) -> dict[str, float]:
    """Every approach's test accuracy in the run that registered ``v`` (from its report), {} when not recorded."""
    report = v.run.get("report")
    return accuracies(read_run(Path(v.path).parent.parent, report)[1]) if report else {}


def compare_versions(a: Version, b: Version, everything: bool = False) -> dict[str, Any]:
    """``{"versions", "metrics", "config", "same_keys", "runs"}``: ``metrics`` and ``config`` map
    a key to ``[value in a, value in b]``; ``config`` holds only differing keys unless ``everything``."""
    ca, cb = (flatten(json_object(Path(v.path) / CONFIG)) for v in (a, b))
    keys = sorted(set(ca) | set(cb))
    missing = "(absent)"
    config = {k: [ca.get(k, missing), cb.get(k, missing)] for k in keys
              if everything or ca.get(k, missing) != cb.get(k, missing)}
    same = sum(ca.get(k, missing) == cb.get(k, missing) for k in keys)
    ma, mb = (json_object(Path(v.path) / MANIFEST) for v in (a, b))
    acc_a, acc_b = (run_accuracies(v) for v in (a, b))
    fa, fb = (m.get("files") if isinstance(m.get("files"), dict) else {} for m in (ma, mb))
    made = [m.get("made_from") if isinstance(m.get("made_from"), dict) else {} for m in (ma, mb)]
    return {
        "versions": [a.version, b.version],
        "champion": [a.champion, b.champion],
        "metrics": {m: [a.metrics.get(m), b.metrics.get(m)] for m in METRICS},
        "config": config,
        "same_keys": same,
        "runs": [a.run, b.run],
        # what made each model: the source data's digest and the code's (None: not recorded, an older bundle)
        "made_from": {k: [made[0].get(f"{k}_sha256"), made[1].get(f"{k}_sha256")] for k in ("data", "code")},
        "model_files_differ": [n for n in MODEL_FILES if fa.get(n) != fb.get(n)],
        # every approach's test accuracy in the run that registered each version (None: not recorded)
        "approaches": {n: [acc_a.get(n), acc_b.get(n)] for n in NAMES if n in acc_a or n in acc_b},
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
    if c.get("approaches"):
        rows.append(("", "", ""))
        rows += [(f"{n} (run)", _cell(va, digits=True) if va is not None else "-",
                  _cell(vb, digits=True) if vb is not None else "-") for n, (va, vb) in c["approaches"].items()]
    rows.append(("", "", ""))
    if c["config"]:
        rows += [(k, _cell(va), _cell(vb)) for k, (va, vb) in c["config"].items()]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]}".rstrip() for r in rows]
    differ = sum(va != vb for va, vb in c["config"].values())
    lines.append(f"config: {differ} key(s) differ, {c['same_keys']} the same"
                 + ("" if differ or not c["config"] else " (shown with --all)"))
    lines += differences(c)
    return "\n".join(lines)


def differences(c: dict[str, Any]) -> list[str]:
    """What differs between the two versions' making, in words: data, code, model files (config: above)."""
    a, b = c["versions"]
    if a == b:
        return ["the same version"]
    out = []
    for what, (da, db) in c.get("made_from", {}).items():
        if da is None or db is None:
            out.append(f"{what}: not recorded for {a if da is None else b} (registered before it was)")
        else:
            out.append(f"{what}: {'the same' if da == db else 'differs'} ({da[:12]}" + ("" if da == db else f" vs {db[:12]}")
                       + ")")
    files = c.get("model_files_differ", [])
    out.append(f"model files that differ: {', '.join(files)}" if files else "model files: identical")
    return out

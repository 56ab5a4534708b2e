"""Accuracy benchmark: the five approaches on digits, breast_cancer and mnist1d, one table.

Each dataset runs through the real pipeline flow with the default config plus
``svc.search = true`` (C and gamma of both SVCs chosen by 5-fold CV on the training
rows). Splits: digits and breast_cancer stratified 75/25 with seed 0 (validation rows
for early stopping are carved out of the 75 %); mnist1d its official 4000/1000 split.
Test accuracy is measured once, on the test rows, after everything is chosen.

The published mnist1d column is Greydanus (2020), "Scaling down deep learning",
Table 1: logistic regression 32 %, MLP 68 %, GRU 91 %, CNN 94 %.

Run: ``make bench`` or ``.venv/bin/python benchmarks/accuracy.py [--datasets digits,mnist1d]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from tasks.catalog import NAMES as APPROACHES

DATASETS = ("digits", "breast_cancer", "mnist1d")
PUBLISHED_MNIST1D = "logistic 32 / MLP 68 / GRU 91 / CNN 94"
TARGETS = {"digits": 0.99, "mnist1d": 0.985}  # features_svc


def run_dataset(name: str, root: Path, extra: list[str]) -> tuple[dict, float]:
    from flows.pipeline import pipeline
    from tasks.config import load_config

    config = load_config(None, ["svc.search=true", *extra], {"data.dataset": name})
    start = time.perf_counter()
    result = pipeline(config=config, data_dir=str(root / name))
    seconds = time.perf_counter() - start
    metrics = json.loads((Path(result.stages["evaluate"].artifact) / "metrics.json").read_text())
    return metrics, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated, from " + ", ".join(DATASETS))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="extra config overrides for every dataset")
    args = parser.parse_args()
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r} (one of {', '.join(DATASETS)})")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    root = Path(tempfile.mkdtemp(prefix="marginflow-accuracy-"))

    rows = []
    for name in names:
        metrics, seconds = run_dataset(name, root, args.set)
        rows.append((name, metrics, seconds))
        print(f"{name}: done in {seconds:.0f} s", flush=True)

    width = 14
    print(f"\nmarginflow test accuracy (%), {os.cpu_count()} cores, Python {platform.python_version()}")
    header = f"{'dataset':<15}{'test rows':>10}" + "".join(f"{a:>{width}}" for a in APPROACHES)
    print(header + f"{'run s':>8}  published (mnist1d, Greydanus 2020)")
    for name, metrics, seconds in rows:
        cells = "".join(f"{100 * metrics['approaches'][a]['accuracy']:>{width}.2f}" for a in APPROACHES)
        published = PUBLISHED_MNIST1D if name == "mnist1d" else ""
        print(f"{name:<15}{metrics['n_test']:>10}{cells}{seconds:>8.0f}  {published}")
    print("\nfeatures_svc targets: " + ", ".join(
        f"{n} {100 * t:.1f} % ({'met' if m['approaches']['features_svc']['accuracy'] >= t else 'not met'}: "
        f"{100 * m['approaches']['features_svc']['accuracy']:.2f})"
        for n, m, _ in rows for t in [TARGETS.get(n)] if t is not None))
    print("chosen by CV: " + "; ".join(
        f"{n} {a} C={m['approaches'][a]['search']['C']:g} gamma x{m['approaches'][a]['search']['gamma_factor']:g}"
        for n, m, _ in rows for a in ("raw_svc", "features_svc") if m["approaches"][a].get("search")))


if __name__ == "__main__":
    main()

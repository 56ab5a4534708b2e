"""Scale benchmark: the pipeline from 10 thousand to a million rows of 28 x 28 images, and exact vs approx SVM.

Data: `imagegen` (documented there): generated handwritten-digit images with random shifts,
contrast and noise, 784 float32 columns, test rows drawn from other source digits than train.

Part ``runs``: ``marginflow run`` in a new process per size, on a new data root, default
settings (10k: every approach; 100k and 1M: the main path, ``evaluate.approaches =
['features_svc']``; raw_svc at 10k shows the exact kernel on raw rows). Per stage: seconds
(the stage's own, from the run's JSON). Per run: wall seconds of the whole command (including
its temporary Prefect server), peak RSS (``ru_maxrss`` of the command's process, by
``os.wait4``: the largest of it and the processes it waited for), rows/s, test accuracy,
the SVC's solver. Targets: RSS(1M) <= 1.3 x RSS(100k) and <= 3 GB; 1M end to end <= 20 min;
time(1M) / time(100k) <= 12; 10k with every approach <= 2 min.

Part ``solvers``: ``exact`` (SVC) against ``approx`` (`tasks.core.svm.fit_approx`, default
settings) on 5k, 10k and 20k training rows of the scaled pixels (what raw_svc sees) and of the
features of a trained encoder (what features_svc sees: the encoder of the 100k run when part
``runs`` made one, else a 2-D CNN trained here on 20k rows for ``--encoder-steps`` steps),
same 5,000 test rows: accuracy difference and fit and predict speed ratios. Target at 20k:
approx within 1 point, >= 10 x faster to fit and to predict.

Run: ``make bench-scale`` or ``.venv/bin/python benchmarks/scale.py [--sizes 10000 100000 1000000]
[--part runs|solvers|all] [--work DIR]``. The files (3.1 GB per million rows) go under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import imagegen  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MAIN_STAGES = ("ingest", "scale", "train_encoder.candidates", "train_encoder", "extract_features", "train_svc",
               "evaluate", "bundle")


def _data(work: Path, n: int) -> Path:
    path = work / f"images-{n}.parquet"
    if not path.exists():
        start = time.perf_counter()
        imagegen.write(path.with_suffix(".tmp"), n)
        path.with_suffix(".tmp").rename(path)
        print(f"generated {n} rows in {time.perf_counter() - start:.0f} s: {path}", file=sys.stderr)
    return path


def run_size(work: Path, n: int, every: bool) -> dict:
    """One ``marginflow run`` on ``n`` rows in a new process; its stages, wall time, peak RSS and result."""
    path = _data(work, n)
    data_dir = work / f"data-{n}"
    if data_dir.exists():
        import shutil

        shutil.rmtree(data_dir)
    argv = [str(ROOT / ".venv/bin/marginflow"), "run", "--input", str(path), "--label", "label",
            "--split-column", "split", "--data-dir", str(data_dir), "--json"]
    if not every:
        argv += ["--set", "evaluate.approaches=['features_svc']"]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(work / f"run-{n}.log", "w"), cwd=ROOT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"run on {n} rows failed (exit {status}); see {work / f'run-{n}.log'}")
    result = json.loads(out)
    metrics = result["metrics"]
    solver = (metrics["approaches"]["features_svc"].get("solver") or {}).get("solver")
    return {"rows": n, "wall_s": wall, "rss_mb": usage.ru_maxrss / 1024, "rows_per_s": n / wall,
            "accuracy": metrics["accuracy"], "solver": solver, "encoder": (metrics.get("encoder") or {}).get("kind"),
            "stages": {k: v["seconds"] for k, v in result["stages"].items()},
            "approaches": {k: round(a["accuracy"], 4) for k, a in metrics["approaches"].items()},
            "skipped": sorted(metrics.get("skipped") or {}), "data_dir": str(data_dir)}


def _stage_table(runs: list[dict]) -> list[str]:
    names = [s for s in MAIN_STAGES if any(s in r["stages"] for r in runs)]
    others = sorted({s for r in runs for s in r["stages"]} - set(names))
    lines = ["| stage | " + " | ".join(f"{r['rows']:,} rows" for r in runs) + " |",
             "|:---|" + "---:|" * len(runs)]
    for s in [*names, *others]:
        lines.append(f"| {s} | " + " | ".join(f"{r['stages'][s]:.1f}" if s in r["stages"] else "" for r in runs) + " |")
    lines += ["| **end to end (wall, incl. Prefect start)** | " + " | ".join(f"**{r['wall_s']:.0f}**" for r in runs) + " |",
              "| peak RSS (MB) | " + " | ".join(f"{r['rss_mb']:.0f}" for r in runs) + " |",
              "| rows/s | " + " | ".join(f"{r['rows_per_s']:.0f}" for r in runs) + " |",
              "| test accuracy (features_svc) | " + " | ".join(f"{r['accuracy']:.4f}" for r in runs) + " |",
              "| encoder kept | " + " | ".join(str(r["encoder"]) for r in runs) + " |",
              "| SVC solver | " + " | ".join(str(r["solver"]) for r in runs) + " |"]
    return lines


def _matrices(work: Path, n_train: int, n_test: int = 5000, seed: int = 1):
    """Scaled pixel rows: ``n_train`` training rows and ``n_test`` test rows from the test source digits."""
    X, y, split = imagegen.rows(int((n_train + n_test) * 1.4), seed)
    train, test = np.flatnonzero(split == "train")[:n_train], np.flatnonzero(split == "test")[:n_test]
    mean, std = X[train].mean(0), X[train].std(0)
    std[std == 0] = 1.0
    Z = (X - mean) / std
    return Z[train].astype(np.float64), y[train], Z[test].astype(np.float64), y[test]


def _encoder(work: Path, runs: list[dict], steps: int):
    """A trained feature model: the 100k run's encoder, or a CNN trained here."""
    from tasks.core.networks import load_feature_model

    for r in runs:
        if r["rows"] >= 100_000:
            found = sorted(Path(r["data_dir"], "artifacts", "encoder").glob("*/encoder.keras"))
            if found:
                return load_feature_model(found[0]), f"the encoder of the {r['rows']:,}-row run ({r['encoder']})"
    from tasks.config import EncoderConfig
    from tasks.core.layout import Layout
    from tasks.core.networks import cut_at_features, train

    X, y, Xv, yv = _matrices(work, 20_000, 2000, seed=7)
    config = EncoderConfig(kind="cnn2d", filters=[32, 64], kernel_size=3, hidden=[256, 128], dropout=0.3,
                           max_steps=steps, batch_size=64)
    model, _ = train(X, y, Xv, yv, 10, config, Layout("image", [28, 28, 1], "benchmark"))
    return cut_at_features(model), f"a 2-D CNN (32, 64) trained here for at most {steps} steps on 20,000 other rows"


def solvers(work: Path, runs: list[dict], steps: int) -> list[str]:
    from tasks.config import SVCConfig
    from tasks.core.networks import embed
    from tasks.core.svm import fit_any

    feature_model, where = _encoder(work, runs, steps)
    lines = [f"Features: {where}.", "",
             "| input | training rows | exact acc | approx acc | approx - exact (points) | exact fit s | approx fit s "
             "| fit speed-up | exact predict s | approx predict s | predict speed-up |",
             "|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    config = SVCConfig()
    for n in (5_000, 10_000, 20_000):
        X, y, Xt, yt = _matrices(work, n)
        for name, (A, At) in {"scaled pixels (raw_svc)": (X, Xt),
                              "encoder features (features_svc)": (embed(feature_model, X, 1024).astype(np.float64),
                                                                  embed(feature_model, Xt, 1024).astype(np.float64))}.items():
            row = {}
            for solver in ("exact", "approx"):
                start = time.perf_counter()
                model = fit_any(A, y, config, solver, 10, 20_000)
                fit = time.perf_counter() - start
                start = time.perf_counter()
                acc = float(np.mean(model.predict(At) == yt))
                row[solver] = (acc, fit, time.perf_counter() - start)
            (ea, ef, ep), (aa, af, ap) = row["exact"], row["approx"]
            lines.append(f"| {name} | {n:,} | {ea:.4f} | {aa:.4f} | {100 * (aa - ea):+.2f} | {ef:.1f} | {af:.1f} | "
                         f"{ef / af:.1f} x | {ep:.2f} | {ap:.2f} | {ep / ap:.1f} x |")
            print(lines[-1], file=sys.stderr)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--part", choices=["runs", "solvers", "all"], default="all")
    p.add_argument("--work", default="/tmp/marginflow-scale")
    p.add_argument("--encoder-steps", type=int, default=2000)
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"# marginflow scale benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}\n")
    runs = []
    if args.part in ("runs", "all"):
        for n in args.sizes:
            runs.append(run_size(work, n, every=n <= 10_000))
            print(f"{n} rows: {runs[-1]['wall_s']:.0f} s, {runs[-1]['rss_mb']:.0f} MB", file=sys.stderr)
        print("\n".join(_stage_table(runs)))
        for r in runs:
            print(f"\n{r['rows']:,} rows, every approach's test accuracy: {r['approaches']}"
                  + (f"; skipped: {', '.join(r['skipped'])}" if r["skipped"] else ""))
        big = {r["rows"]: r for r in runs}
        if 100_000 in big and 1_000_000 in big:
            a, b = big[100_000], big[1_000_000]
            print(f"\nRSS 1M / 100k = {b['rss_mb'] / a['rss_mb']:.2f} (target <= 1.3); "
                  f"time 1M / 100k = {b['wall_s'] / a['wall_s']:.1f} (target <= 12)")
    if args.part in ("solvers", "all"):
        print("\n## exact vs approx\n")
        print("\n".join(solvers(work, runs, args.encoder_steps)))


if __name__ == "__main__":
    main()

"""Predict benchmark: throughput and peak memory of ``marginflow predict`` as the input grows.

Trains a small model on iris (the pipeline with a tiny encoder, features_svc only) in a
temporary data root, writes Parquet inputs of increasing size (iris rows resampled with
noise), and runs ``marginflow predict`` on each in a new process, recording wall time and
the process's peak resident memory (``ru_maxrss``). With batched reading, peak memory
should stay flat while the input grows; the ratio column compares each run with the
smallest input at the same batch size.

Run: ``make bench`` or ``.venv/bin/python benchmarks/predict.py [--rows 100000,400000]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEASURE = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def _train(root: Path, smoke: bool = False) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_iris

    from flows.pipeline import pipeline
    from tasks.config_text import load_config

    bunch = load_iris()
    frame = pd.DataFrame(bunch.data, columns=[f"x{i}" for i in range(4)])
    frame["species"] = np.asarray(bunch.target_names)[bunch.target]
    frame.to_csv(root / "iris.csv", index=False)
    if smoke:
        import smoke as tiny_sizes

        sets = tiny_sizes.SET
    else:
        sets = ["encoder.hidden=[16]", "encoder.epochs=10"]
    config = load_config(None, [*sets, "evaluate.approaches=['features_svc']"],
                         {"data.input": str(root / "iris.csv"), "data.label": "species", "data.dataset": None})
    pipeline(config=config, data_dir=str(root / "data"))


def _input(root: Path, rows: int, fmt: str) -> Path:
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_iris

    rng = np.random.default_rng(0)
    X = load_iris().data[rng.integers(0, 150, rows)] + rng.normal(scale=0.05, size=(rows, 4))
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(4)])
    path = root / f"in_{rows}.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False, row_group_size=50_000)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1600000", help="input sizes, comma-separated")
    parser.add_argument("--batch-rows", default="10000,100000", help="batch sizes, comma-separated")
    parser.add_argument("--formats", default="parquet,csv", help="input formats, comma-separated")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: what the test suite runs "
                        "(benchmarks/smoke.py); its numbers mean nothing")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.batch_rows, args.formats = "2000", "1000", "csv"  # CSV: the reader's longer path
    sizes = [int(v) for v in args.rows.split(",")]
    batches = [int(v) for v in args.batch_rows.split(",")]
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    root = Path(tempfile.mkdtemp(prefix="marginflow-predict-"))
    _train(root, args.smoke)
    exe = str(Path(sys.executable).parent / "marginflow")

    results = []
    for fmt in args.formats.split(","):
        for rows in sizes:
            src = _input(root, rows, fmt)
            for batch in batches:
                cmd = [exe, "predict", "--input", str(src), "--output", str(root / "out.parquet"),
                       "--data-dir", str(root / "data"), "--batch-rows", str(batch)]
                start = time.perf_counter()
                out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, check=True)
                seconds = time.perf_counter() - start
                rc, rss_kib = (int(v) for v in out.stdout.split())
                if rc != 0:
                    raise SystemExit(f"marginflow predict failed with exit code {rc}")
                results.append((fmt, rows, batch, seconds, rss_kib / 1024))

    base = {(f, b): next(r for r in results if r[0] == f and r[2] == b) for f, _, b, _, _ in results}
    print(f"\nmarginflow predict, iris model, {os.cpu_count()} cores (includes ~3 s of process start and imports)")
    print(f"{'format':<9}{'input rows':>11}{'batch rows':>12}{'seconds':>9}{'rows/s':>10}{'peak MiB':>10}{'MiB ratio':>11}")
    for fmt, rows, batch, seconds, mib in results:
        ratio = mib / base[(fmt, batch)][4]
        print(f"{fmt:<9}{rows:>11}{batch:>12}{seconds:>9.1f}{rows / seconds:>10.0f}{mib:>10.0f}{ratio:>11.2f}")
    print("MiB ratio: peak memory over the smallest input's, same format and batch size")

if __name__ == "__main__":
    main()

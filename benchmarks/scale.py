"""Scale benchmark: the pipeline from 10 thousand to a million rows of 28 x 28 images, and exact vs approx SVM.

Data: `imagegen` (documented there): generated handwritten-digit images with random shifts,
contrast and noise, 784 float32 columns, test rows drawn from other source digits than train.

Part ``runs``: ``marginflow run`` in a new process per size, on a new data root, default
settings (10k: every approach; 100k and 1M: the main path, ``evaluate.approaches =
['features_svc']``; raw_svc at 10k shows the exact kernel on raw rows). Per stage: seconds
(the stage's own, from the run's JSON). Per run: wall seconds of the whole command (including
its temporary Prefect server), peak RSS (``ru_maxrss`` of the command's process, by
``os.wait4``: the largest of it and the processes it waited for), rows/s, test accuracy,
the SVC's solver. Targets: RSS(1M) <= 1.3 x RSS(100k) and <= 3 GB; 1M end to end <= 10 min;
time(1M) / time(100k) <= 12; 10k with every approach <= 2 min.

Part ``solvers``: ``exact`` (SVC) against ``approx`` (`tasks.core.svm.fit_approx`: the closed-form
Nystroem solver, default settings, lambda swept on 2,000 validation rows) on 5k, 10k, 20k and 50k
training rows (``--solver-sizes``) of the scaled pixels (what raw_svc sees) and of the features of a
trained encoder (what features_svc sees: the encoder of a run of 100k rows or more under ``--work``,
else a 2-D CNN trained here on 20k rows for ``--encoder-steps`` steps), same 5,000 test rows:
accuracy difference, fit and predict speed ratios, what ``auto`` picks, and two references at the
same M: the SGD solver it replaced and scikit-learn's ``Nystroem + LinearSVC``. Targets: within 1
point of exact at 20k and 50k pixels, >= 10 x faster to fit at 20k; auto never picks the solver
that is both slower and less accurate.

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


def run_size(work: Path, n: int, every: bool, extra: list[str] = ()) -> dict:
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
    for override in extra:
        argv += ["--set", override]
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


def _matrices(work: Path, n_train: int, n_test: int = 5000, seed: int = 1, n_val: int = 2000):
    """Scaled pixel rows: ``n_train`` training rows, ``n_val`` validation rows from the same source digits,
    and ``n_test`` test rows from the test source digits."""
    X, y, split = imagegen.rows(int((n_train + n_val + n_test) * 1.4), seed)
    train, test = np.flatnonzero(split == "train")[:n_train + n_val], np.flatnonzero(split == "test")[:n_test]
    train, val = train[:n_train], train[n_train:]
    mean, std = X[train].mean(0), X[train].std(0)
    std[std == 0] = 1.0
    Z = ((X - mean) / std).astype(np.float32)
    return Z[train], y[train], Z[val], y[val], Z[test], y[test]


def _encoder(work: Path, runs: list[dict], steps: int, rows: int):
    """A trained feature model: the 100k run's encoder, or a CNN trained here."""
    from tasks.core.networks import load_feature_model

    earlier = {int(d.name.split("-")[1]): d for d in work.glob("data-*") if d.name.split("-")[1].isdigit()}
    for n, data_dir in sorted({**earlier, **{r["rows"]: Path(r["data_dir"]) for r in runs}}.items(), reverse=True):
        found = sorted(data_dir.glob("artifacts/encoder/*/encoder.keras"))
        if n >= 100_000 and found:
            return load_feature_model(found[0]), f"the encoder of the {n:,}-row run"
    from tasks.config import EncoderConfig
    from tasks.core.layout import Layout
    from tasks.core.networks import cut_at_features, train

    X, y, Xv, yv, _, _ = _matrices(work, rows, 10, seed=7)
    config = EncoderConfig(kind="cnn2d", filters=[32, 64], kernel_size=3, hidden=[256, 128], dropout=0.3,
                           max_steps=steps, batch_size=64)
    model, _ = train(X, y, Xv, yv, 10, config, Layout("image", [28, 28, 1], "benchmark"))
    return cut_at_features(model), f"a 2-D CNN (32, 64) trained here for at most {steps} steps on {rows:,} other rows"


def _sgd_reference(X, y, m: int, gamma: float, C: float, seed: int = 0, epochs: int = 5, batch: int = 4096):
    """The approx solver before the closed form, as a reference: Nystroem(m) map, standardised, averaged SGD
    (hinge, alpha = 1 / (C n)) over ``epochs`` shuffled passes."""
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = np.sort(np.random.default_rng(seed).choice(len(X), m, replace=False))
    kmap = Nystroem(gamma=gamma, n_components=m, random_state=seed).fit(X[rows])
    scaler = StandardScaler()
    for at in range(0, len(X), batch):
        scaler.partial_fit(kmap.transform(X[at:at + batch]))
    svm = SGDClassifier(loss="hinge", alpha=1.0 / (C * len(X)), average=True, random_state=seed)
    classes = np.unique(y)
    for i in range(epochs):
        order = np.random.default_rng([seed, i]).permutation(len(X))
        for at in range(0, len(X), batch):
            rows = order[at:at + batch]
            svm.partial_fit(scaler.transform(kmap.transform(X[rows])), y[rows], classes=classes)
    return make_pipeline(kmap, scaler, svm)


def _sklearn_reference(X, y, m: int, gamma: float, C: float, seed: int = 0):
    """What scikit-learn users write: ``Nystroem(n_components=m) + LinearSVC`` (its benchmarks/bench_mnist.py)."""
    from sklearn.kernel_approximation import Nystroem
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    return make_pipeline(Nystroem(gamma=gamma, n_components=m, random_state=seed),
                         LinearSVC(C=C, random_state=seed)).fit(X, y)


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _accuracy(model, X, y) -> float:
    return float(np.mean(model.predict(X) == y))


def auto_decisions(work: Path, runs: list[dict], steps: int, sizes: list[int], encoder_rows: int) -> list[str]:
    """Part ``auto``: only what ``svc.solver = auto`` decides at each size and input, and its prediction of the
    exact fit's seconds (compare with part ``solvers``' exact fit column), with the probe's own cost."""
    from tasks.config import SVCConfig
    from tasks.core.networks import embed
    from tasks.core.svm import resolve_solver

    feature_model, where = _encoder(work, runs, steps, encoder_rows)
    lines = [f"Features: {where}.", "", "| input | rows | auto | predicted exact s | exponent (floor) | probe rows "
             "| probe s |", "|:---|---:|:---|---:|---:|---:|---:|"]
    config = SVCConfig()
    for n in sizes:
        X, y, Xv, yv, Xt, yt = _matrices(work, n)
        inputs = {"scaled pixels (raw_svc)": X, "encoder features (features_svc)": embed(feature_model, X, 1024)}
        for name, A in inputs.items():
            decision, took = _timed(resolve_solver, config, n, A.shape[1], (A.astype(np.float64), y))
            p = decision.get("probe_seconds") or {}
            lines.append(f"| {name} | {n:,} | {decision['solver']} | {decision.get('predicted_seconds', '')} | "
                         f"{p.get('exponent', '')} ({p.get('floor', '')}) | "
                         f"{p['fits'][-1]['rows'] if p else ''} | {took:.1f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def solvers(work: Path, runs: list[dict], steps: int, sizes: list[int], references: bool,
            encoder_rows: int) -> list[str]:
    """Exact against approx (and the references) at each size, on pixels and on encoder features."""
    from tasks.config import SVCConfig
    from tasks.core.margin import rbf_gamma
    from tasks.core.networks import embed
    from tasks.core.nystroem import components_for
    from tasks.core.svm import fit_approx, fit_svc, resolve_solver

    feature_model, where = _encoder(work, runs, steps, encoder_rows)
    lines = [f"Features: {where}. Exact: scikit-learn `SVC` (C = 10, gamma = scale). Approx: the closed-form "
             "Nystroem solver with default settings (M = 15 sqrt(n), lambda swept on 2,000 validation rows). "
             "SGD: the approx solver before it (Nystroem 2,000 + standardise + 5 passes of averaged SGD). "
             "sklearn: `Nystroem(M) + LinearSVC(C = 10)`. Fit seconds include the approx solver's sweep; accuracy "
             "on 5,000 test rows from digits the training rows never use. auto: what `svc.solver = auto` "
             "chooses (its exact-fit prediction).", "",
             "| input | rows | M | exact acc | approx acc | approx - exact | exact fit s | approx fit s | fit speed-up "
             "| predict speed-up | SGD acc | SGD fit s | sklearn acc | sklearn fit s | auto (predicted exact s) |",
             "|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|"]
    config = SVCConfig()
    for n in sizes:
        X, y, Xv, yv, Xt, yt = _matrices(work, n)
        inputs = {"scaled pixels (raw_svc)": (X, Xv, Xt)}
        if feature_model is not None:
            inputs["encoder features (features_svc)"] = tuple(embed(feature_model, A, 1024).astype(np.float32)
                                                             for A in (X, Xv, Xt))
        for name, (A, Av, At) in inputs.items():
            m = components_for(n)
            exact, ef = _timed(fit_svc, A.astype(np.float64), y, config)
            ea, ep = _timed(_accuracy, exact, At.astype(np.float64), yt)
            (approx, _), af = _timed(fit_approx, A, y, config, 10, (Av, yv))
            aa, ap = _timed(_accuracy, approx, At, yt)
            decision = resolve_solver(config, n, A.shape[1], (A.astype(np.float64), y))
            predicted = decision.get("predicted_seconds")
            auto = decision["solver"] + (f" ({predicted:.0f})" if predicted is not None else "")
            refs = ["", "", "", ""]
            if references:
                gamma = rbf_gamma(A, "scale")
                sgd, sf = _timed(_sgd_reference, A, y, min(2000, n), gamma, config.C)
                sk, kf = _timed(_sklearn_reference, A, y, m, gamma, config.C)
                refs = [f"{np.mean(sgd.predict(At) == yt):.4f}", f"{sf:.1f}", f"{np.mean(sk.predict(At) == yt):.4f}",
                        f"{kf:.1f}"]
            lines.append(f"| {name} | {n:,} | {approx.n_components} | {ea:.4f} | {aa:.4f} | {100 * (aa - ea):+.2f} | "
                         f"{ef:.1f} | {af:.1f} | {ef / af:.1f} x | {ep / ap:.1f} x | " + " | ".join(refs) + f" | {auto} |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--part", choices=["runs", "solvers", "auto", "all"], default="all")
    p.add_argument("--work", default="/tmp/marginflow-scale")
    p.add_argument("--encoder-steps", type=int, default=2000)
    p.add_argument("--encoder-rows", type=int, default=20_000,
                   help="rows the solvers part's CNN trains on when no run of 100k rows or more left an encoder")
    p.add_argument("--solver-sizes", type=int, nargs="+", default=[5_000, 10_000, 20_000, 50_000])
    p.add_argument("--no-references", action="store_true", help="leave out the SGD and sklearn reference columns")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: what the test suite runs "
                   "(benchmarks/smoke.py); its numbers mean nothing")
    args = p.parse_args()
    extra: list[str] = []
    if args.smoke:
        import smoke

        args.sizes, args.solver_sizes, args.encoder_steps, extra = [600], [300], 10, smoke.SET
        args.encoder_rows = 500
        if args.work == p.get_default("work"):
            import tempfile

            args.work = tempfile.mkdtemp(prefix="marginflow-scale-smoke-")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"# marginflow scale benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}\n")
    runs = []
    if args.part in ("runs", "all"):
        for n in args.sizes:
            runs.append(run_size(work, n, every=n <= 10_000, extra=extra))
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
    if args.part == "auto":
        print("\n## what auto decides\n")
        print("\n".join(auto_decisions(work, runs, args.encoder_steps, args.solver_sizes, args.encoder_rows)))
    if args.part in ("solvers", "all"):
        print("\n## exact vs approx\n")
        print("\n".join(solvers(work, runs, args.encoder_steps, args.solver_sizes, not args.no_references,
                                  args.encoder_rows)))


if __name__ == "__main__":
    main()

"""The iteration loop as a user sees it: wall seconds of ``marginflow`` commands, each in a new process.

Rows (default config, 2 cores here), each against its target:

* with a ``marginflow dashboard`` running (found without ``PREFECT_API_URL``): cold iris, cold digits,
  the same digits run fully cached, and ``--set svc.C=3`` after it (which stages ran; no Keras fit);
* without any server: the cached digits run again (a temporary server starts), and how long that
  server took to answer (from the command's own line);
* ``--large``: a cold run of every approach on a 10,000 x 784 image table (`imagegen`), with the dashboard;
* ``--stress N``: N consecutive runs of a small config alternating cached and recomputed stages
  (``--refresh train_svc`` / ``--refresh evaluate`` / none), half on threads and half on a local Dask
  cluster; counts the runs that ended in an internal error (exit 1).

``--exe PATH`` measures another installation's ``marginflow`` the same way (an earlier version, say), and
``--export-api`` hands the dashboard's address to the commands through ``PREFECT_API_URL`` instead of
letting them find it (for versions that do not look for a running dashboard).

Run: ``.venv/bin/python benchmarks/loop.py [--large] [--stress 50]`` (``make bench`` runs the default rows).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parent.parent
EXE = [str(Path(sys.executable).parent / "marginflow")]
KERAS_STAGES = {"encoder_candidate", "train_encoder", "extract_features", "linear_hinge", "deep_hinge", "rff_svm"}


def _cli(*args: str, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run([*EXE, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)
    return time.perf_counter() - start, proc


def _ran(proc: subprocess.CompletedProcess) -> list[str]:
    stages = json.loads(proc.stdout)["stages"]
    return sorted(k for k, v in stages.items() if v["status"] == "ran")


def _start_dashboard(home: Path, port: int) -> subprocess.Popen:
    from flows.server import wait_healthy

    env = {**os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([*EXE, "dashboard", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wait_healthy(f"http://127.0.0.1:{port}/api", proc)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="also a cold run of every approach on 10k x 784 images")
    parser.add_argument("--stress", type=int, default=0, metavar="N", help="N alternating runs (threads and dask)")
    parser.add_argument("--exe", help="the marginflow command to measure (default: this environment's)")
    parser.add_argument("--export-api", action="store_true", help="set PREFECT_API_URL to the dashboard's address")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: what the test suite runs "
                        "(benchmarks/smoke.py); its numbers mean nothing")
    args = parser.parse_args()
    dataset, tiny = "digits", []
    if args.smoke:  # iris stands in for digits, with a small encoder
        import smoke

        dataset, tiny = "iris", [a for s in smoke.LOOP_SET for a in ("--set", s)]
    if args.exe:
        EXE[:] = [args.exe]
    from flows.server import free_port, stop_server

    work = Path(tempfile.mkdtemp(prefix="marginflow-loop-"))
    home = work / "prefect"
    # a new Prefect home and an empty JAX compilation cache: "cold" compiles every network afresh
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": "", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "MARGINFLOW_JAX_CACHE": str(work / "jax")}
    rows: list[tuple[str, float, str, str]] = []  # measurement, seconds, target, note

    def row(name: str, seconds: float, target: float | None, note: str = "") -> None:
        verdict = "" if target is None else f"<= {target:g} s: {'met' if seconds <= target else 'missed'}"
        rows.append((name, seconds, verdict, note))
        print(f"{name}: {seconds:.1f} s {verdict} {note}", file=sys.stderr, flush=True)

    port = free_port()
    dashboard = _start_dashboard(home, port)
    env_found = env
    if args.export_api:
        env = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    try:
        if not args.smoke:  # a smoke run's "digits" is iris: the next row
            t, p = _cli("run", "--dataset", "iris", "--data-dir", str(work / "iris"), "--json", *tiny, env=env)
            assert p.returncode == 0, p.stderr[-2000:]
            assert args.export_api or "running dashboard" in p.stderr, p.stderr[-500:]
            row("cold iris, dashboard running", t, 12)
        digits = ("run", "--dataset", dataset, "--data-dir", str(work / dataset), "--json", *tiny)
        t, cold = _cli(*digits, env=env)
        assert cold.returncode == 0, cold.stderr[-2000:]
        assert args.export_api or "running dashboard" in cold.stderr, cold.stderr[-500:]
        row(f"cold {dataset}, dashboard running", t, 35)
        t, p = _cli(*digits, env=env)
        assert p.returncode == 0 and not _ran(p), p.stderr[-2000:]
        row("cached digits, dashboard running", t, 3)
        t, p = _cli(*digits, "--set", "svc.C=3", env=env)
        ran = _ran(p)
        row("--set svc.C=3 after the cold digits run, dashboard", t, 10,
            f"ran: {', '.join(ran)}; Keras fits: {', '.join(sorted(KERAS_STAGES & set(ran))) or 'none'}")
        if args.large:
            import imagegen

            path = work / "images-10000.parquet"
            imagegen.write(path, 10_000)
            t, p = _cli("run", "--input", str(path), "--label", "label", "--split-column", "split",
                        "--data-dir", str(work / "large"), "--json", env=env)
            assert p.returncode == 0, p.stderr[-2000:]
            stages = json.loads(p.stdout)["stages"]
            slow = sorted(((v["seconds"], k) for k, v in stages.items()), reverse=True)[:4]
            row("cold 10k x 784 images, every approach, dashboard", t, 150,
                "longest: " + ", ".join(f"{k} {s:.0f} s" for s, k in slow))
        if args.stress:
            iris = ("run", "--dataset", "iris", "--data-dir", str(work / "stress"), "--quiet", "--set",
                    "encoder.kind='mlp'", "--set", "encoder.epochs=5")
            failures, codes = [], {}
            start = time.perf_counter()
            for i in range(args.stress):
                engine = ["--engine", "dask", "--workers", "2"] if i % 2 else []
                refresh = [["--refresh", "train_svc"], ["--refresh", "evaluate"], []][i % 3]
                _, p = _cli(*iris, *engine, *refresh, env=env)
                codes[p.returncode] = codes.get(p.returncode, 0) + 1
                if p.returncode != 0:
                    failures.append(f"run {i} ({' '.join(engine + refresh) or 'cached'}): {p.stderr.strip()[-300:]}")
            row(f"{args.stress} alternating runs (threads/dask, cached/recomputed)", time.perf_counter() - start, None,
                f"exit codes {codes}; internal errors: {sum(f.count('internal error') for f in failures)}")
            for f in failures:
                print(f, file=sys.stderr)
    finally:
        stop_server(dashboard)
    env = env_found
    t, p = _cli(*digits, env=env)
    assert p.returncode == 0 and not _ran(p), p.stderr[-2000:]
    started = next((line for line in p.stderr.splitlines() if "temporary server (" in line), "")
    row("cached digits, no server (a temporary one starts)", t, 12, started.split("(")[-1].split(")")[0])

    print(f"\nmarginflow loop ({EXE[0]}), {os.cpu_count()} cores, Python {platform.python_version()}, each a new "
          "process")
    print(f"{'measurement':<56}{'seconds':>9}  {'target':<18}note")
    for name, secs, verdict, note in rows:
        print(f"{name:<56}{secs:>9.1f}  {verdict:<18}{note}")


if __name__ == "__main__":
    main()

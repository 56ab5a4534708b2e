"""Speed benchmark: what the Prefect pipeline, its cache and its engines cost on the digits demo.

Part ``cache`` prints one table, all rows measured in this one process against a running
Prefect server (started here unless ``PREFECT_API_URL`` is set):

* direct   - the same stage functions called one after another without Prefect (``task.fn``);
* cold     - the pipeline flow on an empty data root;
* cached   - the same flow again (every stage a cache hit);
* stage    - ``marginflow stage train_svc``'s flow call (upstream cached, train_svc recomputed);
* --help   - ``marginflow --help`` in a new process.

Ratios: cached / cold (target <= 0.20) and cold / direct (Prefect overhead, target <= 1.3).

Part ``engine`` compares the thread engine with a local Dask cluster of 2 single-threaded
worker processes, in the same run: the cold pipeline (target: dask <= 1.3 x threads) and
the SVC search grid alone (20 points x 5 folds of libsvm, ``svc_cv`` tasks mapped over the
scaled rows of ``--grid-dataset``, mnist1d by default: on digits a fit takes 20 ms and
per-task overhead is all one measures; target: dask <= 0.6 x threads). It then plans past one machine from the
per-task seconds of the Dask run (each task alone in its worker, so no lock waits): the
total work, the critical path (the longest chain of dependent tasks) and the speed-up
bound ``total / max(critical path, total / N)`` for N workers.

Run: ``make bench`` or ``.venv/bin/python benchmarks/speed.py [--dataset digits] [--part cache|engine|all]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _direct(config, root: str) -> None:
    """Every stage (and task inside one) the flow runs for ``config``, laid out by the flow's own `flows.runner.
    lay_out` on plain calls, one after another, without Prefect."""
    from flows.runner import DirectRunner, lay_out

    lay_out(config, root, DirectRunner())


def _timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def critical_path(seconds: dict[str, float], reads: dict[str, list[str]]) -> tuple[float, list[str]]:
    """Longest chain of dependent tasks (seconds, names) in a DAG: ``reads[name]`` are its inputs."""
    best: dict[str, tuple[float, list[str]]] = {}

    def visit(name: str) -> tuple[float, list[str]]:
        if name not in best:
            before = max((visit(r) for r in reads.get(name, []) if r in seconds), default=(0.0, []))
            best[name] = (before[0] + seconds[name], [*before[1], name])
        return best[name]

    return max(visit(n) for n in seconds)


def _grid_flow():
    """A flow that maps the ``svc.search`` grid over one table artifact (nothing else)."""
    from prefect import flow, unmapped

    from tasks.core.svm import grid
    from tasks.svc_cv import svc_cv

    @flow(name="marginflow-bench-grid")
    def grid_only(data, config, root: str) -> None:
        for f in svc_cv.map(unmapped(data), grid(config), root=unmapped(root)):
            f.result()

    return grid_only


def _scaled_rows(dataset: str, root: Path):
    """The ``scaled`` artifact of a built-in dataset: the plan up to ``scale``, laid out on plain calls."""
    from flows.runner import DirectRunner, lay_out
    from tasks.config_text import load_config

    config = load_config(None, [], {"data.dataset": dataset})
    return lay_out(config, str(root), DirectRunner(), until="scale").handles["scale"].at(str(root))


def engine_part(dataset: str, grid_dataset: str, work: Path, extra: list[str] = (), smoke: bool = False) -> None:
    from flows.engine import task_runner
    from flows.pipeline import pipeline
    from flows.plan import BY_STAGE
    from tasks.config_text import load_config
    from tasks.core.svm import grid

    config = load_config(None, list(extra), {"data.dataset": dataset})
    dask = config.model_copy(update={"engine": config.engine.model_copy(update={"kind": "dask", "workers": 2})})
    search = config.svc.model_copy(update={"search": True})
    if smoke:  # two points: the grid's tasks, not its size
        search = search.model_copy(update={"search_C": [1.0, 10.0], "search_gamma_factor": [1.0]})
    if not smoke:
        pipeline(config=config, data_dir=str(work / "e-warmup"))  # imports and compilation, not counted
    t_threads, threads = _timed(pipeline, config=config, data_dir=str(work / "e-threads"))
    scaled = _scaled_rows(grid_dataset, work / "e-grid-source")
    for root in ("e-grid-threads", "e-grid-dask"):  # the scaled rows, and no cache, in each grid's data root
        shutil.copytree(scaled.dir, work / root / scaled.path)
    grid_only = _grid_flow()
    from prefect.task_runners import ThreadPoolTaskRunner

    shutil.copytree(scaled.dir, work / "e-grid-serial" / scaled.path)
    t_grid_serial, _ = _timed(grid_only.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1)), scaled, search,
                              str(work / "e-grid-serial"))
    t_grid_threads, _ = _timed(grid_only, scaled, search, str(work / "e-grid-threads"))
    # one cluster for both: its workers have imported the libraries by the grid's turn, as the threads engine's
    # process has (a second cluster's workers would import scikit-learn inside the grid's time)
    with task_runner(dask.engine, str(work)) as runner:
        t_dask, dask_run = _timed(pipeline.with_options(task_runner=runner), config=dask, data_dir=str(work / "e-dask"))
        t_grid_dask, _ = _timed(grid_only.with_options(task_runner=runner), scaled, search, str(work / "e-grid-dask"))
    rows = [
        ("cold pipeline, threads", t_threads, 1.0, ""),
        ("cold pipeline, dask (2 workers)", t_dask, t_dask / t_threads, "<= 1.30 x threads"),
        (f"SVC search grid on {grid_dataset} ({len(grid(search))} points x {search.search_folds} folds), threads",
         t_grid_threads, 1.0, ""),
        ("SVC search grid, one thread (tasks one after another)", t_grid_serial, t_grid_serial / t_grid_threads, ""),
        ("SVC search grid, dask (2 workers)", t_grid_dask, t_grid_dask / t_grid_threads, "<= 0.60 x threads"),
    ]
    print(f"\nmarginflow engines, dataset {dataset}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'measurement':<72}{'seconds':>9}{'ratio':>9}  target")
    for name, secs, ratio, target in rows:
        print(f"{name:<72}{secs:>9.2f}{ratio:>9.2f}  {target}")

    seconds = {k: v.seconds for k, v in dask_run.stages.items() if not k.endswith(".cv")}
    reads = {s.name: s.reads(config.evaluate.approaches) for s in BY_STAGE.values()}
    total = sum(seconds.values())
    path_s, path = critical_path(seconds, reads)
    print("\nper task (dask run, seconds): " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    print(f"total work {total:.1f} s; critical path {path_s:.1f} s: {' -> '.join(path)}")
    print(f"{'workers':>8}{'bound on speed-up':>19}{'bound on run s':>16}")
    for n in (1, 2, 4, 8, 16):
        run_s = max(path_s, total / n)
        print(f"{n:>8}{total / run_s:>19.2f}{run_s:>16.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--part", choices=("cache", "engine", "all"), default="all")
    parser.add_argument("--grid-dataset", default="mnist1d", help="built-in dataset of the engine part's search grid")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: what the test suite runs "
                        "(benchmarks/smoke.py); its numbers mean nothing")
    args = parser.parse_args()
    extra: list[str] = []
    if args.smoke:
        import smoke

        args.dataset, args.grid_dataset, extra = "iris", "iris", smoke.LOOP_SET

    work = Path(tempfile.mkdtemp(prefix="marginflow-bench-"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    stack = contextlib.ExitStack()  # the server (when started here) and the heartbeats setting, undone at the end
    try:
        if not os.environ.get("PREFECT_API_URL"):
            from flows.server import free_port, start_server, stop_server, wait_healthy

            os.environ["PREFECT_HOME"] = str(work / "prefect")
            (work / "prefect").mkdir()
            port = free_port()
            os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
            server = start_server(work / "prefect", port)
            stack.callback(stop_server, server)
            wait_healthy(os.environ["PREFECT_API_URL"], server)
        from flows.engine import without_heartbeats

        stack.enter_context(without_heartbeats())  # the flow runs as `marginflow run` runs them
        if args.part in ("engine", "all"):
            engine_part(args.dataset, args.grid_dataset, work, extra, args.smoke)
        if args.part == "engine":
            return
        from flows.pipeline import pipeline
        from tasks.config_text import load_config

        config = load_config(None, extra, {"data.dataset": args.dataset})
        if not args.smoke:  # a smoke run's numbers mean nothing: no warm-up
            _direct(config, str(work / "warmup"))  # imports and JAX compilation, not counted
            pipeline(config=config, data_dir=str(work / "warmup-flow"))  # Prefect client warm-up, not counted

        t_direct, _ = _timed(_direct, config, str(work / "direct"))
        t_cold, cold = _timed(pipeline, config=config, data_dir=str(work / "flow"))
        t_cached, cached = _timed(pipeline, config=config, data_dir=str(work / "flow"))
        t_stage, _ = _timed(pipeline, config=config, data_dir=str(work / "flow"), refresh=["train_svc"], until="train_svc")
        assert {s.status for s in cached.stages.values()} == {"cached"}
        help_start = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "marginflow"), "--help"], check=True, capture_output=True)
        t_help = time.perf_counter() - help_start
    finally:
        stack.close()

    rows = [
        ("direct (stage functions, no Prefect)", t_direct, t_direct / t_direct, ""),
        ("cold flow run", t_cold, t_cold / t_direct, "<= 1.30 x direct"),
        ("fully cached rerun", t_cached, t_cached / t_cold, "<= 0.20 x cold"),
        ("one-stage rerun: train_svc", t_stage, t_stage / t_cold, ""),
        ("marginflow --help (new process)", t_help, float("nan"), "about 1 s"),
    ]
    print(f"\nmarginflow speed, dataset {args.dataset}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'measurement':<42}{'seconds':>9}{'ratio':>9}  target")
    for name, secs, ratio, target in rows:
        shown = "" if ratio != ratio else f"{ratio:.2f}"
        print(f"{name:<42}{secs:>9.2f}{shown:>9}  {target}")
    print("\nratios: cold and direct vs direct; cached and one-stage vs cold")
    print("per stage, cold flow: " + ", ".join(f"{k} {v.seconds:.2f}s" for k, v in cold.stages.items()))


if __name__ == "__main__":
    main()

"""Speed benchmark: what the Prefect pipeline and its cache cost on the digits demo.

Prints one table, all rows measured in this one process against a running Prefect
server (started here unless ``PREFECT_API_URL`` is set):

* direct   - the same stage functions called one after another without Prefect (``task.fn``);
* cold     - the pipeline flow on an empty data root;
* cached   - the same flow again (every stage a cache hit);
* stage    - ``marginflow stage train_svc``'s flow call (upstream cached, train_svc recomputed);
* --help   - ``marginflow --help`` in a new process.

Ratios: cached / cold (target <= 0.20) and cold / direct (Prefect overhead, target <= 1.3).
Run: ``make bench`` or ``.venv/bin/python benchmarks/speed.py [--dataset digits]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _direct(config, root: str) -> None:
    """Every stage of `flows.plan` the flow runs for ``config``, called one after another without Prefect."""
    from flows.plan import load_task, stage_config, stages_needed
    from tasks.catalog import BY_NAME
    from tasks.core.svm import grid
    from tasks.ingest import describe_source
    from tasks.svc_cv import svc_cv

    refs = {}
    for stage in stages_needed(config.evaluate.approaches):
        args = [refs[name] for name in stage.inputs] or [describe_source(config.data)]
        kwargs = {"config": stage_config(config, stage), "root": root}
        if stage.models:
            kwargs["models"] = {a: refs[BY_NAME[a].stage] for a in config.evaluate.approaches}
        if stage.search and config.svc.search:
            kwargs["cv"] = [svc_cv.fn(args[0], point, root=root) for point in grid(config.svc)]
        refs[stage.name] = load_task(stage.name).fn(*args, **kwargs)


def _timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="marginflow-bench-"))
    server = None
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    if not os.environ.get("PREFECT_API_URL"):
        from flows.server import free_port, start_server, wait_healthy

        os.environ["PREFECT_HOME"] = str(work / "prefect")
        (work / "prefect").mkdir()
        port = free_port()
        os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        server = start_server(work / "prefect", port)
        wait_healthy(os.environ["PREFECT_API_URL"], server)

    try:
        from flows.pipeline import pipeline
        from tasks.config import load_config

        config = load_config(None, [], {"data.dataset": args.dataset})
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
        if server is not None:
            from flows.server import stop_server

            stop_server(server)

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

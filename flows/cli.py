"""The ``marginflow`` command line.

Starts fast: Prefect, Keras and scikit-learn are imported only when a command needs them.
Exit codes: 0 success, 2 bad input or config (one line naming the file, column or key),
1 internal error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from flows.plan import CHOICES, STAGES, stage_name
from tasks.config import BUILTIN_DATASETS
from tasks.errors import InputError, first_line

EPHEMERAL_TIMEOUT_S = 90


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"marginflow: error: {message} (see {self.prog} --help)\n")


def _common(p: argparse.ArgumentParser, refresh: bool = True, json_flag: bool = True) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config file with one table per section ([data], [encoder], [svc], ...)")
    src = p.add_argument_group("data source (default: the built-in digits dataset)")
    src.add_argument("--dataset", choices=BUILTIN_DATASETS, help="a built-in dataset, generated or loaded offline")
    src.add_argument("--input", metavar="PATH",
                     help="your own data: .csv, .csv.gz or .parquet, or a folder of them (combined in name order)")
    src.add_argument("--label", metavar="COL", help="label column of --input (ints or strings)")
    src.add_argument("--split-column", metavar="COL", help="column of --input holding train/val/test; default: a stratified seeded split")
    _data_dir(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config key, e.g. --set svc.C=1 --set encoder.hidden=[64,32]; repeatable")
    eng = p.add_argument_group("engine (default: threads of this process)")
    eng.add_argument("--engine", choices=("threads", "dask"),
                     help="where tasks run: threads, or dask (a local cluster of worker processes, or --dask-address)")
    eng.add_argument("--dask-address", metavar="ADDR",
                     help="run on the existing Dask cluster whose scheduler is at ADDR (tcp://host:8786); implies --engine dask")
    eng.add_argument("--workers", type=int, metavar="N",
                     help="worker processes of the local Dask cluster (default: one per core); implies --engine dask")
    if refresh:
        p.add_argument("--refresh", nargs="?", const="all", metavar="STAGE",
                       help="recompute instead of using the cache: every stage, or only STAGE")
    if json_flag:
        p.add_argument("--json", action="store_true",
                       help="print one JSON object (per stage: ran or cached, seconds, artifact; and the metrics)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="marginflow",
        description="Train SVM-style classifiers with Keras as a cached Prefect pipeline: "
                    "ingest -> scale -> train_encoder -> extract_features -> train_svc -> evaluate -> bundle.",
        epilog="Exit codes: 0 ok, 2 bad input or config, 1 internal error.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    run = sub.add_parser("run", help="run the whole pipeline and register its model; unchanged stages come from the cache",
                         description="Run every stage; a stage whose inputs, config section and code are unchanged is "
                                     "a cache hit. The model is registered as a new version (the first becomes champion).")
    _common(run)
    st = sub.add_parser("stage", help="rerun one stage from the artifacts already there",
                        description="Recompute one stage. Upstream stages come from the cache "
                                    "(they run only if never run before); downstream stages are not run.")
    st.add_argument("name", choices=CHOICES, metavar="NAME",
                    help="one of: " + ", ".join(STAGES) + "; artifact and approach names are accepted too "
                         "(encoder, features, svc, features_svc, report ...)")
    _common(st)
    rt = sub.add_parser("retrain", help="run the retrain flow once: pipeline, then champion vs challenger",
                        description="Run the pipeline on the configured source (a file, or a landing folder whose "
                                    "CSV/Parquet files are combined in name order), register the model, and promote "
                                    "it if it scores at least the champion's retrain.metric minus retrain.tolerance "
                                    "on the same test rows. The same flow `serve` runs on a schedule.")
    _common(rt, refresh=False)
    sv = sub.add_parser("serve", help="serve the retrain flow as a deployment on a cron schedule (foreground)",
                        description="Create a deployment of the retrain flow with a cron schedule on the Prefect API in "
                                    "PREFECT_API_URL and run its flow runs until stopped (Ctrl-C). Start the server "
                                    "first with `marginflow dashboard`.")
    sv.add_argument("--cron", required=True, metavar="EXPR", help='five-field cron expression, e.g. "0 3 * * *"')
    sv.add_argument("--timezone", default="UTC", metavar="TZ", help="time zone of the cron expression (default UTC)")
    sv.add_argument("--name", default="scheduled", metavar="NAME", help="deployment name (default: scheduled)")
    _common(sv, refresh=False, json_flag=False)
    ms = sub.add_parser("models", help="list the registered model versions; * marks the champion",
                        description="List the model registry of the data root: versions, test metrics, champion.")
    _data_dir(ms)
    ms.add_argument("--json", action="store_true", help="print the versions as JSON")
    pr = sub.add_parser("promote", help="make a model version the champion (also to roll back)",
                        description="Point the champion at VERSION (v0003, 3); the change is atomic.")
    pr.add_argument("version", metavar="VERSION")
    _data_dir(pr)
    pd_ = sub.add_parser("predict", help="predict a CSV/Parquet file with a registered model",
                         description="Check the input's columns against the model's feature names, then write the "
                                     "predicted labels (original values) and SVC decision scores, in batches.")
    pd_.add_argument("--input", required=True, metavar="FILE", help="rows to predict: .csv, .csv.gz or .parquet")
    pd_.add_argument("--output", required=True, metavar="FILE", help="where to write: .parquet or .csv")
    pd_.add_argument("--model", default="champion", metavar="VERSION", help="a version (v0003) or champion (default)")
    pd_.add_argument("--batch-rows", type=int, default=10_000, metavar="N", help="rows per batch (default 10000)")
    _data_dir(pd_)
    db = sub.add_parser("dashboard", help="start the Prefect server and dashboard on 127.0.0.1 (foreground)",
                        description="Start `prefect server` on 127.0.0.1 and print the dashboard URL and the "
                                    "PREFECT_API_URL for other shells.")
    db.add_argument("--port", type=int, default=4200, help="port (default 4200)")
    return parser


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", default=os.environ.get("MARGINFLOW_DATA_DIR", "data"),
                   help="data root holding artifacts, cache and models/ (default: ./data or $MARGINFLOW_DATA_DIR)")


def _load_config(args: argparse.Namespace):
    """Config from --config, then --set, then the data-source flags (a file replaces the dataset)."""
    from tasks.config import load_config

    given = {
        "data.dataset": args.dataset,
        "data.input": args.input,
        "data.label": args.label,
        "data.split_column": args.split_column,
    }
    if args.dask_address is not None or args.workers is not None:
        if args.engine == "threads":
            raise InputError("--engine threads: --dask-address and --workers need --engine dask")
        given["engine.kind"] = "dask"
    if args.engine is not None:
        given["engine.kind"] = args.engine
    given["engine.address"] = args.dask_address
    given["engine.workers"] = args.workers
    flags = {k: v for k, v in given.items() if v is not None}
    if args.input is not None and args.dataset is None:
        flags["data.dataset"] = None
    elif args.dataset is not None and args.input is None:
        flags["data.input"] = None
    return load_config(args.config, args.overrides, flags)


def _data_root(args: argparse.Namespace) -> None:
    """Refuse a data root that exists and is not a folder."""
    if os.path.exists(args.data_dir) and not os.path.isdir(args.data_dir):
        raise InputError(f"--data-dir {args.data_dir}: not a folder")


def _preflight(config, args: argparse.Namespace) -> None:
    """Validate the data root, the data and the config against the data's shape before Prefect
    starts, so that bad input writes nothing and fails fast."""
    from tasks.core.dataset import prepare
    from tasks.core.networks import check_against_data

    _data_root(args)
    _, meta = prepare(config.data)
    check_against_data(config.encoder, len(meta["feature_names"]), str(meta["source"]))


def _summary(result, metrics: dict[str, Any] | None, report) -> str:
    """Terminal report: the markdown report (if evaluate ran), then the stage table."""
    lines = [""]
    if report is not None:
        lines += [report.file("report.md").read_text().rstrip(), ""]
    lines.append(f"{'stage':<18}{'status':<8}{'seconds':>9}  {'where':<22}artifact")
    for name, s in result.stages.items():
        lines.append(f"{name:<18}{s.status:<8}{s.seconds:>9.2f}  {s.where[:21]:<22}{s.artifact}")
    if metrics:
        lines += ["", f"{metrics['source']}: test accuracy {metrics['accuracy']:.4f}, "
                      f"macro-F1 {metrics['macro_f1']:.4f} on {metrics['n_test']} test rows",
                  f"report: {report.file('report.md')}"]
    return "\n".join(lines)


def _pipeline_command(args: argparse.Namespace) -> int:
    """``run`` and ``stage``."""
    config = _load_config(args)
    refresh = [args.refresh] if args.refresh else []
    until = None
    if args.command == "stage":
        until = args.name
        refresh = sorted({*refresh, args.name})
    if args.refresh not in (None, "all"):
        try:
            stage_name(args.refresh)
        except ValueError as e:
            raise InputError(f"--refresh {args.refresh}: {e}, or all") from None
    _preflight(config, args)

    from flows.engine import prefect_api, run_pipeline
    from tasks.store.artifacts import read_json

    with prefect_api(config.engine):
        result = run_pipeline(config, args.data_dir, refresh=refresh, until=until)
    report = result.artifacts.get("evaluate")
    metrics = read_json(report, "metrics.json") if report else None
    if args.json:
        out = {
            "stages": {k: v.model_dump() for k, v in result.stages.items()},
            "metrics": metrics,
            "report": str(report.file("report.md")) if report else None,
            "model": result.model,
            "engine": config.engine.kind,
            "data_dir": os.path.abspath(args.data_dir),
        }
        print(json.dumps(out, indent=2))
    else:
        print(_summary(result, metrics, report))
        if result.model:
            from tasks.ops.registry import Registry

            try:
                champion = Registry(args.data_dir).champion()
            except InputError as e:
                champion = f"none usable: {e}"
            state = "registered" if result.model_is_new else "already registered"
            print(f"model: {result.model} ({state}; champion: {champion})")
    return 0


def _retrain_command(args: argparse.Namespace) -> int:
    config = _load_config(args)
    _preflight(config, args)
    from flows.engine import prefect_api, task_runner
    from flows.retrain import retrain

    with prefect_api(config.engine):
        if config.engine.address:  # refuse an unreachable cluster here, not from inside the flow run
            with task_runner(config.engine, os.path.abspath(args.data_dir)):
                pass
        decision = retrain(config=config, data_dir=os.path.abspath(args.data_dir))
    if args.json:
        print(json.dumps(decision.model_dump(), indent=2))
    else:
        print(f"challenger {decision.challenger}, champion before {decision.champion_before}: {decision.reason}")
        print(f"champion: {decision.champion_after}")
    return 0


def _serve_command(args: argparse.Namespace) -> int:
    config = _load_config(args)
    if config.data.input is not None:  # scheduled runs must not depend on the serving shell's directory
        config = config.model_copy(update={"data": config.data.model_copy(
            update={"input": os.path.abspath(config.data.input)})})
    if not os.environ.get("PREFECT_API_URL"):
        raise InputError("PREFECT_API_URL is not set: start the server with `marginflow dashboard` "
                         "and export the PREFECT_API_URL it prints")
    from prefect.schedules import Cron

    try:
        schedule = Cron(args.cron, timezone=args.timezone)
    except Exception as e:  # croniter / pydantic reject the expression or time zone
        first = first_line(e)
        raise InputError(f"--cron {args.cron!r}: not a valid cron schedule ({first})") from None
    from prefect.types.entrypoint import EntrypointType

    from flows.retrain import retrain

    print(f"serving marginflow-retrain/{args.name} on {os.environ['PREFECT_API_URL']}, cron {args.cron!r} "
          f"({args.timezone}); data root {os.path.abspath(args.data_dir)}. Ctrl-C stops.", flush=True)
    retrain.serve(
        name=args.name, schedules=[schedule], entrypoint_type=EntrypointType.MODULE_PATH,
        parameters={"config": config.model_dump(mode="json"), "data_dir": os.path.abspath(args.data_dir)},
        description="marginflow retrain: pipeline, register, champion vs challenger",
    )
    return 0


def _registry(args: argparse.Namespace):
    """The data root's registry, repaired first (what was repaired goes to stderr, one line)."""
    from tasks.ops.registry import Registry

    _data_root(args)
    registry = Registry(args.data_dir)
    repaired = registry.recover()
    if repaired:
        print(f"marginflow: registry repaired: {'; '.join(repaired)}", file=sys.stderr)
    return registry


def _models_command(args: argparse.Namespace) -> int:
    from tasks.ops.registry import RegistryError

    registry = _registry(args)
    try:
        registry.champion()
    except RegistryError as e:
        print(f"marginflow: warning: {e}", file=sys.stderr)
    versions = registry.versions()
    if args.json:
        print(json.dumps([v.model_dump() for v in versions], indent=2))
        return 0
    if not versions:
        print(f"no models registered in {os.path.abspath(args.data_dir)}/models (run `marginflow run`)")
        return 0
    print(f"  {'version':<9}{'created (UTC)':<27}{'source':<22}{'accuracy':>9}{'macro-F1':>10}")
    for v in versions:
        m = v.metrics
        print(f"{'*' if v.champion else ' '} {v.version:<9}{v.created:<27}{str(m.get('source', ''))[-21:]:<22}"
              f"{m.get('accuracy', float('nan')):>9.4f}{m.get('macro_f1', float('nan')):>10.4f}"
              + ("  REFUSED: will not load" if v.problem else ""))
    print("* champion")
    for v in versions:
        if v.problem:
            print(f"{v.version}: {v.problem}")
    return 0


def _promote_command(args: argparse.Namespace) -> int:
    from tasks.ops.registry import RegistryError

    registry = _registry(args)
    try:
        before = registry.champion()
    except RegistryError:
        before = "a damaged pointer"
    name = registry.promote(args.version, reason="promoted by hand (marginflow promote)")
    print(f"champion: {name} (was {before})")
    return 0


def _predict_command(args: argparse.Namespace) -> int:
    from tasks.ops.bundle import Bundle
    from tasks.ops.predict import predict_file

    if args.batch_rows < 1:
        raise InputError(f"--batch-rows {args.batch_rows}: must be at least 1")
    path = _registry(args).path(args.model)
    model = Bundle.load(path)

    def progress(n: int) -> None:
        print(f"\rpredicted {n} rows", end="", file=sys.stderr, flush=True)

    n = predict_file(model, args.input, args.output, args.batch_rows, progress=progress)
    print(file=sys.stderr)
    print(f"{n} rows predicted with {path.name} -> {args.output}")
    return 0


def _dashboard_command(args: argparse.Namespace) -> int:
    import socket

    if not 0 < args.port < 65536:
        raise InputError(f"--port {args.port}: not a TCP port (1-65535)")
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", args.port))
        except OSError:
            raise InputError(f"--port {args.port}: already in use on 127.0.0.1 (a server may be running there; "
                             f"choose another port)") from None
    url = f"http://127.0.0.1:{args.port}"
    print(f"Prefect dashboard: {url}\nIn other shells:  export PREFECT_API_URL={url}/api\nCtrl-C stops the server.",
          flush=True)
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(args.port)]
    # replace this process, so Ctrl-C and kill reach the server itself and leave no orphan
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


COMMANDS = {"run": _pipeline_command, "stage": _pipeline_command, "retrain": _retrain_command,
            "serve": _serve_command, "models": _models_command, "promote": _promote_command,
            "predict": _predict_command, "dashboard": _dashboard_command}


def _execute(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except InputError as e:
        print(f"marginflow: error: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # no telemetry from the temporary server (the machines this runs on are often offline)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # a fresh temporary server took 8 s here idle and 27 s on 2 cores under a load of 4 (Prefect's default: 20 s)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_TIMEOUT_S))
    try:
        return _execute(args)
    except KeyboardInterrupt:
        print("marginflow: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an internal error: one line, the traceback only on request
        if "ephemeral Prefect API server" in str(e):
            print(f"marginflow: error: the temporary Prefect server did not start within "
                  f"{os.environ['PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS']} s (a busy machine?): start "
                  "`marginflow dashboard` in another shell and export the PREFECT_API_URL it prints", file=sys.stderr)
            return 2
        if os.environ.get("MARGINFLOW_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"marginflow: internal error: {type(e).__name__}: {first} (set MARGINFLOW_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``marginflow`` command line.

Starts fast: Prefect, Keras and scikit-learn are imported only when a command needs them.
Exit codes: 0 success, 2 bad input or config (one line naming the file, column or key),
1 internal error.
"""

from __future__ import annotations

import argparse
import os
import sys

from flows.commands import (
    EPHEMERAL_TIMEOUT_S,
    compare_command,
    dashboard_command,
    models_command,
    pipeline_command,
    predict_command,
    promote_command,
    retrain_command,
    runs_command,
    serve_command,
)
from flows.plan import CHOICES, STAGES
from tasks.config import BUILTIN_DATASETS
from tasks.errors import InputError, first_line


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
                       help="recompute instead of using the cache: every stage, or only STAGE (or one of the "
                            "tasks inside stages: svc_cv, choose_solver, encoder_candidate, score_candidate)")
    if json_flag:
        p.add_argument("--json", action="store_true",
                       help="print one JSON object (per stage: ran or cached, seconds, artifact; and the metrics)")
    out = p.add_argument_group("terminal output")
    out.add_argument("--quiet", "-q", action="store_true",
                     help="no progress display and no log lines: only errors and the final result lines")
    out.add_argument("--log-file", metavar="FILE",
                     help="also append every log line of the run (stages, epochs, decisions) to FILE")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="marginflow",
        description="Train SVM-style classifiers with Keras as a cached Prefect pipeline: "
                    "ingest -> scale -> train_encoder -> extract_features -> train_svc -> evaluate -> bundle.",
        epilog="Exit codes: 0 ok, 2 bad input or config, 1 internal error.",
    )
    parser.add_argument("--version", action="version", version=f"marginflow {_version()}")
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
                        description="List the model registry of the data root: versions, test metrics, champion, "
                                    "the config keys each version's model was made with that differ from the "
                                    "defaults, and the flow run that registered it.")
    _data_dir(ms)
    ms.add_argument("--json", action="store_true", help="print the versions as JSON")
    rs = sub.add_parser("runs", help="every evaluated run of the data root: config changes, each approach's test "
                                     "accuracy, wall time, model version",
                        description="One row per run that evaluated (run and retrain; stage runs of a single stage "
                                    "are not listed), newest first: the config keys that differ from the defaults, "
                                    "each approach's test accuracy (* marks the bundled one), the wall time and the "
                                    "model version it registered or found registered.")
    _data_dir(rs)
    rs.add_argument("--sort", default="date", metavar="KEY",
                    help="date (newest first, the default), wall (fastest first) or an approach's name (its test "
                         "accuracy, best first)")
    rs.add_argument("--json", action="store_true", help="print the runs as JSON")
    cp = sub.add_parser("compare", help="two model versions side by side: metrics and config",
                        description="Print the test metrics of two versions and every config key of their models "
                                    "that differs (--all: every key), with the flow runs that registered them.")
    cp.add_argument("a", metavar="A", help="a version (v0001, 1) or champion")
    cp.add_argument("b", metavar="B", help="a version (v0002, 2) or champion")
    cp.add_argument("--all", action="store_true", help="show every config key, not only those that differ")
    cp.add_argument("--json", action="store_true", help="print the comparison as JSON")
    _data_dir(cp)
    pr = sub.add_parser("promote", help="make a model version the champion (also to roll back)",
                        description="Point the champion at VERSION (v0003, 3); the change is atomic.")
    pr.add_argument("version", metavar="VERSION")
    _data_dir(pr)
    pd_ = sub.add_parser("predict", help="predict a CSV/Parquet file with a registered model",
                         description="Check the input's columns against the model's feature names, then write the "
                                     "predicted labels (original values) and SVC decision scores, in batches. The "
                                     "label column the model was trained with may be present; it is ignored.")
    pd_.add_argument("--input", required=True, metavar="FILE", help="rows to predict: .csv, .csv.gz or .parquet")
    pd_.add_argument("--output", required=True, metavar="FILE", help="where to write: .parquet or .csv")
    pd_.add_argument("--model", default="champion", metavar="VERSION", help="a version (v0003) or champion (default)")
    pd_.add_argument("--batch-rows", type=int, default=10_000, metavar="N", help="rows per batch (default 10000)")
    pd_.add_argument("--label", metavar="COL", help="a column of true labels: not read as a feature; the accuracy on it "
                                                   "is printed (the model's own label column is always ignored)")
    pd_.add_argument("--id", metavar="COL", help="a column copied to the output unchanged, as its first column")
    _data_dir(pd_)
    db = sub.add_parser("dashboard", help="start the Prefect server and dashboard (foreground)",
                        description="Start `prefect server` on HOST:PORT and print the dashboard URL and the "
                                    "PREFECT_API_URL for other shells. The dashboard's own API address follows "
                                    "--host and --port.")
    db.add_argument("--port", type=int, default=4200, help="port (default 4200)")
    db.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; 0.0.0.0 for other machines, with "
                         "--public-host naming this machine)")
    db.add_argument("--public-host", metavar="NAME",
                    help="host name browsers and workers use to reach this server (default: --host, or "
                         "this machine's name when --host is 0.0.0.0)")
    return parser


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", default=os.environ.get("MARGINFLOW_DATA_DIR", "data"),
                   help="data root holding artifacts, cache and models/ (default: ./data or $MARGINFLOW_DATA_DIR)")


COMMANDS = {"run": pipeline_command, "stage": pipeline_command, "retrain": retrain_command,
            "serve": serve_command, "models": models_command, "promote": promote_command,
            "predict": predict_command, "dashboard": dashboard_command, "compare": compare_command,
            "runs": runs_command}


def _execute(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except InputError as e:
        print(f"marginflow: error: {e}", file=sys.stderr)
        return 2


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("marginflow")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _quiet_third_parties() -> None:
    """Silence warnings that say nothing to a marginflow user on every run."""
    import warnings

    # requests probes for SOCKS proxy support at import; without PySocks urllib3 warns, proxy or not
    warnings.filterwarnings("ignore", message="SOCKS support in urllib3 requires")


def main(argv: list[str] | None = None) -> int:
    _quiet_third_parties()
    args = build_parser().parse_args(argv)
    # no Prefect SDK telemetry from marginflow's commands: its first-run notice breaks into the live display on a
    # terminal, and these machines are often offline (DO_NOT_TRACK=0 in the environment keeps it on)
    os.environ.setdefault("DO_NOT_TRACK", "1")
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
        detail = f": {first_line(e)}" if str(e).strip() else ": "
        print(f"marginflow: internal error: {type(e).__name__}{detail} (set MARGINFLOW_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

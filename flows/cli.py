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

from flows.stages import CHOICES, stage_name
from tasks.config import BUILTIN_DATASETS


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"marginflow: error: {message} (see {self.prog} --help)\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config file with one table per section ([data], [encoder], [svc], ...)")
    src = p.add_argument_group("data source (default: the built-in digits dataset)")
    src.add_argument("--dataset", choices=BUILTIN_DATASETS, help="a built-in dataset, generated or loaded offline")
    src.add_argument("--input", metavar="FILE", help="your own data: .csv, .csv.gz or .parquet")
    src.add_argument("--label", metavar="COL", help="label column of --input (ints or strings)")
    src.add_argument("--split-column", metavar="COL", help="column of --input holding train/val/test; default: a stratified seeded split")
    p.add_argument("--data-dir", metavar="DIR", default=os.environ.get("MARGINFLOW_DATA_DIR", "data"),
                   help="data root for artifacts and the cache (default: ./data or $MARGINFLOW_DATA_DIR)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config key, e.g. --set svc.C=1 --set encoder.hidden=[64,32]; repeatable")
    p.add_argument("--refresh", nargs="?", const="all", metavar="STAGE",
                   help="recompute instead of using the cache: every stage, or only STAGE")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (per stage: ran or cached, seconds, artifact; and the metrics)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="marginflow",
        description="Train SVM-style classifiers with Keras as a cached Prefect pipeline: "
                    "ingest -> scale -> train_encoder -> extract_features -> train_svc -> evaluate.",
        epilog="Exit codes: 0 ok, 2 bad input or config, 1 internal error.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    run = sub.add_parser("run", help="run the whole pipeline; unchanged stages come from the cache",
                         description="Run every stage; a stage whose inputs, config section and code are unchanged is a cache hit.")
    _common(run)
    st = sub.add_parser("stage", help="rerun one stage from the artifacts already there",
                        description="Recompute one stage. Upstream stages come from the cache "
                                    "(they run only if never run before); downstream stages are not run.")
    st.add_argument("name", choices=CHOICES, metavar="NAME",
                    help="one of: " + ", ".join(CHOICES) + " (encoder/features/svc are short names)")
    _common(st)
    return parser


def _load_config(args: argparse.Namespace):
    """Config from --config, then --set, then the data-source flags (a file replaces the dataset)."""
    from tasks.config import load_config

    given = {
        "data.dataset": args.dataset,
        "data.input": args.input,
        "data.label": args.label,
        "data.split_column": args.split_column,
    }
    flags = {k: v for k, v in given.items() if v is not None}
    if args.input is not None and args.dataset is None:
        flags["data.dataset"] = None
    elif args.dataset is not None and args.input is None:
        flags["data.input"] = None
    return load_config(args.config, args.overrides, flags)


def _preflight(config) -> None:
    """Validate a user file before Prefect starts, so bad input writes nothing and fails fast."""
    if config.data.input is not None:
        from tasks.ingest import prepare

        prepare(config.data)


def _summary(result, metrics: dict[str, Any] | None, report) -> str:
    """Terminal report: the markdown report (if evaluate ran), then the stage table."""
    lines = [""]
    if report is not None:
        lines += [report.file("report.md").read_text().rstrip(), ""]
    lines.append(f"{'stage':<18}{'status':<8}{'seconds':>9}  artifact")
    for name, s in result.stages.items():
        lines.append(f"{name:<18}{s.status:<8}{s.seconds:>9.2f}  {s.artifact}")
    if metrics:
        lines += ["", f"{metrics['source']}: test accuracy {metrics['accuracy']:.4f}, "
                      f"macro-F1 {metrics['macro_f1']:.4f} on {metrics['n_test']} test rows",
                  f"report: {report.file('report.md')}"]
    return "\n".join(lines)


def _execute(args: argparse.Namespace) -> int:
    from tasks.errors import InputError

    try:
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
        _preflight(config)
    except InputError as e:
        print(f"marginflow: error: {e}", file=sys.stderr)
        return 2

    from flows.pipeline import pipeline
    from tasks.artifacts import read_json

    try:
        result = pipeline(config=config, data_dir=args.data_dir, refresh=refresh, until=until)
    except InputError as e:
        print(f"marginflow: error: {e}", file=sys.stderr)
        return 2
    report = result.artifacts.get("evaluate")
    metrics = read_json(report, "metrics.json") if report else None
    if args.json:
        out = {
            "stages": {k: v.model_dump() for k, v in result.stages.items()},
            "metrics": metrics,
            "report": str(report.file("report.md")) if report else None,
            "data_dir": os.path.abspath(args.data_dir),
        }
        print(json.dumps(out, indent=2))
    else:
        print(_summary(result, metrics, report))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _execute(args)
    except KeyboardInterrupt:
        print("marginflow: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an internal error: one line, the traceback only on request
        if os.environ.get("MARGINFLOW_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"marginflow: internal error: {type(e).__name__}: {first} (set MARGINFLOW_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

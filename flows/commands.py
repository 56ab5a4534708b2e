"""What each ``marginflow`` command does (`flows.cli` parses the command line and calls one of these): running the
pipeline (``run``, ``stage``), retraining and serving, the model registry (``models``, ``promote``, ``runs``,
``compare``), ``predict`` and the ``dashboard``. Each returns the process's exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from flows.plan import refresh_name, stage_name
from tasks.errors import InputError, first_line, printable
from tasks.store.kinds import METRICS

EPHEMERAL_TIMEOUT_S = 90


def _load_config(args: argparse.Namespace):
    """Config from --config, then --set, then the data-source flags (a file replaces the dataset)."""
    from tasks.config_text import load_config

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


def _data_root(args: argparse.Namespace, write: bool = False) -> None:
    """Refuse a data root that is not a folder, or lies under a file; with ``write``, also one where this
    user cannot create files (a read-only or immutable folder, ``/proc``). The check leaves nothing behind."""
    import tempfile

    if not args.data_dir.strip():
        raise InputError("--data-dir is empty: name a folder (default ./data)")
    path = os.path.abspath(args.data_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"--data-dir {args.data_dir}: not a folder")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InputError(f"--data-dir {args.data_dir}: {existing} is a file, not a folder")
    if not write:
        return
    try:  # what the run will do first: make folders there and write into them
        os.rmdir(tempfile.mkdtemp(prefix=".marginflow-probe-", dir=existing))
    except OSError as e:
        raise InputError(f"--data-dir {args.data_dir}: cannot write in {existing} ({e.strerror or e})") from None


def _preflight(config, args: argparse.Namespace) -> None:
    """Validate the data root, the data and the config against the data's shape before Prefect
    starts, so that bad input writes nothing and fails fast.

    A source that ``ingest`` already validated and stored for this data config (its cached ``dataset``
    artifact, found by the stage's own cache key: the source's bytes, the ``data`` section, the code) is
    not read again: its layout comes from that artifact.
    """
    from flows.engine import check_local_workers
    from tasks.core.layout import Layout
    from tasks.core.networks import check_against_data
    from tasks.ingest import check_source, describe_source, ingest
    from tasks.store.cache import lookup
    from tasks.store.tables import read_meta

    _data_root(args, write=True)
    check_local_workers(config.engine)
    dataset = lookup(ingest, describe_source(config.data), config.data, root=os.path.abspath(args.data_dir))
    layout = Layout.from_meta(read_meta(dataset)) if dataset is not None else check_source(config.data)
    check_against_data(config.encoder, layout)


@contextlib.contextmanager
def _prefect_api(args: argparse.Namespace) -> Iterator[Any]:
    """The Prefect API this command reports to; yields ``ready()``, to call once the input is validated.

    In order: ``PREFECT_API_URL`` (environment or the active profile); the server of a ``marginflow
    dashboard`` running for this Prefect home (`flows.server.running_dashboard`); else a temporary server,
    started now in the background so that it comes up while the input is checked, and stopped on exit.
    ``ready()`` says which in one line (on stderr, not with ``--quiet``) and waits for the temporary server.
    """
    from flows.server import TemporaryServer, drain_prefect_queues, known_api

    def say(line: str) -> None:
        if not args.quiet:
            print(f"marginflow: {line}", file=sys.stderr, flush=True)

    found = known_api()
    if found:  # a server that outlives this command: the live display links to the run's page on it
        api = found[0].rstrip("/")
        args.dashboard = api.removesuffix("/api") if api.endswith("/api") else None
    if found and found[1] != "dashboard":
        yield lambda: None
        return
    if found:
        url = found[0]
        os.environ["PREFECT_API_URL"] = url
        try:
            yield lambda: say(f"Prefect API: the running dashboard's server, {url}")
        finally:
            os.environ.pop("PREFECT_API_URL", None)
        return
    server = TemporaryServer()
    os.environ["PREFECT_API_URL"] = server.api_url

    def ready() -> None:
        try:
            server.wait(float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
        except RuntimeError as e:
            raise InputError(f"{e} (a busy machine?): start `marginflow dashboard` in another shell and rerun; "
                             "runs use its server") from None
        say(f"Prefect API: a temporary server, {server.api_url} ({server.seconds:.1f} s to start); runs start faster "
            "with `marginflow dashboard` running in another shell")

    try:
        yield ready
    finally:
        drain_prefect_queues()  # while the server is up
        server.stop()
        os.environ.pop("PREFECT_API_URL", None)


def _summary(result, metrics: dict[str, Any] | None) -> str:
    """Terminal result: the stage table, the metrics line and where the report is."""
    width = max([18, *(len(name) + 2 for name in result.stages)])
    lines = ["", f"{'stage':<{width}}{'status':<8}{'seconds':>9}{'waited':>8}  {'where':<22}artifact"]
    for name, s in result.stages.items():
        waited = f"{s.waited:>8.2f}" if s.waited >= 0.005 else f"{'':>8}"
        lines.append(f"{name:<{width}}{s.status:<8}{s.seconds:>9.2f}{waited}  {s.where[:21]:<22}{s.artifact}")
    lines.append("(seconds: the stage's own work; waited: time spent waiting for another stage's Keras fit "
                 "or library import)")
    if metrics:
        lines += [""]
        rows = (metrics.get("encoder") or {}).get("selection")
        if rows:
            kept = next(r["candidate"] for r in rows if r["chosen"])
            lines.append(f"encoder: {kept}, kept of {len(rows)} candidates by validation (the report's Encoder section)")
        lines.append(_metrics_line(metrics))
    if result.report:
        lines += [f"report: {result.report}/report.html", f"        {result.report}/report.md"]
    return "\n".join(lines)


def _metrics_line(metrics: dict[str, Any]) -> str:
    return (f"{metrics['source']}: test accuracy {metrics['accuracy']:.4f}, "
            f"macro-F1 {metrics['macro_f1']:.4f} on {metrics['n_test']} test rows")


def _check_log_file(args: argparse.Namespace) -> None:
    """Refuse a --log-file that cannot be written, before anything runs (nothing is created here)."""
    path = args.log_file
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InputError(f"--log-file {path}: is a folder")
    if not os.path.isdir(parent):
        raise InputError(f"--log-file {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise InputError(f"--log-file {path}: not writable")


@contextlib.contextmanager
def _terminal(args: argparse.Namespace) -> Iterator[None]:
    """Progress display (TTY), plain logs (no TTY) or nothing (--quiet, --json); --log-file in every case."""
    import logging

    from flows.display import live_display, log_setup

    live = sys.stderr.isatty() and os.environ.get("TERM") != "dumb" and not args.quiet
    level = logging.ERROR if args.quiet else logging.WARNING if live else None  # None: Prefect's plain lines
    if level is not None:  # also for the local Dask cluster's worker processes, which share this terminal
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = logging.getLevelName(level)
    with log_setup(args.log_file, level, keep_level=True), live_display(live, getattr(args, "dashboard", None)):
        yield


def pipeline_command(args: argparse.Namespace) -> int:
    """``run`` and ``stage``."""
    config = _load_config(args)
    refresh = [args.refresh] if args.refresh else []
    until = None
    if args.command == "stage":
        until = args.name
        refresh = sorted({*refresh, args.name})
    if args.refresh not in (None, "all"):
        try:
            refresh_name(args.refresh)
        except ValueError as e:
            raise InputError(f"--refresh {args.refresh}: {e}, or all") from None
    with _prefect_api(args) as ready:
        _check_log_file(args)
        _preflight(config, args)

        from flows.engine import prefect_api, run_pipeline, without_heartbeats

        ready()
        with prefect_api(config.engine), without_heartbeats(), _terminal(args):
            result = run_pipeline(config, args.data_dir, refresh=refresh, until=until)
        _report_result(args, config, result)
    return 0


def _report_result(args: argparse.Namespace, config, result) -> None:
    """What ``run`` and ``stage`` print: the JSON object, or the summary (one line with ``--quiet``)."""
    from tasks.store.artifacts import read_json

    report = result.artifacts.get("evaluate")
    metrics = read_json(report, METRICS) if report else None
    if args.json:
        out = {
            "stages": {k: v.model_dump() for k, v in result.stages.items()},
            "metrics": metrics,
            "report": f"{result.report}/report.md" if result.report else None,
            "report_html": f"{result.report}/report.html" if result.report else None,
            "model": result.model,
            "engine": config.engine.kind,
            "data_dir": os.path.abspath(args.data_dir),
            "flow_run_id": result.flow_run_id,
            "flow_run_name": result.flow_run_name,
        }
        print(json.dumps(out, indent=2))
    else:
        if args.quiet:
            print(_metrics_line(metrics) if metrics else f"stage {args.name}: {result.stages[stage_name(args.name)].status}")
            if result.report:
                print(f"report: {result.report}/report.html")
        else:
            print(_summary(result, metrics))
        if result.model:
            from tasks.ops.registry import Registry

            try:
                champion = Registry(args.data_dir).champion()
            except InputError as e:
                champion = f"none usable: {e}"
            state = "registered" if result.model_is_new else "already registered"
            print(f"model: {result.model} ({state}; champion: {champion})")


def retrain_command(args: argparse.Namespace) -> int:
    config = _load_config(args)
    with _prefect_api(args) as ready:
        _check_log_file(args)
        _preflight(config, args)
        from flows.engine import prefect_api, task_runner, without_heartbeats
        from flows.retrain import retrain

        ready()
        with prefect_api(config.engine), without_heartbeats():
            if config.engine.address:  # refuse an unreachable cluster here, not from inside the flow run
                with task_runner(config.engine, os.path.abspath(args.data_dir)):
                    pass
            with _terminal(args):
                decision = retrain(config=config, data_dir=os.path.abspath(args.data_dir))
    if args.json:
        print(json.dumps(decision.model_dump(), indent=2))
    else:
        print(f"challenger {decision.challenger}, champion before {decision.champion_before}: {decision.reason}")
        print(f"{decision.metric} on {decision.n_rows} test rows: challenger {_score(decision.challenger_score)}, "
              f"champion {_score(decision.champion_score)} (tolerance {decision.tolerance:g})")
        print(f"champion: {decision.champion_after}")
    return 0


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def serve_command(args: argparse.Namespace) -> int:
    config = _load_config(args)
    if config.data.input is not None:  # scheduled runs must not depend on the serving shell's directory
        config = config.model_copy(update={"data": config.data.model_copy(
            update={"input": os.path.abspath(config.data.input)})})
    _data_root(args, write=True)
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(args.timezone)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError; a bad name a ValueError
        raise InputError(f"--timezone {args.timezone}: not a time zone (an IANA name such as UTC or "
                         "Europe/Berlin)") from None
    from flows.server import known_api

    found = known_api()
    if found is None:
        raise InputError("PREFECT_API_URL is not set and no `marginflow dashboard` is running for this "
                         "Prefect home: start the server with `marginflow dashboard`")
    os.environ["PREFECT_API_URL"] = found[0]
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


def models_command(args: argparse.Namespace) -> int:
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
    from tasks.config_text import shown

    print(f"  {'version':<9}{'created (UTC)':<27}{'source':<16}{'accuracy':>9}{'macro-F1':>10}  {'run':<20}"
          "config changes from defaults")
    for v in versions:
        m = v.metrics
        print(f"{'*' if v.champion else ' '} {v.version:<9}{v.created:<27}{printable(m.get('source', ''))[-15:]:<16}"
              f"{_number(m.get('accuracy')):>9.4f}{_number(m.get('macro_f1')):>10.4f}  "
              f"{printable(v.run.get('flow_run_name') or '-')[:19]:<20}{printable(shown(v.changes))}"
              + ("  REFUSED: will not load" if v.problem else ""))
    print("* champion; `marginflow compare A B` shows two versions side by side")
    for v in versions:
        if v.problem:
            print(f"{v.version}: {printable(v.problem)}")
    return 0


def _number(value: Any) -> float:
    """A metric as a float; NaN (shown as nan) for what a damaged file holds instead."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else float("nan")


def promote_command(args: argparse.Namespace) -> int:
    import logging

    from flows.server import known_api
    from tasks.ops.registry import RegistryError

    registry = _registry(args)
    try:
        before = registry.champion()
    except RegistryError:
        before = "a damaged pointer"
    name = registry.promote(args.version, reason="promoted by hand (marginflow promote)")
    print(f"champion: {name} (was {before})")
    found = known_api()
    if found:  # keep the dashboard's models table current
        os.environ["PREFECT_API_URL"] = found[0]
        from flows.display import log_setup
        from flows.promote import promoted

        try:
            with log_setup(None, None if os.environ.get("MARGINFLOW_DEBUG") else logging.ERROR, keep_level=True):
                promoted(version=name, data_dir=os.path.abspath(args.data_dir))
        except Exception as e:  # the promotion is done; a dashboard that is down must not undo that
            print(f"marginflow: warning: models table not published to the dashboard ({first_line(e)})",
                  file=sys.stderr)
    return 0


def runs_command(args: argparse.Namespace) -> int:
    from tasks.ops.runs import SORT_KEYS, list_runs, render_runs, sort_runs

    _data_root(args)
    if args.sort not in SORT_KEYS:
        raise InputError(f"--sort {args.sort}: one of {', '.join(SORT_KEYS)}")
    rows = sort_runs(list_runs(args.data_dir), args.sort)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no evaluated runs in {os.path.abspath(args.data_dir)}/reports (run `marginflow run`)")
    else:
        print(render_runs(rows))
        for r in rows:
            if r["problem"]:
                print(f"marginflow: warning: {printable(r['problem'])}", file=sys.stderr)
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from tasks.ops.compare import compare_versions, render_comparison

    registry = _registry(args)
    result = compare_versions(registry.version(args.a), registry.version(args.b), everything=args.all)
    print(json.dumps(result, indent=2) if args.json else render_comparison(result))
    return 0


def predict_command(args: argparse.Namespace) -> int:
    from tasks.ops.bundle import Bundle
    from tasks.ops.predict import predict_file

    if args.batch_rows < 1:
        raise InputError(f"--batch-rows {args.batch_rows}: must be at least 1")
    output, root = os.path.realpath(args.output), os.path.realpath(args.data_dir)
    for kept in ("artifacts", "models", "cache"):
        if output.startswith(os.path.join(root, kept) + os.sep):
            raise InputError(f"--output {args.output}: inside the data root's {kept}/ folder, which marginflow "
                             "manages; write the predictions elsewhere")
    path = _registry(args).path(args.model)
    model = Bundle.load(path)

    tty = sys.stderr.isatty()

    def progress(n: int) -> None:  # a counter that rewrites itself, on a terminal only
        print(f"\rpredicting: {n} rows so far", end="", file=sys.stderr, flush=True)

    done = predict_file(model, args.input, args.output, args.batch_rows, progress=progress if tty else None,
                        label=args.label, id_column=args.id)
    if tty:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    print(f"{done.rows} rows predicted with {path.name} -> {args.output}")
    if args.label is not None:
        print(f"accuracy {done.accuracy:.4f} on the {done.labelled} rows with a label in {args.label!r}"
              if done.accuracy is not None else f"accuracy: no row has a value in {args.label!r}")
    return 0


def port_free(host: str, port: int) -> bool:
    """True when a server could listen on ``host:port`` now. SO_REUSEADDR, as the server itself
    uses: a port whose last server just stopped (its sockets in TIME_WAIT) is free.

    Raises:
        InputError: ``host`` is not an address of this machine.
    """
    import errno
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise InputError(f"--host {host}: not an address of this machine") from None
            return False
    return True


def dashboard_command(args: argparse.Namespace) -> int:
    import socket

    if not 0 < args.port < 65536:
        raise InputError(f"--port {args.port}: not a TCP port (1-65535)")
    try:
        socket.getaddrinfo(args.host, args.port)
    except OSError:
        raise InputError(f"--host {args.host}: not an address of this machine") from None
    if not port_free(args.host, args.port):
        raise InputError(f"--port {args.port}: already in use on {args.host} (a server may be running there; "
                         f"choose another port)")
    public = args.public_host or (socket.gethostname() if args.host in ("0.0.0.0", "::") else args.host)
    url = f"http://{public}:{args.port}"
    print(f"Prefect dashboard: {url}\nIn other shells:  export PREFECT_API_URL={url}/api\nCtrl-C stops the server.",
          flush=True)
    from flows.server import record_dashboard, server_env

    env = {**os.environ, **server_env(),
           # the browser UI calls the API at this address: it must follow --host/--port (Prefect's default is :4200)
           "PREFECT_UI_API_URL": f"{url}/api"}
    env.pop("PREFECT_API_URL", None)

    # runs, retrains and promotions of this Prefect home find this server without PREFECT_API_URL (the pid is
    # the server's: execve keeps it)
    record_dashboard(f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else public}:{args.port}/api")
    # --no-prompt: on a terminal `prefect server start` otherwise asks which profile to switch to, and waits
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "server", "start", "--host", args.host, "--port", str(args.port)]
    # replace this process, so Ctrl-C and kill reach the server itself and leave no orphan
    os.execve(sys.executable, cmd, env)
    return 0  # not reached

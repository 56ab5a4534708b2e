"""Where the pipeline's tasks run: threads of the flow's process, or a Dask cluster.

``engine.kind = "dask"`` runs every stage, approach and search point through Prefect's
``DaskTaskRunner`` (prefect-dask) in worker processes: on the cluster at ``engine.address``,
or on a ``distributed.LocalCluster`` started for the run (one single-threaded worker
process per core by default) and closed after. Before any stage runs, every worker is
checked: it must be able to write the data root at the flow's path, and report to the
flow's Prefect API. A cluster that cannot be reached, or a worker that fails a check, is
bad input (exit 2, one line), and nothing is written.

Under Dask a task's function travels pickled by value: a stage keeps locks, clients and
open files out of its own module's globals (`tasks.core.margin` holds the Keras lock).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from tasks.config import Config, EngineConfig
from tasks.errors import InputError, first_line

CONNECT_TIMEOUT_S = 10
MAX_WORKERS_PER_CORE = 4  # a local cluster's worker processes; each holds a Python with Keras (about 0.5 GB)
WORKER_WAIT_S = 60
HANDSHAKE_GRACE_S = 1.0  # after connect_timeout_s, for Dask's own error to arrive


def current_api_url() -> str | None:
    """The Prefect API this process reports to, or None (a temporary server would be started)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


@contextlib.contextmanager
def without_heartbeats() -> Iterator[None]:
    """Prefect's flow-run heartbeats off for the flow runs inside, unless ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``
    is set.

    Prefect's heartbeat thread sleeps a whole second at a time and each flow run waits for it to end: every
    run took at least about a second (a fully cached tiny run, in one process: 1.1 s with heartbeats, 0.46 s
    without). What heartbeats are for, noticing a run that died, marginflow records itself: the next run
    marks a killed run Crashed (`tasks.obs.runlog`). Flow runs that ``marginflow serve`` starts keep
    Prefect's default.
    """
    if os.environ.get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY"):
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@contextlib.contextmanager
def prefect_api(engine: EngineConfig, home: Path | None = None) -> Iterator[None]:
    """Make sure there is a Prefect API that Dask workers can report to.

    With the thread engine, or with ``PREFECT_API_URL`` already set, this does nothing.
    Otherwise a Prefect server is started on a free loopback port for the duration (what
    Prefect's temporary server would be, except that worker processes can reach it), and
    ``PREFECT_API_URL`` points at it, for this process and the local cluster's workers.
    """
    if engine.kind != "dask" or current_api_url():
        yield
        return
    import tempfile

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.server import drain_prefect_queues, free_port, start_server, stop_server, wait_healthy

    own_home = home is None
    home = home or Path(tempfile.mkdtemp(prefix="marginflow-prefect-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    server = start_server(home, port)
    try:
        wait_healthy(url, server)
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url
        try:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                yield
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous
    finally:
        drain_prefect_queues()  # while the server is up
        stop_server(server)
        if own_home:
            import shutil

            shutil.rmtree(home, ignore_errors=True)


def probe_worker(root: str, api_url: str | None) -> str | None:
    """Run on each worker: None when it can write ``root`` and reports to ``api_url``, else the problem."""
    from prefect.settings import get_current_settings

    probe = Path(root) / f".probe-{socket.gethostname()}-{os.getpid()}"
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        probe.write_text("marginflow worker probe\n")
        if probe.read_text() != "marginflow worker probe\n":
            return f"cannot read back what it wrote in the data root {root}"
    except OSError as e:
        return f"cannot write the data root {root} ({e.strerror or e})"
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    url = get_current_settings().api.url
    mine = str(url) if url else None
    if mine != api_url:
        return (f"reports to PREFECT_API_URL={mine or 'unset'}, the flow to {api_url}; "
                "set the same PREFECT_API_URL for the workers")
    return None


def check_workers(results: dict[str, str | None]) -> None:
    """Raise `InputError` for the first worker whose probe found a problem."""
    if not results:
        raise InputError("the Dask cluster has no workers")
    for worker, problem in sorted(results.items()):
        if problem:
            raise InputError(f"Dask worker {worker}: {problem}")


def _reachable(address: str, timeout: float) -> None:
    """A bounded TCP connect to ``address`` (``tcp://host:port``).

    Raises:
        InputError: the host does not resolve, or nothing accepts a connection there within ``timeout`` seconds.
    """
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (ValueError, OverflowError):
        raise InputError(f"--dask-address {address}: not an address (tcp://host:port, port 1-65535)") from None
    except socket.gaierror:
        raise InputError(f"--dask-address {address}: unknown host {host!r}") from None
    except TimeoutError:
        raise InputError(f"--dask-address {address}: no answer within {timeout:g} s "
                         "(engine.connect_timeout_s)") from None
    except OSError as e:
        raise InputError(f"--dask-address {address}: cannot connect ({e.strerror or e})") from None


def _connect(address: str, timeout: float = CONNECT_TIMEOUT_S):
    """A Dask client of the scheduler at ``address``, reached within ``timeout`` seconds.

    The TCP connect is bounded (`_reachable`); so is Dask's handshake, which `distributed.Client` would wait
    for forever on a port that accepts connections but is not a Dask scheduler: it runs in a thread that is
    abandoned (a daemon) if it has not finished in time (``timeout`` plus `HANDSHAKE_GRACE_S`, so that an error of
    Dask's own at ``timeout`` still names the cause).
    """
    import threading

    import distributed

    _reachable(address, timeout)
    done: dict[str, object] = {}

    def open_client() -> None:
        try:
            done["client"] = distributed.Client(address, timeout=timeout, set_as_default=False)
        except BaseException as e:  # noqa: BLE001  (reported below, in the caller's thread)
            done["error"] = e

    opener = threading.Thread(target=open_client, name="marginflow-dask-connect", daemon=True)
    opener.start()
    opener.join(timeout + HANDSHAKE_GRACE_S)
    if "client" not in done:
        error = done.get("error")
        reason = first_line(error) if error is not None else f"no Dask handshake within {timeout:g} s"
        raise InputError(f"--dask-address {address}: no Dask scheduler answers there ({reason})")
    client = done["client"]
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except (TimeoutError, OSError):
        client.close()
        raise InputError(f"--dask-address {address}: the scheduler has no workers "
                         f"(none joined within {WORKER_WAIT_S} s)") from None
    return client


def check_local_workers(engine: EngineConfig) -> None:
    """Refuse more local worker processes than `MAX_WORKERS_PER_CORE` per core of this machine (one line)."""
    cores = os.cpu_count() or 1
    if engine.workers is not None and engine.workers > MAX_WORKERS_PER_CORE * cores:
        raise InputError(f"--workers {engine.workers}: more than {MAX_WORKERS_PER_CORE} worker processes per core "
                         f"on this {cores}-core machine (at most {MAX_WORKERS_PER_CORE * cores})")


def _restore_nanny_environ(saved: dict[str, str]) -> None:
    """Put back what a local cluster's nannies set in this process's environment for the workers they spawn
    (Dask's ``distributed.nanny.pre-spawn-environ`` and ``environ`` settings: ``OMP_NUM_THREADS=1`` and the like,
    and ``PYTHONHASHSEED``), which Dask leaves set: every process started afterwards would run its thread pools on
    one thread (pyarrow's CSV reader among them)."""
    import dask

    keys = {"PYTHONHASHSEED", "__DASK_PARENT_PID"}
    for setting in ("distributed.nanny.pre-spawn-environ", "distributed.nanny.environ"):
        keys |= set(dask.config.get(setting, default={}) or {})
    for key in keys:
        if key in saved:
            os.environ[key] = saved[key]
        else:
            os.environ.pop(key, None)


@contextlib.contextmanager
def task_runner(engine: EngineConfig, root: str) -> Iterator[object | None]:
    """The task runner for ``engine`` (None: Prefect's default thread pool), checked and ready.

    For ``dask``: connects to (or starts) the cluster, probes every worker, and yields a
    ``DaskTaskRunner`` for the scheduler's address; the local cluster closes on exit.
    """
    if engine.kind == "threads":
        yield None
        return
    import logging

    import distributed
    from prefect_dask import DaskTaskRunner

    logging.getLogger("distributed").setLevel(logging.WARNING)  # the scheduler's INFO lines are noise here

    api_url = current_api_url()
    if api_url is None:
        raise InputError("engine dask needs PREFECT_API_URL: Dask workers must report to one Prefect API "
                         "(start `marginflow dashboard` and export the PREFECT_API_URL it prints)")
    check_local_workers(engine)
    with contextlib.ExitStack() as stack:
        address = engine.address
        if address is None:
            stack.callback(_restore_nanny_environ, dict(os.environ))  # runs last: after the cluster closed
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=engine.workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.ERROR))
            address = cluster.scheduler_address
        client = _connect(address, engine.connect_timeout_s)
        stack.callback(client.close)
        check_workers(client.run(probe_worker, root, api_url))
        yield DaskTaskRunner(address=address)


def run_pipeline(config: Config, data_dir: str, refresh: list[str] | None = None, until: str | None = None):
    """Run `flows.pipeline.pipeline` on the engine ``config.engine`` names (as a subflow inside a flow)."""
    from flows.pipeline import pipeline

    root = str(Path(data_dir).resolve())
    with task_runner(config.engine, root) as runner:
        flow = pipeline if runner is None else pipeline.with_options(task_runner=runner)
        return flow(config=config, data_dir=root, refresh=refresh, until=until)

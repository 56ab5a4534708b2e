"""The Dask engine: a real LocalCluster, a real `dask scheduler` with `dask worker` processes on
loopback, a worker killed with SIGKILL mid-run, and an address where nothing answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.engine import check_workers, probe_worker
from flows.server import free_port, stop_server
from tasks.errors import InputError
from tasks.ops.registry import Registry
from tests.conftest import ROOT, run_cli
from tests.helpers import TINY, run_main, without_timings

pytestmark = pytest.mark.slow
SIDE = ("raw_svc", "linear_hinge", "deep_hinge", "rff_svm")


def _metrics(result) -> dict:
    return json.loads((Path(result.stages["evaluate"].artifact) / "metrics.json").read_text())


def _pid(where: str) -> int:
    return int(where.rsplit(" ", 1)[1])


# ---------------------------------------------------------------- probes (no cluster needed)


def test_probe_names_what_a_worker_cannot_do(tmp_path, prefect_api):
    assert probe_worker(str(tmp_path / "root"), prefect_api) is None
    assert not list((tmp_path / "root").iterdir())  # the probe file is gone
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    assert "cannot write the data root" in probe_worker(str(blocker / "root"), prefect_api)
    assert "set the same PREFECT_API_URL" in probe_worker(str(tmp_path / "root"), "http://elsewhere:1/api")
    with pytest.raises(InputError, match=r"Dask worker tcp://b:2: cannot write"):
        check_workers({"tcp://a:1": None, "tcp://b:2": "cannot write the data root /x (Permission denied)"})
    with pytest.raises(InputError, match="no workers"):
        check_workers({})


# ---------------------------------------------------------------- a local cluster


@pytest.fixture
def csv(trained_runs):
    """The session's shared iris CSV (read-only; its run on threads is `trained_runs()`)."""
    return trained_runs().csv


# ---------------------------------------------------------------- an existing cluster


@pytest.fixture(scope="module")
def cluster(prefect_api, tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes (with nannies) on 127.0.0.1."""
    import distributed

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask")
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    dask = str(Path(sys.executable).parent / "dask")
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              stdout=open(logs / "scheduler.log", "wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                              start_new_session=True)]
    for i in range(2):
        procs.append(subprocess.Popen(
            [dask, "worker", address, "--nthreads", "1", "--no-dashboard", "--name", f"w{i}"],
            stdout=open(logs / f"worker{i}.log", "wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
            start_new_session=True))
    client = None
    try:
        deadline = time.monotonic() + 60
        while client is None:
            try:
                client = distributed.Client(address, timeout=5, set_as_default=False)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        client.wait_for_workers(2, timeout=90)
        yield address, client
    finally:
        if client is not None:
            client.close()
        for p in procs:
            stop_server(p)


def test_an_approx_fit_on_the_cluster_equals_the_thread_fit(cluster, tmp_path):
    """The approx solver's sums are computed per row-group partition on every worker and added in partition
    order: the model equals the one fitted in this process."""
    import distributed
    import numpy as np
    import pandas as pd

    from tasks._svc_stage import fit_streamed
    from tasks.config import DataConfig, ScaleConfig, SVCConfig
    from tasks.ingest import describe_source, ingest
    from tasks.scale import scale
    from tasks.store.tables import load_split

    address, client = cluster
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 4000)
    frame = pd.DataFrame(rng.normal(0, 1, (4000, 6)) + y[:, None], columns=[f"x{i}" for i in range(6)])
    frame["kind"] = np.asarray(["ash", "birch", "cedar"])[y]
    path = tmp_path / "rows.parquet"
    frame.to_parquet(path, index=False)
    data = DataConfig(dataset=None, input=str(path), label="kind", batch_rows=500)
    root = str(tmp_path / "data")
    scaled = scale.fn(ingest.fn(describe_source(data), data, root=root), ScaleConfig(), root=root)
    config = SVCConfig(solver="approx", approx_components=120, class_weight="balanced")
    here, here_record = fit_streamed(scaled, config)
    with distributed.get_task_stream(client) as stream:
        there, there_record = client.submit(fit_streamed, scaled, config, pure=False).result(timeout=300)
    assert any("fit_streamed" in str(t["key"]) for t in stream.data)  # fitted in a worker
    assert here_record["partitions"] == there_record["partitions"] > 1
    ran = {t["worker"] for t in stream.data if "partition_moments" in str(t["key"])}
    assert len(ran) == 2, stream.data  # the partitions' sums were computed on both workers
    X, _ = load_split(scaled, "test")
    np.testing.assert_allclose(there.coef_, here.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(there.decision_function(X), here.decision_function(X), rtol=1e-9, atol=1e-12)
    assert np.array_equal(there.predict(X), here.predict(X)) and here_record == there_record


def _tiny_cli_args(csv: Path, data: Path, *extra: str) -> list[str]:
    args = ["run", "--input", str(csv), "--label", "species", "--data-dir", str(data), "--json"]
    for item in [*TINY, *extra]:
        args += ["--set", item]
    return args


def test_cli_runs_on_an_existing_cluster_in_its_workers_with_the_thread_engines_metrics_and_caches(
        cluster, trained_runs, csv, tmp_path):
    """``--dask-address``: the side stages run in the cluster's worker processes, the metrics are the thread
    engine's (the session's shared run of the same config), the dashboard's stage table says where each stage ran,
    and the same command again is all cache hits. (A cluster the engine starts itself, ``engine.kind = "dask"``:
    `test_a_finished_task_that_dask_runs_again_is_a_cache_hit`.)"""
    address, client = cluster
    workers = set(client.run(os.getpid).values())
    args = (*_tiny_cli_args(csv, tmp_path / "data"), "--dask-address", address)
    proc = run_main(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["engine"] == "dask" and {s["status"] for s in out["stages"].values()} == {"ran"}
    pids = {_pid(out["stages"][stage]["where"]) for stage in SIDE}
    assert pids <= workers, out["stages"]
    assert without_timings(out["metrics"]) == without_timings(_metrics(trained_runs().result))
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:  # the run's stage table in the dashboard, with where each ran
        tables = [a.data for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["marginflow-run"])), limit=200)]
    assert any("(engine: dask)" in t and f"pid {min(pids)}" in t for t in tables)
    assert out["model"] == "v0001"
    again = run_main(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    out = json.loads(again.stdout)
    assert {s["status"] for s in out["stages"].values()} == {"cached"} and out["model"] == "v0001"
    assert Registry(tmp_path / "data").names() == ["v0001"]  # recognised as registered, not a second version


def test_a_worker_killed_mid_run_loses_nothing(cluster, csv, tmp_path):
    address, client = cluster
    data = tmp_path / "data"
    slow = ["encoder.epochs=60", "encoder.patience=60", "rff_svm.epochs=60", "linear_hinge.epochs=60"]
    run = subprocess.Popen([str(Path(sys.executable).parent / "marginflow"), *_tiny_cli_args(csv, data, *slow),
                            "--dask-address", address], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, cwd=ROOT)
    victim = None
    deadline = time.monotonic() + 240
    while victim is None and time.monotonic() < deadline and run.poll() is None:
        busy = [w for w, keys in client.processing().items() if keys]
        if busy and (data / "artifacts" / "scaled").exists():
            victim = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.2)
    assert victim is not None, "no worker was busy while the run went on"
    first_out, first_err = run.communicate(timeout=600)
    finished = {json.loads(p.read_text())["stage"] for p in (data / "cache").glob("*.json")}
    client.wait_for_workers(2, timeout=90)  # the nanny restarts the killed worker
    proc = run_main(*_tiny_cli_args(csv, data, *slow), "--dask-address", address)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert all(out["stages"][s]["status"] == "cached" for s in finished if s in out["stages"]), (finished, out["stages"])
    if run.returncode == 0:  # Dask ran the lost task again on the other worker: the same model, once
        assert json.loads(first_out)["model"] == out["model"] == "v0001"
    else:
        assert "marginflow: " in first_err.strip().splitlines()[-1]
    assert not list((data / "artifacts" / ".staging").glob("*/*"))


def test_an_unreachable_cluster_is_one_line_and_nothing_written(prefect_api, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = run_cli("run", "--dataset", "iris", "--data-dir", str(tmp_path / "d"), "--dask-address", address)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"marginflow: error: --dask-address {address}: cannot connect")
    assert not (tmp_path / "d").exists()


def test_a_finished_task_that_dask_runs_again_is_a_cache_hit(prefect_api, tmp_path):
    """prefect issue 15442: a worker dies holding a finished task's result; Dask runs the task
    again elsewhere for the task that needs it, and the content cache makes that a hit."""
    from prefect import flow
    from prefect.client.orchestration import get_client

    from flows.engine import task_runner
    from tasks.config import EngineConfig
    from tasks.config_text import load_config
    from tasks.ingest import describe_source, ingest
    from tasks.scale import scale
    from tasks.store.cache import describe

    config = load_config(None, [], {"data.dataset": "iris"})
    root = str(tmp_path / "data")
    environ = dict(os.environ)
    with task_runner(EngineConfig(kind="dask", workers=2), root) as runner:

        @flow(task_runner=runner)
        def killed_between():
            first = ingest.submit(describe_source(config.data), config.data, root=root)
            first.wait()
            os.kill(_pid(describe(first.state)["where"]), signal.SIGKILL)
            second = scale.submit(first, config.scale, root=root)
            second.wait()
            return first.task_run_id, describe(second.state)

        task_run_id, scaled = killed_between()
    # the local cluster's nannies set OMP_NUM_THREADS=1 and more here for their workers: put back once it closed
    assert dict(os.environ) == environ
    assert scaled["status"] == "ran"
    with get_client(sync_client=True) as client:
        states = [s.name for s in client.read_task_run_states(task_run_id)]
    assert states.count("Running") == 2 and states[-1] == "Cached", states  # ran once, then a hit


@pytest.mark.parametrize("listener", ["prefect", "silent"])
def test_a_dask_address_that_is_not_a_dask_scheduler_is_refused_within_its_timeout(prefect_api, listener, tmp_path,
                                                                                  capsys):
    """A live port that is not Dask (the Prefect server's HTTP port; a socket that accepts and never speaks):
    one line, exit 2, within the connect timeout plus a few seconds; nothing written."""
    import socket
    import threading
    import time
    from urllib.parse import urlparse

    from flows.cli import main

    server = None
    if listener == "prefect":
        port = urlparse(prefect_api).port
    else:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        threading.Thread(target=lambda: [server.accept() for _ in range(8)], daemon=True).start()
    try:
        start = time.monotonic()
        code = main(["run", "--dataset", "iris", "--data-dir", str(tmp_path / "data"), "--dask-address",
                     f"tcp://127.0.0.1:{port}", "--set", "engine.connect_timeout_s=2"])
        took = time.monotonic() - start
    finally:
        if server is not None:
            server.close()
    err = capsys.readouterr().err
    assert code == 2 and f"--dask-address tcp://127.0.0.1:{port}: no Dask scheduler answers there" in err, err
    # took: a guard against the hang this test is about (about 3 s expected), not a speed claim
    assert err.strip().splitlines()[-1].startswith("marginflow: error:") and took < 30
    assert not (tmp_path / "data" / "artifacts").exists()

"""The scheduled path end to end: ``marginflow serve`` against a real Prefect server.

The session's server (conftest) runs on a free loopback port. ``marginflow serve`` runs as
a user would start it, in its own process group; the test triggers the deployment with
``run_deployment`` and checks, through the server's REST API only, that the flow run
completed and published its artifacts. The serve process is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flows.server import stop_server
from tests.conftest import ROOT
from tests.helpers import iris_csv

pytestmark = pytest.mark.slow

CONFIG = """
[data]
label = "species"
[encoder]
kind = "mlp"
hidden = [16]
epochs = 4
dropout = 0.0
[evaluate]
approaches = ["features_svc", "raw_svc"]
"""


def _api(base: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}{path}", data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _until(what: str, fn, timeout: float, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"marginflow serve exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def test_served_retrain_deployment_runs_and_publishes_its_artifacts(prefect_api, tmp_path):
    csv = iris_csv(tmp_path / "iris.csv")
    config = tmp_path / "retrain.toml"
    config.write_text(CONFIG.replace('label = "species"', f'input = "{csv}"\nlabel = "species"'))
    data = tmp_path / "data"
    log = tmp_path / "serve.log"
    exe = Path(sys.executable).parent / "marginflow"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "serve", "--cron", "0 3 * * *", "--name", "nightly", "--config", str(config),
             "--data-dir", str(data)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        def deployment():
            found = _api(prefect_api, "/deployments/filter", {"deployments": {"name": {"any_": ["nightly"]}}})
            return found[0] if found else None

        dep = _until("the deployment", deployment, 120, proc, log)
        assert [s["schedule"]["cron"] for s in dep["schedules"]] == ["0 3 * * *"]

        from prefect.deployments import run_deployment

        flow_run = run_deployment("marginflow-retrain/nightly", timeout=0)

        def finished():
            run = _api(prefect_api, f"/flow_runs/{flow_run.id}")
            return run if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        run = _until("the flow run to finish", finished, 300, proc, log)
        assert run["state_type"] == "COMPLETED", log.read_text()[-3000:]
        own = _api(prefect_api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [str(flow_run.id)]}}})
        assert "marginflow-decision" in {a["key"] for a in own}
        children = _api(prefect_api, "/flow_runs/filter",
                        {"flow_runs": {"parent_flow_run_id": {"operator": "and_", "any_": [str(flow_run.id)]}}})
        pipeline_runs = [c["id"] for c in children if c["state_type"] == "COMPLETED"]
        assert pipeline_runs, "the pipeline subflow run is missing"
        arts = _api(prefect_api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": pipeline_runs}}})
        assert {"marginflow-report", "marginflow-approaches"} <= {a["key"] for a in arts}
        assert json.loads((data / "models" / "champion.json").read_text())["version"] == "v0001"
    finally:
        stop_server(proc)  # SIGTERM to its process group, SIGKILL after 20 s

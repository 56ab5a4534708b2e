"""Crashes at named points: a real subprocess kills itself with SIGKILL where ``MARGINFLOW_FAULT``
names (`tasks.faults`), then the same command runs again. What must survive: the metrics,
a registry with exactly the right versions, a champion and a consistent history, and
nothing left in a staging folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.ops.registry import Registry
from tests.conftest import ROOT, run_cli
from tests.helpers import TINY, iris_csv, run_main, without_timings

pytestmark = pytest.mark.slow
KILLED = -signal.SIGKILL
APPROACHES = "evaluate.approaches=['features_svc', 'raw_svc']"


def _run_args(csv: Path, data: Path, *extra: str) -> list[str]:
    args = ["run", "--input", str(csv), "--label", "species", "--data-dir", str(data), "--json"]
    for item in [*TINY, APPROACHES, *extra]:
        args += ["--set", item]
    return args


def _fault(point: str) -> dict[str, str]:
    return {"MARGINFLOW_FAULT": point}


def _consistent(data: Path) -> Registry:
    """The registry's invariants; returns it for further checks."""
    registry = Registry(data)
    names = registry.names()
    history = registry.history()
    registered = [e["version"] for e in history if e["event"] == "registered"]
    assert sorted(registered) == names, (registered, names)  # each version exactly once
    promoted = [e["version"] for e in history if e["event"] == "promoted"]
    champion = registry.champion()
    assert champion in names and promoted and promoted[-1] == champion, (promoted, champion)
    assert {v.problem for v in registry.versions()} == {None}
    for staging in (data / "artifacts" / ".staging", data / "models" / ".staging"):
        assert not staging.exists() or not list(staging.iterdir()), list(staging.iterdir())
    assert not list((data / "models").glob(".champion-*"))
    return registry


def _metrics(stdout: str) -> dict:
    """The metrics a ``run --json`` printed, as `_comparable`."""
    return _comparable(json.loads(stdout)["metrics"])


def _comparable(metrics: dict) -> dict:
    """metrics.json less the measured seconds and the input's path (each test has its own copy)."""
    metrics = without_timings(metrics)
    metrics.pop("source")
    return metrics


def _killed_run_id(data: Path) -> str:
    """The flow run id of the one run record a killed run left (its flow run is still Running on the server)."""
    left = [json.loads(p.read_text())["flow_run_id"] for p in (data / "runs").glob("*.json")]
    assert len(left) == 1, left  # the killed run's own (the run before it marked its predecessor Crashed)
    return left[0]


def _all_crashed(flow_run_ids: list[str]) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        assert [client.read_flow_run(i).state.type.value for i in flow_run_ids] == ["CRASHED"] * len(flow_run_ids)


def test_a_run_killed_while_registering_reruns_to_the_same_result(two_bundles, tmp_path):
    """Killed with v0001 in place but no history line and no champion (the first registration); the other
    registration and promotion points: the faster tests below, on registry calls alone."""
    csv, data = iris_csv(tmp_path / "iris.csv"), tmp_path / "data"
    killed = run_cli(*_run_args(csv, data), env=_fault("register:renamed"))
    assert killed.returncode == KILLED, (killed.returncode, killed.stderr[-2000:])
    left = _killed_run_id(data)
    again = run_main(*_run_args(csv, data))  # the same command again (in this process: what it finds is the test)
    assert again.returncode == 0, again.stderr[-2000:]
    _all_crashed([left])
    assert not list((data / "runs").glob("*.json"))
    assert _metrics(again.stdout) == two_bundles["metrics"]
    registry = _consistent(data)
    assert registry.names() == ["v0001"] and registry.champion() == "v0001"


_REGISTER = "import sys; from tasks.ops.registry import Registry; print(Registry(sys.argv[1]).register(sys.argv[2]))"


@pytest.fixture
def two_bundles(trained_runs) -> dict:
    """Two uninterrupted runs (the session's shared ones, run in the test process: the same config as the
    killed commands'): the bundle folders of two models (svc.C 10, the default, and 0.5), and the metrics of
    the first (what every interrupted run must reach again)."""
    runs = [trained_runs(APPROACHES), trained_runs(APPROACHES, "svc.C=0.5")]
    metrics = json.loads((Path(runs[0].result.stages["evaluate"].artifact) / "metrics.json").read_text())
    return {"bundles": [r.result.stages["bundle"].artifact for r in runs], "metrics": _comparable(metrics)}


def _register(root: Path, bundle: str, point: str | None = None) -> int:
    env = {**os.environ, **(_fault(point) if point else {})}
    return subprocess.run([sys.executable, "-c", _REGISTER, str(root), bundle], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=120).returncode


@pytest.mark.parametrize(("point", "first"), [
    ("register:staged", True), ("register:logged", True),
    ("champion:replaced", True),  # the first registration's own promotion
    ("register:renamed", False), ("register:logged", False),
])
def test_a_registration_killed_at_a_point(two_bundles, point, first, tmp_path, capsys):
    """Killed while registering the first model (which becomes champion) or a second one; then
    `marginflow models` (every registry command repairs first) and the same registration again."""
    from flows.cli import main

    bundles = two_bundles["bundles"]
    if not first:
        Registry(tmp_path).register(bundles[0])
    bundle = bundles[0] if first else bundles[1]
    assert _register(tmp_path, bundle, point) == KILLED
    assert main(["models", "--data-dir", str(tmp_path)]) == 0
    if first and point == "register:staged":  # killed before the rename: no version, and no leftover copy
        assert Registry(tmp_path).names() == [] and not list((tmp_path / "models" / ".staging").iterdir())
    else:
        registry = _consistent(tmp_path)
        assert registry.names() == (["v0001"] if first else ["v0001", "v0002"]) and registry.champion() == "v0001"
    assert Registry(tmp_path).register(bundle) == ("v0001" if first else "v0002", point == "register:staged")
    assert _consistent(tmp_path).champion() == "v0001"


@pytest.mark.parametrize(("point", "champion"), [("champion:before-replace", "v0001"), ("champion:replaced", "v0002")])
def test_a_promotion_killed_at_a_point(two_bundles, point, champion, tmp_path):
    for bundle in two_bundles["bundles"]:
        Registry(tmp_path).register(bundle)
    killed = run_cli("promote", "v0002", "--data-dir", str(tmp_path), env=_fault(point))
    assert killed.returncode == KILLED, killed.stderr
    listed = run_main("models", "--data-dir", str(tmp_path))  # every registry command repairs first
    assert listed.returncode == 0, listed.stderr
    assert _consistent(tmp_path).champion() == champion
    Registry(tmp_path).promote("v0002")
    assert _consistent(tmp_path).champion() == "v0002"


def test_a_run_killed_inside_each_stage_in_turn_still_ends_whole(two_bundles, tmp_path):
    """One data root, killed at every point in turn (each rerun gets one stage further), then a clean run: the
    same metrics, one version, a champion, nothing in staging, every killed flow run marked Crashed."""
    csv, data = iris_csv(tmp_path / "iris.csv"), tmp_path / "data"
    killed_runs = []
    # each of these runs after the previous one's stage: the kill is certain. First the ingested table complete
    # but still in the staging folder; then each stage's artifact in place without its cache record
    for point in ["artifact:before-rename", *(f"stage:{s}" for s in
                                              ["ingest", "scale", "train_encoder", "extract_features", "train_svc"])]:
        killed = run_cli(*_run_args(csv, data), env=_fault(point))
        assert killed.returncode == KILLED, (point, killed.returncode, killed.stderr[-2000:])
        killed_runs.append(_killed_run_id(data))
    # these run beside others: an earlier run may already have finished them, and then the run completes
    for stage in ["raw_svc", "bundle", "evaluate"]:
        run = run_cli(*_run_args(csv, data), env=_fault(f"stage:{stage}"))
        assert run.returncode in (KILLED, 0), (stage, run.returncode, run.stderr[-2000:])
        if run.returncode == KILLED:
            killed_runs.append(_killed_run_id(data))
    again = run_main(*_run_args(csv, data))
    assert again.returncode == 0, again.stderr[-2000:]
    assert _metrics(again.stdout) == two_bundles["metrics"]
    assert json.loads(again.stdout)["stages"]["ingest"]["status"] == "cached"
    _all_crashed(killed_runs)
    assert not list((data / "runs").glob("*.json"))
    registry = _consistent(data)
    assert registry.names() == ["v0001"] and registry.champion() == "v0001"


def test_a_killed_run_leaves_no_temporary_prefect_server_running(csv, prefect_home, tmp_path):
    """Without PREFECT_API_URL a run starts its own server; a kill -9 of the run takes that server down too."""
    import re
    import tempfile
    import time

    from flows.server import answers

    exe = Path(sys.executable).parent / "marginflow"
    env = {**os.environ, "PREFECT_API_URL": "", "PREFECT_HOME": str(prefect_home)}
    folders = set(Path(tempfile.gettempdir()).glob("marginflow-prefect-*"))
    proc = subprocess.Popen([str(exe), *_run_args(csv, tmp_path / "data")], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = None
    for line in proc.stderr:  # the line that says which server, once it answers
        m = re.search(r"a temporary server, (http://\S+/api)", line)
        if m:
            url = m.group(1)
            break
    assert url and answers(url), "the run never said which server it uses"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while answers(url) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not answers(url), f"the temporary server at {url} outlived its run"
    assert set(Path(tempfile.gettempdir()).glob("marginflow-prefect-*")) <= folders  # no server folder left


def test_two_identical_runs_started_together_register_one_version(csv, tmp_path):
    """Both train (neither finds the other's cache yet) and write byte-identical models: the registry, under its
    lock, recognises the second as the first and keeps one version."""
    exe = Path(sys.executable).parent / "marginflow"
    data = tmp_path / "data"
    procs = [subprocess.Popen([str(exe), *_run_args(csv, data)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    models = {json.loads(out)["model"] for out, _ in outs}
    assert models == {"v0001"} and Registry(data).names() == ["v0001"]
    _consistent(data)

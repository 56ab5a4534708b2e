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
from tests.helpers import TINY, without_timings

pytestmark = pytest.mark.slow
KILLED = -signal.SIGKILL


def _run_args(csv: Path, data: Path, *extra: str) -> list[str]:
    args = ["run", "--input", str(csv), "--label", "species", "--data-dir", str(data), "--json"]
    for item in [*TINY, "evaluate.approaches=['features_svc', 'raw_svc']", *extra]:
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
    return without_timings(json.loads(stdout)["metrics"])


@pytest.fixture(scope="module")
def reference(prefect_api, tmp_path_factory):
    """Metrics of an uninterrupted run (the same data and config)."""
    from tests.helpers import iris_csv

    where = tmp_path_factory.mktemp("reference")
    csv = iris_csv(where / "iris.csv")
    proc = run_cli(*_run_args(csv, where / "data"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _metrics(proc.stdout)


@pytest.mark.parametrize("point", [
    "stage:train_encoder",      # the encoder's artifact is written, its cache record is not
    "artifact:before-rename",   # a complete artifact still in the staging folder
    "artifact:after-rename",    # an artifact in place, no cache record
    "stage:bundle",
    "register:staged",          # the version's copy is in models/.staging
    "register:renamed",         # v0001 in place: no history line, no champion
    "register:logged",          # v0001 registered and logged, no champion
    "champion:before-replace",  # the new pointer written beside champion.json
    "champion:replaced",        # champion.json replaced, its history line not written
])
def test_a_run_killed_at_a_point_reruns_to_the_same_result(reference, point, tmp_path):
    from tests.helpers import iris_csv

    csv, data = iris_csv(tmp_path / "iris.csv"), tmp_path / "data"
    killed = run_cli(*_run_args(csv, data), env=_fault(point))
    assert killed.returncode == KILLED, (point, killed.returncode, killed.stderr[-2000:])
    again = run_cli(*_run_args(csv, data))
    assert again.returncode == 0, again.stderr[-2000:]
    assert _metrics(again.stdout) == reference
    registry = _consistent(data)
    assert registry.names() == ["v0001"] and registry.champion() == "v0001"


_REGISTER = "import sys; from tasks.ops.registry import Registry; print(Registry(sys.argv[1]).register(sys.argv[2]))"


@pytest.fixture(scope="module")
def two_bundles(prefect_api, tmp_path_factory) -> list[str]:
    """The bundle folders of two different models (svc.C 10 and 0.5)."""
    from tests.helpers import iris_csv

    where = tmp_path_factory.mktemp("bundles")
    csv = iris_csv(where / "iris.csv")
    bundles = []
    for c in ("10.0", "0.5"):
        proc = run_cli(*_run_args(csv, where / "data", f"svc.C={c}"))
        assert proc.returncode == 0, proc.stderr[-2000:]
        bundles.append(json.loads(proc.stdout)["stages"]["bundle"]["artifact"])
    return bundles


def _register(root: Path, bundle: str, point: str | None = None) -> int:
    env = {**os.environ, **(_fault(point) if point else {})}
    return subprocess.run([sys.executable, "-c", _REGISTER, str(root), bundle], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=120).returncode


@pytest.mark.parametrize("point", ["register:staged", "register:renamed", "register:logged"])
def test_a_second_registration_killed_at_a_point(two_bundles, point, tmp_path):
    assert _register(tmp_path, two_bundles[0]) == 0
    assert _register(tmp_path, two_bundles[1], point) == KILLED
    assert _register(tmp_path, two_bundles[1]) == 0
    registry = _consistent(tmp_path)
    assert registry.names() == ["v0001", "v0002"] and registry.champion() == "v0001"


@pytest.mark.parametrize(("point", "champion"), [("champion:before-replace", "v0001"), ("champion:replaced", "v0002")])
def test_a_promotion_killed_at_a_point(two_bundles, point, champion, tmp_path):
    for bundle in two_bundles:
        assert _register(tmp_path, bundle) == 0
    killed = run_cli("promote", "v0002", "--data-dir", str(tmp_path), env=_fault(point))
    assert killed.returncode == KILLED, killed.stderr
    listed = run_cli("models", "--data-dir", str(tmp_path))  # every registry command repairs first
    assert listed.returncode == 0, listed.stderr
    assert _consistent(tmp_path).champion() == champion
    assert run_cli("promote", "v0002", "--data-dir", str(tmp_path)).returncode == 0
    assert _consistent(tmp_path).champion() == "v0002"

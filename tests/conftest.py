"""Test isolation: a temp PREFECT_HOME and one real Prefect server for the whole session.

The server is started in `pytest_configure`, before any test module imports Prefect, so
that every in-process flow run and every CLI subprocess uses it through
``PREFECT_API_URL`` instead of starting a temporary server of its own. It is waited for
lazily (the `prefect_api` fixture) so unit-only runs do not wait on it.

Beside it, an empty Prefect database at Prefect's current schema is made once (`prefect_home`): a test that needs
a Prefect home of its own starts from a copy instead of migrating a new database (Prefect's 115 SQLite migrations
cost a new home's first server about 6 CPU-s here: 10.5 CPU-s to answering instead of 4-5).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest

from flows.server import free_port, start_server, stop_server, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
_STATE: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    home = Path(tempfile.mkdtemp(prefix="marginflow-prefect-"))
    os.environ.update({
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "KERAS_BACKEND": "jax",
        "MARGINFLOW_JAX_CACHE": str(home / "jax"),  # compiled XLA code, shared by the session's processes
        # every compile cached, also the small ones (the suite compiles the same tiny networks in many processes:
        # a tiny CLI run took 11.3 user-s instead of 14.5 with the cache warm)
        "MARGINFLOW_JAX_CACHE_MIN_S": "0",
    })
    os.environ.pop("MARGINFLOW_DATA_DIR", None)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    os.environ["PREFECT_API_URL"] = url
    _STATE.update(home=home, url=url, proc=start_server(home, port), empty=_make_empty_database(home))


_EMPTY = "empty-home"  # under the session's PREFECT_HOME: an empty, migrated prefect.db once it is there
_MIGRATE_THEN_RENAME = """
import os, subprocess, sys
subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "server", "database", "upgrade", "-y"], check=True)
os.replace({building!r}, {done!r})
"""


def _make_empty_database(session_home: Path) -> subprocess.Popen:
    """Start ``prefect server database upgrade`` into a new home, renamed to ``<session home>/empty-home`` when it
    succeeded (so that its presence means complete)."""
    building = session_home / f"{_EMPTY}.partial"
    building.mkdir()
    env = {**os.environ, "PREFECT_HOME": str(building)}
    env.pop("PREFECT_API_URL")
    script = _MIGRATE_THEN_RENAME.format(building=str(building), done=str(session_home / _EMPTY))
    with open(session_home / f"{_EMPTY}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: stopped with its child at the end


def pytest_unconfigure(config: pytest.Config) -> None:
    proc = _STATE.get("proc")
    if isinstance(proc, subprocess.Popen):
        stop_server(proc)
    empty = _STATE.get("empty")
    if isinstance(empty, subprocess.Popen):
        stop_server(empty)  # SIGTERM to its process group (the migration, if it is still going), then SIGKILL
    home = _STATE.get("home")
    if isinstance(home, Path):
        shutil.rmtree(home, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The test scopes that hold a test marked ``slow`` (real processes, servers, clusters) first, then the others;
    within each group the scopes with more tests first (pytest-xdist's own order); each scope's tests together and
    in order. ``make test`` hands scopes to its two workers in this order (``--dist loadscope
    --no-loadscope-reorder``), so that the long ones start early and the workers end on short ones: ordered by test
    count alone, the benchmark smokes (one test per class, 8-40 s each) came last, and one worker waited for the
    other's (29 s in one measured run)."""
    def scope(item: pytest.Item) -> str:  # pytest-xdist's loadscope unit: the class, else the module
        return item.nodeid.rsplit("::", 1)[0] if item.cls is not None else item.nodeid.split("::", 1)[0]

    scopes = {item.nodeid: scope(item) for item in items}
    slow = {scopes[item.nodeid] for item in items if item.get_closest_marker("slow")}
    count = Counter(scopes.values())
    first: dict[str, int] = {}
    for i, s in enumerate(scopes.values()):
        first.setdefault(s, i)

    def order(item: pytest.Item) -> tuple[bool, int, int]:
        s = scopes[item.nodeid]
        return s not in slow, -count[s], first[s]

    items.sort(key=order)


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """The session's Prefect API URL, once the server answers (under pytest-xdist, the controller's server)."""
    url = os.environ["PREFECT_API_URL"]
    wait_healthy(url, _STATE.get("proc"))  # type: ignore[arg-type]
    return url


@pytest.fixture(scope="session")
def _empty_prefect_database() -> Path:
    """The session's empty, migrated ``prefect.db`` (under pytest-xdist, made by the controller), once it is made."""
    import time

    session_home = Path(os.environ["PREFECT_HOME"])
    db, deadline = session_home / _EMPTY / "prefect.db", time.monotonic() + 180
    while not db.is_file():
        if time.monotonic() > deadline:
            said = (session_home / f"{_EMPTY}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"no empty Prefect database after 180 s: {said}")
        time.sleep(0.2)
    return db


@pytest.fixture
def prefect_home(_empty_prefect_database, tmp_path) -> Path:
    """A new Prefect home for one test (``tmp_path/home``): no runs, no profiles, no dashboard record; its database
    a copy of the session's empty one, so the first server started in it does not migrate one first."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(_empty_prefect_database, home / "prefect.db")
    return home


@pytest.fixture(scope="session", autouse=True)
def _flow_runs_as_the_cli_runs_them():
    """Flow runs called in the test process run as the CLI's do: without Prefect's heartbeats
    (`flows.engine.without_heartbeats`: at least a second a flow run otherwise)."""
    from flows.engine import without_heartbeats

    with without_heartbeats():
        yield


@pytest.fixture
def csv(tmp_path) -> Path:
    """Iris as a CSV with a string label column ``species``, in the test's temp dir."""
    from tests.helpers import iris_csv

    return iris_csv(tmp_path / "iris.csv")


class Trained(NamedTuple):
    """A finished run on iris: its CSV, its data root and what the flow returned (artifacts under that root)."""

    csv: Path
    data: Path
    result: object


@pytest.fixture(scope="session")
def trained_runs(prefect_api, tmp_path_factory):
    """``trained_runs(*overrides)``: a finished tiny run (`tests.helpers.TINY` plus ``overrides``) on iris, made
    once per test process and shared by every test that asks for the same overrides. Shared means read-only:
    a test that changes the CSV, the data root or a registry copies the root first (`copy_root`); the copy's
    cache records are relative, so a run on it with the same CSV is all cache hits."""
    from flows.pipeline import pipeline
    from tests.helpers import iris_csv, tiny_config

    made: dict[tuple[str, ...], Trained] = {}

    def get(*overrides: str) -> Trained:
        if overrides not in made:
            where = tmp_path_factory.mktemp("trained")
            csv = iris_csv(where / "iris.csv")
            result = pipeline(config=tiny_config(csv, *overrides), data_dir=str(where / "data"))
            made[overrides] = Trained(csv, where / "data", result)
        return made[overrides]

    return get


def copy_root(data: Path, where: Path) -> Path:
    """A copy of data root ``data`` at ``where/data`` (links kept as links), to change freely."""
    root = where / "data"
    shutil.copytree(data, root, symlinks=True)
    return root


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed ``marginflow`` command as a user would."""
    exe = Path(sys.executable).parent / "marginflow"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT)

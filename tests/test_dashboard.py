"""What a user sees: the dashboard on any port, the flow graph, runs that can be found and
compared, the report and the registry in the UI, and the terminal while a run goes on."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from flows.pipeline import pipeline, run_tags
from flows.plan import CANDIDATE_TASK, SCORE_TASK, SEARCH_TASK, SOLVER_TASK, Candidates, Grid, Solver, stages_needed
from flows.server import free_port, stop_server, wait_healthy
from tasks._publish import models_key
from tasks.config_text import run_name
from tasks.obs.progress import OwnTime, waited
from tasks.ops.registry import Registry
from tasks.ops.runs import root_key
from tests.conftest import ROOT, copy_root, run_cli
from tests.helpers import TINY, run_main, tiny_config


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def _start_dashboard(port: int, home: Path) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "marginflow"
    env = {**os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    return subprocess.Popen([str(exe), "dashboard", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_dashboard_on_a_non_default_port_serves_a_ui_that_reaches_its_api_prints_it_stops_and_restarts_at_once(
        prefect_home):
    port = free_port()
    while port == 4200:
        port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start_dashboard(port, prefect_home)
    try:
        wait_healthy(f"{base}/api", proc)
        status, body = _get(f"{base}/ui-settings")
        api_url = json.loads(body)["api_url"]
        assert status == 200 and api_url == f"{base}/api"  # not Prefect's default :4200
        assert _get(f"{api_url}/health")[0] == 200  # the API the browser UI calls answers
        assert _get(f"{base}/")[0] == 200  # the UI itself
        busy = run_cli("dashboard", "--port", str(port))
        assert busy.returncode == 2 and f"--port {port}: already in use" in busy.stderr
    finally:
        stop_server(proc)
    assert proc.poll() is not None  # stopped by its process group's pid
    assert f"export PREFECT_API_URL={base}/api" in proc.stdout.read().decode()  # it said where its API is
    again = _start_dashboard(port, prefect_home)  # at once: the old sockets may be in TIME_WAIT
    try:
        wait_healthy(f"{base}/api", again)
        assert json.loads(_get(f"{base}/ui-settings")[1])["api_url"] == f"{base}/api"
    finally:
        stop_server(again)


def test_dashboard_on_a_terminal_never_prompts_and_leaves_the_prefect_profiles_alone(prefect_home):
    """On a terminal, `prefect server start` asks which profile to switch to when the active one has no
    PREFECT_API_URL and others name the server's address, and waits; then rewrites profiles.toml. The
    dashboard, started on a pseudo-terminal nobody types into, answers /api/health and leaves the file be."""
    port, home = free_port(), prefect_home
    url = f"http://127.0.0.1:{port}/api"
    profiles = home / "profiles.toml"
    profiles.write_text('active = "ephemeral"\n\n[profiles.ephemeral]\nPREFECT_SERVER_ALLOW_EPHEMERAL_MODE = "true"\n\n'
                        f'[profiles.one]\nPREFECT_API_URL = "{url}"\n\n[profiles.two]\nPREFECT_API_URL = "{url}"\n')
    before = profiles.read_bytes()
    exe = Path(sys.executable).parent / "marginflow"
    env = {**os.environ, "PREFECT_HOME": str(home), "TERM": "xterm"}
    for key in ("PREFECT_API_URL", "PREFECT_CLI_PROMPT"):
        env.pop(key, None)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(exe), "dashboard", "--port", str(port)], env=env, stdin=follower, stdout=follower,
                            stderr=follower, start_new_session=True)
    os.close(follower)
    shown = bytearray()
    stop = threading.Event()

    def drain() -> None:  # keep reading the terminal, so the server never blocks on a full pty
        while not stop.is_set():
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    shown.extend(os.read(leader, 4096))
                except OSError:
                    return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        wait_healthy(url, proc, timeout=90)
        assert b"How would you like" not in shown and b"Which profile" not in shown
    finally:
        stop_server(proc)
        stop.set()
        reader.join(5)
        os.close(leader)
    assert profiles.read_bytes() == before


@pytest.mark.slow
def test_a_run_finds_the_running_dashboard_and_falls_back_when_it_is_gone(prefect_home, trained_runs, tmp_path):
    """Without PREFECT_API_URL, a run reports to the dashboard running for its Prefect home (recorded by
    `marginflow dashboard`, checked alive and answering); once it stops, a temporary server again. Both find the
    cache of a run that reported to yet another server (a copy of the session's shared run: nothing to train)."""
    port, home, shared = free_port(), prefect_home, trained_runs()
    args = ("run", "--input", str(shared.csv), "--label", "species", "--data-dir",
            str(copy_root(shared.data, tmp_path)), "--json", *(a for kv in TINY for a in ("--set", kv)))
    env = {"PREFECT_HOME": str(home), "PREFECT_API_URL": ""}
    proc = _start_dashboard(port, home)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/api", proc)
        found = run_cli(*args, env=env)
        assert found.returncode == 0, found.stderr[-3000:]
        assert f"Prefect API: the running dashboard's server, http://127.0.0.1:{port}/api" in found.stderr
        assert {s["status"] for s in json.loads(found.stdout)["stages"].values()} == {"cached"}
        flow_run_id = json.loads(found.stdout)["flow_run_id"]
        assert _get(f"http://127.0.0.1:{port}/api/flow_runs/{flow_run_id}")[0] == 200  # the run is on its API
    finally:
        stop_server(proc)
    gone = run_cli(*args, env=env)
    assert gone.returncode == 0, gone.stderr[-3000:]
    assert "Prefect API: a temporary server" in gone.stderr
    assert {s["status"] for s in json.loads(gone.stdout)["stages"].values()} == {"cached"}


def _task_graph(flow_run_id: str) -> dict[str, set[frozenset[str]]]:
    """task name (without its suffix) -> the upstream task names of each of its runs (one set per distinct
    upstream set: the search task runs for two stages), from the REST API's task inputs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    # "stage-1a2" (Prefect's suffix) or "encoder_candidate mlp to 50%" (a candidate's runs are named by it), either
    # followed by " (3 s work, 9 s waiting)" after a wait for the Keras lock
    bases = {r.id: r.name.split(" (")[0] for r in runs}
    name = {i: b.split(" ")[0] if " " in b else b.rsplit("-", 1)[0] for i, b in bases.items()}
    graph: dict[str, set[frozenset[str]]] = {}
    for r in runs:
        ups = frozenset(name[i.id] for inputs in r.task_inputs.values() for i in inputs
                        if getattr(i, "input_type", "") == "task_run")
        graph.setdefault(name[r.id], set()).add(ups)
    return graph


def _declared(config) -> dict[str, set[frozenset[str]]]:
    """The graph `flows.plan` declares for ``config``: each stage reads exactly these."""
    declared: dict[str, set[frozenset[str]]] = {}
    for stage in stages_needed(config.evaluate.approaches):
        ups = set(stage.reads(config.evaluate.approaches))
        kinds = {type(f) for f in stage.fanouts if f.applies(config)}
        if Solver in kinds:  # an SVC stage: its solver decision, and with svc.search the grid (which reads it too)
            ups.add(SOLVER_TASK)
            declared.setdefault(SOLVER_TASK, set()).add(frozenset({stage.inputs[0]}))
        if Grid in kinds:
            ups.add(SEARCH_TASK)
            declared.setdefault(SEARCH_TASK, set()).add(frozenset({stage.inputs[0], SOLVER_TASK}))
        if Candidates in kinds:  # one rung: too few rows for successive halving
            ups |= {CANDIDATE_TASK, SCORE_TASK}
            declared[CANDIDATE_TASK] = {frozenset({stage.inputs[0]})}
            declared[SCORE_TASK] = {frozenset({CANDIDATE_TASK})}
        declared[stage.name] = {frozenset(ups)}
    declared["register_model"] = {frozenset({"bundle"})}
    return declared


def _artifacts(flow_run_id: str) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found if a.key}


@pytest.fixture(scope="module")
def runs(prefect_api, tmp_path_factory):
    """A cold and a fully cached run of one config (with the SVC search and the encoder search), and one
    with svc.C=3."""
    from tests.helpers import iris_csv

    tmp = tmp_path_factory.mktemp("dash")
    csv = iris_csv(tmp / "iris.csv")
    data = tmp / "data"
    config = tiny_config(csv, "svc.search=true", "svc.search_C=[1,10]", "svc.search_gamma_factor=[1]", "svc.search_folds=3",
                         "encoder.kind='auto'", "encoder.search_folds=2", "encoder.search_repeats=1")
    cold = pipeline(config=config, data_dir=str(data))
    cached = pipeline(config=config, data_dir=str(data))
    other = tiny_config(csv, "svc.C=3")
    third = pipeline(config=other, data_dir=str(data))
    return {"config": config, "data": data, "csv": csv, "cold": cold, "cached": cached, "other": other,
            "third": third}


def test_the_flow_graph_is_the_declared_table_in_a_cold_and_a_cached_run(runs):
    declared = _declared(runs["config"])
    assert declared[SEARCH_TASK] == {frozenset({"extract_features", SOLVER_TASK}), frozenset({"scale", SOLVER_TASK})}
    assert declared[SOLVER_TASK] == {frozenset({"extract_features"}), frozenset({"scale"})}
    assert declared["train_encoder"] == {frozenset({"scale", CANDIDATE_TASK, SCORE_TASK})}
    assert next(iter(declared["evaluate"])) >= {"train_svc", "raw_svc", "deep_hinge"}
    for result in (runs["cold"], runs["cached"]):
        assert _task_graph(result.flow_run_id) == declared
    assert {s.status for s in runs["cached"].stages.values()} == {"cached"}


def test_runs_are_named_by_source_and_config_and_tagged_with_the_model_version(runs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    config, cold, third = runs["config"], runs["cold"], runs["third"]
    assert cold.flow_run_name == runs["cached"].flow_run_name == run_name(config)
    assert third.flow_run_name != cold.flow_run_name and third.flow_run_name.startswith("iris-")
    with get_client(sync_client=True) as client:
        tags = set(client.read_flow_run(cold.flow_run_id).tags)
    assert tags == {*run_tags(config), f"model:{cold.model}"} and "dataset:iris" in tags
    with get_client(sync_client=True) as client:
        ordered = client.read_flow_run(cold.flow_run_id).tags
        candidates = sorted(r.name for r in client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[cold.flow_run_id]))) if r.name.startswith(CANDIDATE_TASK))
    assert sorted(ordered)[:3] == ["dataset:iris", "marginflow", f"model:{cold.model}"]  # shown first (sorted)
    # named by candidate (and, after a wait for the Keras lock, by their work and their wait)
    assert [c.split(" (")[0] for c in candidates] == [f"{CANDIDATE_TASK} {c}" for c in ("identity", "mlp", "mlp-narrow")]
    assert all(re.fullmatch(r"[^(]+( \(\d+ s work, \d+ s waiting\))?", c) for c in candidates), candidates


def test_the_report_is_published_for_a_cached_run_with_its_facts_and_charts(runs):
    cached = runs["cached"]
    artifacts = _artifacts(cached.flow_run_id)
    assert {"marginflow-report", "marginflow-approaches", "marginflow-run"} <= set(artifacts)
    # the registry did not change: its table (which checks every version's files) is not published again
    models = models_key(runs["data"])  # one table per data root, its key naming the root's digest
    assert models == f"marginflow-models-{root_key(runs['data'])}" and root_key(runs["data"]) != root_key("elsewhere")
    assert models not in artifacts and models in _artifacts(runs["cold"].flow_run_id)
    assert f"marginflow-runs-{root_key(runs['data'])}" in artifacts  # the runs table, republished by every run
    report = artifacts["marginflow-report"].data
    assert f"| model version | {cached.model} (already registered) |" in report
    assert cached.flow_run_id in report and "| date | " in report
    charts = json.loads((Path(cached.stages["evaluate"].artifact) / "charts.json").read_text())
    assert len(charts) >= 1 + 1 + 3  # bars, the confusion matrices, training curves
    assert report.count("](data:image/png;base64,") == len(charts)
    folder = Path(cached.report)
    assert folder.parent == runs["data"] / "reports" and cached.flow_run_id[:8] in folder.name
    assert (folder / "report.md").read_text().startswith(f"# marginflow report: {runs['csv']}")
    assert "svc.search=true" in (folder / "report.md").read_text()


def test_versions_record_their_run_report_and_changes_and_compare_shows_the_difference(runs):
    data = runs["data"]
    v1, v2 = Registry(data).versions()
    assert v1.run["flow_run_id"] == runs["cold"].flow_run_id and Path(v1.run["report"]) == Path(runs["cold"].report)
    assert v2.run["flow_run_name"] == runs["third"].flow_run_name
    assert v2.changes["svc.C"] == 3.0 and "svc.C" not in v1.changes and v1.changes["svc.search"] is True
    table = run_main("models", "--data-dir", str(data))
    assert table.returncode == 0 and "svc.C=3.0" in table.stdout.splitlines()[2]
    out = run_main("compare", "1", "v0002", "--data-dir", str(data), "--json")
    assert out.returncode == 0, out.stderr
    c = json.loads(out.stdout)
    assert c["versions"] == ["v0001", "v0002"] and c["config"]["svc.C"] == [10.0, 3.0]
    assert c["config"]["svc.search"] == [True, False] and "encoder.epochs" not in c["config"]
    assert c["metrics"]["n_test"] == [38, 38]
    text = run_main("compare", "1", "2", "--data-dir", str(data))
    line = next(x for x in text.stdout.splitlines() if x.startswith("svc.C"))
    assert line.split() == ["svc.C", "10.0", "3.0"]
    assert run_main("compare", "1", "9", "--data-dir", str(data)).returncode == 2


def test_runs_lists_every_evaluated_run_with_its_changes_and_every_approach(runs):
    data = runs["data"]
    out = run_main("runs", "--data-dir", str(data), "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    results = [runs["third"], runs["cached"], runs["cold"]]  # newest first
    assert [r["flow_run_id"] for r in rows] == [x.flow_run_id for x in results]
    assert [r["version"] for r in rows] == [x.model for x in results] and [r["new_version"] for r in rows] == [
        True, False, True]
    for row, result in zip(rows, results, strict=True):
        metrics = json.loads((Path(result.stages["evaluate"].artifact) / "metrics.json").read_text())
        assert row["accuracy"] == {n: a["accuracy"] for n, a in metrics["approaches"].items()}
        assert row["dataset"] == str(runs["csv"]) and row["wall_seconds"] > 0 and row["problem"] is None
    assert rows[0]["changes"]["svc.C"] == 3.0 and "svc.search" not in rows[0]["changes"]
    assert rows[2]["changes"]["svc.search"] is True
    text = run_main("runs", "--data-dir", str(data), "--sort", "features_svc").stdout.splitlines()
    assert text[0].startswith("every run: ") and "encoder.epochs=4" in text[0] and "features_svc" in text[1]
    best = max(rows, key=lambda r: r["accuracy"]["features_svc"])
    assert best["run"] in text[2] and f"{best['accuracy']['features_svc']:.4f}*" in text[2]
    assert "svc.C=3.0" in next(line for line in text if runs["third"].flow_run_name in line)
    bad = run_main("runs", "--data-dir", str(data), "--sort", "speed")
    assert bad.returncode == 2 and "--sort speed: one of date, wall" in bad.stderr


CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "TRAVIS", "CIRCLECI", "BUILDKITE", "TF_BUILD",
                "CODEBUILD_BUILD_ID", "BITBUCKET_COMMIT", "TEAMCITY_VERSION", "DRONE", "SEMAPHORE", "APPVEYOR",
                "BUDDY", "CI_NAME", "DO_NOT_TRACK")  # what makes Prefect keep its SDK telemetry off by itself
TELEMETRY_NOTICE = "Prefect collects anonymous usage data"


def _on_a_terminal(args: list[str], timeout: float = 300, env: dict[str, str] | None = None,
                   command: list[str] | None = None) -> tuple[int, str]:
    """Run the CLI (or ``command``) with a pseudo-terminal as its stdout and stderr; returns (exit code, everything
    shown)."""
    exe = Path(sys.executable).parent / "marginflow"
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command or [str(exe), *args], stdin=follower, stdout=follower, stderr=follower, cwd=ROOT,
                            env={**os.environ, "TERM": "xterm", "COLUMNS": "120", **(env or {})},
                            start_new_session=True)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the CLI exited and closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_a_live_display_and_a_pipe_gets_plain_log_lines(runs, tmp_path, monkeypatch):
    args = ["run", "--input", str(runs["csv"]), "--label", "species", "--data-dir", str(runs["data"]),
            *(f"--set={s}" for s in [*TINY, "svc.C=3"]), "--log-file", str(tmp_path / "run.log")]
    # a Prefect home that never showed Prefect's first-run telemetry notice, outside CI: importing Prefect on a
    # terminal prints it (checked first, so the absence below means something); marginflow's commands do not
    fresh = {"PREFECT_HOME": str(tmp_path / "home")}
    for name in CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    _, imported = _on_a_terminal([], env={"PREFECT_HOME": str(tmp_path / "other")},
                                 command=[sys.executable, "-c", "import prefect.main"])
    assert TELEMETRY_NOTICE in imported
    code, shown = _on_a_terminal(args, env=fresh)
    assert code == 0, shown[-2000:]
    assert TELEMETRY_NOTICE not in shown
    # the 12 stages, and one line for the two SVC stages' choose_solver tasks
    assert "stage 13 of 13" in shown and "✓ train_encoder" in shown and "cached" in shown
    assert " | INFO " not in shown  # the log lines went to the dashboard and the file, not over the display
    logged = (tmp_path / "run.log").read_text()  # the full log is in --log-file
    assert "Beginning flow run" in logged and "register_model" in logged
    assert shown.rstrip().splitlines()[-1].startswith("model: v0002")
    piped = run_cli(*args, env={"PREFECT_LOGGING_LEVEL": "INFO"})
    assert piped.returncode == 0
    assert "✓" not in piped.stderr and " | INFO " in piped.stderr and "Finished in state Cached" in piped.stderr
    quiet = run_cli(*args[:-2], "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    lines = quiet.stdout.splitlines()
    assert len(lines) == 3 and lines[2] == "model: v0002 (already registered; champion: v0001)"
    assert lines[0].startswith(f"{runs['csv']}: test accuracy ") and lines[1].startswith("report: ")
    assert Path(lines[1].removeprefix("report: ")).is_file()  # --quiet keeps where the report is
    # the session's server outlives the run: the display links to the run's page on its dashboard
    assert f"dashboard: {os.environ['PREFECT_API_URL'].removesuffix('/api')}/runs/flow-run/" in shown


def test_version_flag():
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip().startswith("marginflow ")


def test_stage_seconds_leave_out_the_wait_for_the_keras_lock(monkeypatch):
    """Waiting for the lock is counted as waited, not as the fit's own seconds. A fake clock makes
    it exact: the holder moves the clock 10 s on only once the other thread has begun waiting."""
    import types

    from tasks.core.margin import seeded_keras
    from tasks.obs import progress

    clock = {"now": 100.0, "reads": 0}
    main = threading.get_ident()
    main_waiting = threading.Event()

    def perf_counter() -> float:
        if threading.get_ident() == main:
            clock["reads"] += 1
            if clock["reads"] == 2:  # OwnTime's start, then waiting()'s start: next comes the acquire
                main_waiting.set()
        return clock["now"]

    monkeypatch.setattr(progress, "time", types.SimpleNamespace(perf_counter=perf_counter))
    held = threading.Event()

    def hold() -> None:
        with seeded_keras(0):
            held.set()
            main_waiting.wait(timeout=30)
            clock["now"] += 10.0  # ten seconds pass while the other thread waits for the lock

    t = threading.Thread(target=hold)
    t.start()
    held.wait(timeout=30)
    before = waited()
    with OwnTime() as took, seeded_keras(1):
        pass
    t.join()
    assert took.waited == 10.0 and took.seconds == 0.0
    assert waited() - before == 10.0


def test_the_display_shows_a_fit_waiting_for_the_keras_lock_then_running_and_names_each_candidate(
        prefect_api, csv, tmp_path):
    """A run whose Keras fits find the lock held: the display shows them waiting for another Keras fit (not
    running), then running once it is free; each encoder candidate is a named row under train_encoder."""
    from flows.display import Progress
    from tasks.core.margin import KERAS_FIT_LOCK
    from tasks.obs.progress import listening

    progress, frames = Progress(), []
    blocked = threading.Event()

    def listener(event: str, fields: dict) -> None:
        progress(event, fields)
        frames.append(progress.lines())
        if event == "wait":
            blocked.set()

    config = tiny_config(csv, "encoder.kind='auto'", "encoder.search_folds=2", "encoder.search_repeats=1")
    KERAS_FIT_LOCK.acquire()  # another fit holds it
    try:
        with listening(listener):
            result: dict = {}
            run = threading.Thread(target=lambda: result.update(r=pipeline(config=config, data_dir=str(tmp_path / "d"))))
            run.start()
            assert blocked.wait(timeout=120)
            time.sleep(1.0)
            held = progress.lines()
            KERAS_FIT_LOCK.release()
            run.join(timeout=300)
    finally:
        if KERAS_FIT_LOCK.locked() and "r" not in result:
            KERAS_FIT_LOCK.release()
    assert "r" in result
    waiting = [line for line in held if "waiting for another Keras fit" in line]
    assert waiting and all("⏸" in line for line in waiting) and not any("running" in line for line in waiting)
    row = waiting[0].split("⏸")[1].split(" waiting for")[0].strip()
    later = [line for frame in frames[frames.index(next(f for f in frames if any(
        row in x and "waiting for another" in x for x in f))):] for line in frame if row in line]
    assert any("▸" in line and "running" in line for line in later) and "✓" in later[-1]
    final = frames[-1]
    at = next(i for i, line in enumerate(final) if "train_encoder" in line)
    assert sorted(line.split()[2] for line in final[at + 1:at + 4]) == ["identity", "mlp", "mlp-narrow"]
    assert all(line.startswith("    ✓ candidate ") for line in final[at + 1:at + 4]), final


@pytest.mark.parametrize("quiet", [False, True])
def test_the_socks_probe_warning_is_silenced_by_the_cli(quiet):
    """requests probes urllib3's SOCKS support on import and urllib3 warns without PySocks, proxy or not."""
    code = ("from flows.cli import _quiet_third_parties\n" + ("_quiet_third_parties()\n" if quiet else "")
            + "try:\n    import urllib3.contrib.socks\nexcept ImportError:\n    pass\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert ("SOCKS support in urllib3" in out.stderr) is not quiet


def test_predict_says_its_count_once(runs, tmp_path):
    out = run_cli("predict", "--input", str(runs["csv"]), "--output", str(tmp_path / "p.parquet"),
                  "--data-dir", str(runs["data"]))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"150 rows predicted with v0001 -> {tmp_path / 'p.parquet'}"]
    assert out.stderr == ""  # no progress counter without a terminal


def test_every_artifact_holds_the_files_its_kind_declares(runs):
    """`tasks.store.kinds` is the truth about every artifact's files: each folder a run wrote holds its kind's files,
    and nothing undeclared."""
    from tasks.store.kinds import KINDS, declares

    seen = set()
    for folder in sorted((runs["data"] / "artifacts").glob("*/*")):
        if folder.parent.name.startswith("."):
            continue
        kind = KINDS[folder.parent.name]
        files = {p.name for p in folder.iterdir()}
        assert {str(f) for f in kind.files} <= files, (folder, files)
        assert all(declares(kind, f) for f in files), (folder, files)
        seen.add(kind.name)
    assert seen == set(KINDS)  # every kind, the search's and the SVC grid's included

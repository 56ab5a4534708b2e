"""Screenshots of the dashboard as a user sees it, taken with headless Chromium (``make screenshots``).

Starts ``marginflow dashboard`` on a free port with a fresh Prefect home, runs the pipeline on
a built-in dataset twice (the second time with ``svc.C`` changed, a second model version),
then the retrain flow twice (the second finds nothing new: the champion's stored scores), and
saves PNGs of

* ``runs.png``          - the runs list (run names, tags);
* ``flow-run.png``      - the first (cold) pipeline run's page with its task graph;
* ``report.png``        - the ``marginflow-report`` artifact (tables and charts);
* ``models.png``        - the ``marginflow-models`` table artifact;
* ``decision.png``      - the retrain decision artifact;

into ``screenshots/`` (not in git). Needs Debian's ``chromium`` (``apt-get install chromium``).

Usage: ``python scripts/screenshots.py [--dataset iris] [--out screenshots]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.server import free_port, stop_server, wait_healthy  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=20000"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("screenshots: no chromium found; install Debian's package: apt-get install chromium")


def api(base: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}/api{path}", data=data, headers={"Content-Type": "application/json"},
                                 method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def shot(browser: str, url: str, path: Path, profile: Path, height: int = 1100) -> None:
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--window-size=1600,{height}", f"--user-data-dir={profile}",
                    f"--screenshot={path}", url],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=False)
    status = f"{path.stat().st_size // 1024} KiB" if path.exists() else "FAILED"
    print(f"  {path}  ({url}; {status})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="iris")
    parser.add_argument("--out", default=str(ROOT / "screenshots"))
    args = parser.parse_args()
    browser = chromium()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="marginflow-screens-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    exe = str(Path(sys.executable).parent / "marginflow")
    env = {**os.environ, "PREFECT_HOME": str(work / "home")}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([exe, "dashboard", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_healthy(f"{base}/api", server)
        print(f"dashboard {base}; runs in {work / 'data'}", flush=True)
        run_env = {**env, "PREFECT_API_URL": f"{base}/api"}
        data = ["--data-dir", str(work / "data"), "--dataset", args.dataset, "--quiet"]
        for extra in ([], ["--set", "svc.C=3"]):
            subprocess.run([exe, "run", *data, *extra], env=run_env, check=True)
        for _ in range(2):  # the second finds nothing new: its decision shows the champion's stored scores
            subprocess.run([exe, "retrain", *data, "--set", "svc.C=3"], env=run_env, check=True)
        runs = api(base, "/flow_runs/filter", {"sort": "START_TIME_ASC", "limit": 20})
        pipeline = next(r for r in runs if r["name"].startswith(args.dataset) and r["state_type"] == "COMPLETED")
        artifacts = {}
        for key in ("marginflow-report", "marginflow-models", "marginflow-decision"):
            found = api(base, "/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC",
                                                    "limit": 1})
            artifacts[key] = found[0]["id"]
        profile = work / "chromium"
        shot(browser, f"{base}/runs", out / "runs.png", profile)
        shot(browser, f"{base}/runs/flow-run/{pipeline['id']}", out / "flow-run.png", profile)
        shot(browser, f"{base}/artifacts/artifact/{artifacts['marginflow-report']}", out / "report.png", profile,
             height=7000)
        shot(browser, f"{base}/artifacts/artifact/{artifacts['marginflow-models']}", out / "models.png", profile)
        shot(browser, f"{base}/artifacts/artifact/{artifacts['marginflow-decision']}", out / "decision.png", profile)
    finally:
        stop_server(server)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

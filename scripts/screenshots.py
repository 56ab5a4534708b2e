"""Screenshots of the dashboard and the report as a user sees them, taken with headless Chromium (``make screenshots``).

Starts ``marginflow dashboard`` on a free port with a fresh Prefect home, runs the pipeline on
a built-in dataset twice (the second time with ``svc.C`` changed, a second model version),
then the retrain flow twice (the second finds nothing new: the champion's stored scores), and
saves PNGs of

* ``runs.png``          - the runs list (run names, tags);
* ``flow-run.png``      - the first (cold) pipeline run's page with its task graph;
* ``report.png``        - the ``marginflow-report`` artifact (tables and charts);
* ``report-html.png``   - the run's ``report.html`` at 1400 px, and ``report-phone.png`` at 390 px;
* ``runs-table.png``    - the data root's runs table artifact (every run, every approach);
* ``models.png``        - the data root's models table artifact;
* ``decision.png``      - the retrain decision artifact;

into ``screenshots/`` (not in git). Each page is captured once it has loaded and the network has been
quiet for a moment (through Chromium's DevTools protocol), so a page still fetching its data is not taken.
Needs Debian's ``chromium`` (``apt-get install chromium``).

Usage: ``python scripts/screenshots.py [--dataset iris] [--out screenshots]``
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.server import free_port, stop_server, wait_healthy  # noqa: E402
from tasks.store.kinds import REPORT_HTML  # noqa: E402

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--remote-debugging-port=0"]
QUIET_S = 2.0  # a page is loaded once no request has been in flight for this long after its load event
POLLING_S = 12.0  # or, for a page that never stops polling, at the first moment none is in flight after this
LONG_POLL_S = 10.0  # a request open longer than this is a subscription (a long poll), not the page loading


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


class Browser:
    """Headless Chromium driven over its DevTools protocol (one page), with the ``websockets`` Prefect installs."""

    def __init__(self, exe: str, profile: Path) -> None:
        self.proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = None
        for line in self.proc.stderr:  # "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
            found = re.search(r"ws://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found[1])
                break
        if port is None:
            raise RuntimeError("chromium did not open its DevTools port")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.loads(r.read()) if t["type"] == "page")
        from websockets.sync.client import connect

        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.next_id = 0
        self.events: list[dict] = []
        for method in ("Page.enable", "Network.enable"):
            self.call(method)

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=120))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def _settle(self, timeout: float) -> bool:
        """Wait for the load event, then until no request has been in flight for `QUIET_S` (a page that polls its
        API, as the dashboard's do, is taken at the first moment with none in flight after `POLLING_S`); True
        when it settled."""
        loaded, flying, quiet_since, loaded_at = False, {}, None, 0.0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while self.events:
                e = self.events.pop(0)
                method, params = e.get("method"), e.get("params", {})
                if method == "Page.loadEventFired":
                    loaded, loaded_at = True, time.monotonic()
                elif method == "Network.requestWillBeSent" and params.get("type") not in ("EventSource", "WebSocket"):
                    flying[params["requestId"]] = time.monotonic()
                elif method in ("Network.loadingFinished", "Network.loadingFailed"):
                    flying.pop(params["requestId"], None)
            now = time.monotonic()
            busy = any(now - started < LONG_POLL_S for started in flying.values())  # a long poll is not loading
            quiet_since = (quiet_since or now) if loaded and not busy else None
            if quiet_since is not None and (now - quiet_since >= QUIET_S or now - loaded_at >= POLLING_S):
                return True
            try:
                self.events.append(json.loads(self.ws.recv(timeout=0.2)))
            except TimeoutError:
                pass
        return False

    def shot(self, url: str, path: Path, width: int = 1600, height: int = 1100, full: bool = False) -> None:
        """``url`` at ``width`` x ``height`` CSS pixels (a phone's below 600: mobile emulation), captured once
        loaded and quiet; ``full``: the whole page's height (up to 8000 px)."""
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=width < 600)
        self.events.clear()
        self.call("Page.navigate", url=url)
        settled = self._settle(90)
        if full:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=min(int(size["height"]) + 20, 8000),
                      deviceScaleFactor=1, mobile=width < 600)
            self._settle(10)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"  {path}  ({url}; {path.stat().st_size // 1024} KiB{'' if settled else '; still loading after 90 s'})",
              flush=True)

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="iris")
    parser.add_argument("--out", default=str(ROOT / "screenshots"))
    args = parser.parse_args()
    exe_browser = chromium()
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
        from tasks._publish import models_key
        from tasks.ops.runs import list_runs, root_key

        artifacts = {}
        keys = {"report": "marginflow-report", "models": models_key(work / "data"),
                "runs": f"marginflow-runs-{root_key(work / 'data')}", "decision": "marginflow-decision"}
        for name, key in keys.items():
            found = api(base, "/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC",
                                                    "limit": 1})
            artifacts[name] = found[0]["id"]
        report = Path(list_runs(work / "data")[0]["report"]) / REPORT_HTML
        browser = Browser(exe_browser, work / "chromium")
        try:
            browser.shot(f"{base}/runs", out / "runs.png")
            browser.shot(f"{base}/runs/flow-run/{pipeline['id']}", out / "flow-run.png")
            for name in ("report", "runs", "models", "decision"):  # the dashboard scrolls inside the page: the
                # report's whole height is asked for, not measured
                browser.shot(f"{base}/artifacts/artifact/{artifacts[name]}",
                             out / f"{'runs-table' if name == 'runs' else name}.png",
                             height=7000 if name == "report" else 1100)
            browser.shot(report.as_uri(), out / "report-html.png", width=1400, full=True)
            browser.shot(report.as_uri(), out / "report-phone.png", width=390, height=844, full=True)
        finally:
            browser.close()
    finally:
        stop_server(server)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Start, wait for and stop a local Prefect server, or any process started in its own group; find the
Prefect API a command should use (the environment, the profile, a running dashboard, or a temporary server)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict[str, str]:
    """What a Prefect server marginflow starts is told by environment, never by the user's profile: no
    telemetry, and no interactive profile check (which on a terminal asks which profile to switch to, waits
    for an answer, and then rewrites ``profiles.toml``)."""
    return {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_CLI_PROMPT": "false"}


def start_server(home: Path, port: int, log: Path | None = None) -> subprocess.Popen:
    """``prefect server start`` on 127.0.0.1:port with its own PREFECT_HOME, in a new process group."""
    env = {**os.environ, "PREFECT_HOME": str(home), **server_env()}
    env.pop("PREFECT_API_URL", None)
    with open(log or home / "server.log", "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "prefect", "--no-prompt", "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


def wait_healthy(api_url: str, proc: subprocess.Popen | None, timeout: float = 120.0, poll: float = 0.5) -> None:
    """Block until ``{api_url}/health`` answers 200 (asked every ``poll`` seconds); raise if the server (when
    ``proc`` is ours) dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"Prefect server exited with code {proc.returncode}")
        if answers(api_url, timeout=2):
            return
        time.sleep(poll)
    raise RuntimeError(f"Prefect server at {api_url} not healthy after {timeout:.0f}s")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group; SIGKILL it if it has not exited in 20 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# --------------------------------------------------------------------------- which Prefect API a command uses

DASHBOARD_RECORD = "marginflow-dashboard.json"


def prefect_home() -> Path:
    """The Prefect home this process uses: ``$PREFECT_HOME`` or ``~/.prefect`` (Prefect's default)."""
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()


def record_dashboard(api_url: str, home: Path | None = None) -> Path:
    """Record that this process (about to become ``prefect server``) serves ``api_url`` for this Prefect home:
    ``<home>/marginflow-dashboard.json``, written to a temporary file and renamed into place."""
    import json
    import tempfile

    home = home or prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    record = {"api_url": api_url, "pid": os.getpid(), "host": socket.gethostname()}
    fd, tmp = tempfile.mkstemp(dir=home, prefix=".dashboard-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(tmp, home / DASHBOARD_RECORD)
    return home / DASHBOARD_RECORD


def answers(api_url: str, timeout: float = 1.0) -> bool:
    """True when ``{api_url}/health`` answers 200 within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def running_dashboard(home: Path | None = None) -> str | None:
    """The API URL of a ``marginflow dashboard`` running for this Prefect home, or None: its record must name a
    process of this host that is alive and a server that answers now."""
    import json

    from tasks.obs.processes import process_alive

    try:
        record = json.loads(((home or prefect_home()) / DASHBOARD_RECORD).read_text())
        url, pid, host = record["api_url"], int(record["pid"]), record["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(url, str) or host != socket.gethostname() or not process_alive(host, pid):
        return None
    return url if answers(url) else None


def profile_api_url(home: Path | None = None) -> str | None:
    """``PREFECT_API_URL`` of the active Prefect profile (``$PREFECT_PROFILE`` or the file's ``active``), read
    from ``<home>/profiles.toml`` without importing Prefect; None when it sets none."""
    import tomllib

    try:
        profiles = tomllib.loads(((home or prefect_home()) / "profiles.toml").read_text())
    except (OSError, ValueError):
        return None
    name = os.environ.get("PREFECT_PROFILE") or profiles.get("active")
    section = (profiles.get("profiles") or {}).get(name) or {}
    url = section.get("PREFECT_API_URL") if isinstance(section, dict) else None
    return url if isinstance(url, str) and url else None


def known_api() -> tuple[str, str] | None:
    """``(url, where)`` of a Prefect API a command can use without starting a server, in order:
    ``PREFECT_API_URL`` (``environment``), the active profile's (``profile``), a running ``marginflow
    dashboard`` of this Prefect home (``dashboard``); None when there is none."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"], "environment"
    for where, find in (("profile", profile_api_url), ("dashboard", running_dashboard)):
        url = find()
        if url:
            return url, where
    return None


def die_with_parent() -> None:
    """In a child process before it executes: ask Linux to send it SIGTERM when the process that started it dies
    (a ``kill -9`` of the command leaves no server running). Elsewhere this does nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(0)


class TemporaryServer:
    """A Prefect API server for one command, started at once in the background (as Prefect's own temporary
    server is: uvicorn on the API app, no UI, this Prefect home's database) so that it starts while the
    command validates its input; `wait` blocks until it answers, `stop` ends it.

    Cheaper than letting Prefect start it at the first flow call: this process never imports Prefect's
    server modules (about 2.6 s here), and the start overlaps the preflight checks.
    """

    def __init__(self) -> None:
        import tempfile

        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.started = time.monotonic()
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        self.log = tempfile.TemporaryFile()  # what the server says, for a failed start (a pipe could fill up)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app", "--host",
             "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True,
            preexec_fn=die_with_parent)
        self.seconds: float | None = None  # from start to answering, once `wait` returned

    def wait(self, timeout: float) -> None:
        """Block until the server answers.

        Raises:
            RuntimeError: it exited (with its last line of output), or did not answer within ``timeout`` seconds.
        """
        try:
            wait_healthy(self.api_url, self.proc, timeout - (time.monotonic() - self.started), poll=0.05)
        except RuntimeError as e:
            self.log.seek(0)
            said = self.log.read().decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"the temporary Prefect server did not start: {e}"
                               + (f" ({said[-1]})" if said else "")) from None
        self.seconds = time.monotonic() - self.started

    def stop(self) -> None:
        """`stop_server`; its output is dropped."""
        stop_server(self.proc)
        self.log.close()


def drain_prefect_queues(timeout: float = 5.0) -> None:
    """Send the log lines and events this process still queues for the Prefect API (before its server stops)."""
    if "prefect.logging.handlers" in sys.modules:
        from prefect.logging.handlers import APILogWorker

        with contextlib.suppress(Exception):
            APILogWorker.drain_all(timeout=timeout)
    if "prefect.events.worker" in sys.modules:
        from prefect.events.worker import EventsWorker

        with contextlib.suppress(Exception):
            EventsWorker.drain_all(timeout=timeout)

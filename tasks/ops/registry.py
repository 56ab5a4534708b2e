"""The model registry under ``<data root>/models``: numbered, immutable bundle versions and a champion.

Layout::

    models/
      v0001/            one bundle (see `tasks.bundle`), files read-only once written
      v0002/
      champion.json     {"version": "v0002", "promoted_at": ..., "reason": ...}
      history.jsonl     one line per registration and promotion
      .lock             flock'd by every writer

A version is built in ``models/.staging`` and renamed into place, so it appears whole or
not at all. The champion pointer is written to a temporary file and ``os.replace``d:
readers see the old or the new pointer, never half of one. Writers hold an exclusive
``flock`` on ``models/.lock``, so two processes registering or promoting at once pick
distinct version numbers and leave one consistent champion. Registering a bundle whose
identity (model files and the config sections that made them, `tasks.ops.bundle.bundle_identity`)
is already a version returns that version instead of a copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tasks.errors import InputError
from tasks.ops.bundle import BundleError, bundle_identity, verify

VERSION = re.compile(r"^v(\d{4,})$")
CHAMPION = "champion.json"
HISTORY = "history.jsonl"


class Version(BaseModel):
    version: str
    path: str
    created: str
    metrics: dict[str, Any]
    champion: bool
    problem: str | None = None  # why the bundle would be refused (altered or incomplete), else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Registry:
    """The registry of one data root."""

    def __init__(self, root: str | Path):
        self.dir = Path(root) / "models"

    # ------------------------------------------------------------------ reading

    def names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted((p.name for p in self.dir.iterdir() if VERSION.match(p.name)), key=lambda n: int(n[1:]))

    def champion(self) -> str | None:
        try:
            return json.loads((self.dir / CHAMPION).read_text())["version"]
        except FileNotFoundError:
            return None

    def path(self, spec: str) -> Path:
        """The directory of ``spec``: ``champion``, ``v0003`` or ``3``.

        Raises:
            InputError: no such version, or no champion yet.
        """
        name = self.resolve(spec)
        return self.dir / name

    def resolve(self, spec: str) -> str:
        if spec == "champion":
            name = self.champion()
            if name is None:
                raise InputError(f"{self.dir}: no champion model yet (run `marginflow run` first)")
            return name
        name = f"v{int(spec):04d}" if spec.isdigit() else spec
        if name not in self.names():
            known = ", ".join(self.names()) or "none"
            raise InputError(f"model version {spec!r} not found in {self.dir} (versions: {known})")
        return name

    def versions(self) -> list[Version]:
        champion = self.champion()
        out = []
        for name in self.names():
            d = self.dir / name
            try:
                metrics = json.loads((d / "metrics.json").read_text())
            except (OSError, ValueError):
                metrics = {}
            try:
                verify(d)
                problem = None
            except BundleError as e:
                problem = str(e)
            created = datetime.fromtimestamp(d.stat().st_mtime, UTC).isoformat(timespec="seconds")
            out.append(Version(version=name, path=str(d), created=created, metrics=metrics,
                               champion=name == champion, problem=problem))
        return out

    def history(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in (self.dir / HISTORY).read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _locked(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _log(self, event: dict[str, Any]) -> None:
        with open(self.dir / HISTORY, "a") as f:
            f.write(json.dumps({"at": _now(), **event}, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _find(self, identity: str) -> str | None:
        for name in self.names():
            try:
                if bundle_identity(verify(self.dir / name)["files"]) == identity:
                    return name
            except BundleError:
                continue
        return None

    def log_decision(self, decision: dict[str, Any]) -> None:
        """Append a retrain decision to the history."""
        with self._locked():
            self._log({"event": "decision", **decision})

    def register(self, bundle_dir: str | Path) -> tuple[str, bool]:
        """Copy a verified bundle in as the next version; returns (version, newly added).

        The first version becomes champion.
        """
        identity = bundle_identity(verify(bundle_dir)["files"])
        with self._locked():
            existing = self._find(identity)
            if existing:
                return existing, False
            staging = self.dir / ".staging"
            staging.mkdir(exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=staging))
            try:
                for f in Path(bundle_dir).iterdir():
                    shutil.copyfile(f, tmp / f.name)
                    os.chmod(tmp / f.name, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
                names = self.names()
                name = f"v{(int(names[-1][1:]) + 1) if names else 1:04d}"
                os.rename(tmp, self.dir / name)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self._log({"event": "registered", "version": name, "identity": identity})
            if self.champion() is None:
                self._set_champion(name, "first model")
            return name, True

    def promote(self, spec: str, reason: str = "promoted by hand") -> str:
        """Make ``spec`` the champion (also for rollback); returns its version name.

        Raises:
            InputError: unknown version; BundleError: the version's files were altered.
        """
        with self._locked():
            name = self.resolve(spec)
            verify(self.dir / name)
            self._set_champion(name, reason)
            return name

    def _set_champion(self, name: str, reason: str) -> None:
        previous = self.champion()
        pointer = {"version": name, "promoted_at": _now(), "reason": reason, "previous": previous}
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".champion-")
        with os.fdopen(fd, "w") as f:
            json.dump(pointer, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / CHAMPION)
        self._log({"event": "promoted", "version": name, "previous": previous, "reason": reason})

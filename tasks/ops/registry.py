"""The model registry under ``<data root>/models``: numbered, immutable bundle versions and a champion.

Layout::

    models/
      v0001/            one bundle (see `tasks.ops.bundle`), files read-only once written
      v0002/
      champion.json     {"version": "v0002", "promoted_at": ..., "reason": ...}
      history.jsonl     one line per registration, promotion, retrain decision and repair
      .lock             flock'd by every writer

A version is built in ``models/.staging`` and renamed into place, so it appears whole or
not at all. The champion pointer is written to a temporary file and ``os.replace``d:
readers see the old or the new pointer, never half of one. Writers hold an exclusive
``flock`` on ``models/.lock``, so two processes registering or promoting at once pick
distinct version numbers and leave one consistent champion. Registering a bundle whose
identity (model files and the config sections that made them, `tasks.ops.bundle.bundle_identity`)
is already a version returns that version instead of a copy.

Crash safety: a process killed between these steps leaves a state that `Registry.recover`
repairs, under the lock, before any other registry work: unfinished copies and pointer files
are removed, a version without its history line gets one, a registry with versions and no
champion gets the last promoted version (or the first version) back as champion, and a
pointer that history does not record is recorded. A damaged ``champion.json`` is reported;
``promote VERSION`` replaces it. Nothing becomes champion without loading fully first
(`tasks.ops.bundle.Bundle`: hashes, allowed types, Keras ``safe_mode``).
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

from tasks import faults
from tasks.config_text import changes, shown
from tasks.errors import InputError
from tasks.ops.bundle import (
    SIGNATURE,
    Bundle,
    BundleError,
    bundle_identity,
    read_manifest,
    sign,
    signing_key,
    static_problem,
    verify,
)
from tasks.store.kinds import CHAMPION, CONFIG, ENCODER_MODEL, METRICS

VERSION = re.compile(r"^v(\d{4,})$")
CHAMPION = CHAMPION
HISTORY = "history.jsonl"


class RegistryError(InputError):
    """The registry itself is damaged or missing (one line naming the file)."""


class ChampionChanged(Exception):
    """Another process changed the champion since a decision read it; ``args[0]``: the champion now."""


class Version(BaseModel):
    version: str
    path: str
    created: str
    metrics: dict[str, Any]
    champion: bool
    problem: str | None = None  # why the bundle would be refused (altered, incomplete, unsafe), else None
    changes: dict[str, Any] = {}  # the bundle's config keys that differ from the defaults
    run: dict[str, Any] = {}  # the registering run: flow_run_id, flow_run_name, report (when recorded)


def json_object(path: Path) -> dict[str, Any]:
    """A JSON object file of a version (``metrics.json``, ``config.json``); {} when missing or unreadable:
    listing a registry never fails on one damaged file (`static_problem` reports it)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Registry:
    """The registry of one data root."""

    def __init__(self, root: str | Path):
        self.dir = Path(root) / "models"
        self.repaired: list[str] = []  # what the last repair under this object's lock did

    # ------------------------------------------------------------------ reading

    def names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted((p.name for p in self.dir.iterdir() if VERSION.match(p.name) and p.is_dir()),
                      key=lambda n: int(n[1:]))

    def champion(self) -> str | None:
        """The champion's version name; None when no pointer exists.

        Raises:
            RegistryError: ``champion.json`` is unreadable or names no version of this registry.
        """
        path = self.dir / CHAMPION
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise RegistryError(f"{path}: damaged ({e}); `marginflow promote VERSION` repairs it") from None
        try:
            pointer = json.loads(text)
        except ValueError:
            raise RegistryError(f"{path}: damaged (not JSON); `marginflow promote VERSION` repairs it") from None
        name = pointer.get("version") if isinstance(pointer, dict) else None
        if not (isinstance(name, str) and VERSION.match(name) and name in self.names()):
            raise RegistryError(f"{path}: damaged (it names {name!r}, not a version of this registry); "
                                "`marginflow promote VERSION` repairs it")
        return name

    def path(self, spec: str) -> Path:
        """The directory of ``spec``: ``champion``, ``v0003`` or ``3``.

        Raises:
            InputError: no such version, or no champion yet.
        """
        return self.dir / self.resolve(spec)

    def resolve(self, spec: str) -> str:
        if spec == "champion":
            name = self.champion()
            if name is None:
                raise InputError(f"{self.dir}: no champion model yet (run `marginflow run` first)")
            return name
        name = f"v{int(spec):04d}" if spec.isascii() and spec.isdigit() else spec
        if name not in self.names():
            known = ", ".join(self.names()) or "none"
            raise InputError(f"model version {spec!r} not found in {self.dir} (versions: {known})")
        return name

    def versions(self) -> list[Version]:
        try:
            champion = self.champion()
        except RegistryError:
            champion = None
        runs = self._runs()
        return [self._version(name, champion, runs) for name in self.names()]

    def version(self, spec: str) -> Version:
        """One version's record (``champion``, ``v0003`` or ``3``); only that bundle is checked.

        Raises:
            InputError: no such version, or no champion yet.
        """
        name = self.resolve(spec)
        try:
            champion = self.champion()
        except RegistryError:
            champion = None
        return self._version(name, champion, self._runs())

    def _runs(self) -> dict[str, dict[str, Any]]:
        """version -> the run its registration recorded (flow run id and name, report path)."""
        return {e["version"]: e["run"] for e in self.history()
                if e.get("event") == "registered" and isinstance(e.get("version"), str) and isinstance(e.get("run"), dict)}

    def _version(self, name: str, champion: str | None, runs: dict[str, dict[str, Any]]) -> Version:
        d = self.dir / name
        config = json_object(d / CONFIG)
        created = datetime.fromtimestamp(d.stat().st_mtime, UTC).isoformat(timespec="seconds")
        return Version(version=name, path=str(d), created=created, metrics=json_object(d / METRICS),
                       champion=name == champion, problem=static_problem(d, signed=True),
                       changes=changes(config) if config else {}, run=runs.get(name, {}))

    def history(self) -> list[dict[str, Any]]:
        """The history's events, oldest first (a line cut short by a crash is skipped)."""
        try:
            lines = (self.dir / HISTORY).read_text().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _locked(self, create: bool = True):
        if not self.dir.is_dir():
            if not create:
                raise RegistryError(f"{self.dir}: no model registry here (run `marginflow run` first)")
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

    def _files(self, name: str) -> dict[str, str]:
        """A version's file hashes as its manifest lists them ({} when unreadable); checked on loading."""
        try:
            return read_manifest(self.dir / name)["files"]
        except BundleError:
            return {}

    def _identity(self, name: str) -> str | None:
        """A version's identity from its manifest (None when unreadable)."""
        files = self._files(name)
        return bundle_identity(files) if files else None

    def _find(self, identity: str) -> str | None:
        return next((name for name in self.names() if self._identity(name) == identity), None)

    def recover(self) -> list[str]:
        """Repair what an interrupted registration or promotion left (under the lock); returns what it did.

        A registry that does not exist is left alone (nothing is created).
        """
        if not self.dir.is_dir():
            return []
        with self._locked():
            return self._recover()

    def _recover(self) -> list[str]:
        done: list[str] = []
        self.repaired = done
        staging = self.dir / ".staging"
        leftovers = [p for p in staging.iterdir()] if staging.is_dir() else []
        leftovers += list(self.dir.glob(".champion-*"))
        for p in leftovers:  # every writer holds the lock while these exist: under it, they are stale
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        if leftovers:
            done.append(f"removed {len(leftovers)} unfinished file(s)")
        names = self.names()
        history = self.history()
        logged = {e.get("version") for e in history if e.get("event") == "registered"}
        for name in names:
            if name not in logged:
                self._log({"event": "registered", "version": name, "identity": self._identity(name),
                           "repaired": True})
                done.append(f"restored the history line of {name}")
        try:
            champion = self.champion()
        except RegistryError:
            return done  # damaged: reported by the commands that read it; promote repairs it
        promoted = [e.get("version") for e in history if e.get("event") == "promoted"]
        if champion is None and names:
            usable = [n for n in names if static_problem(self.dir / n, signed=True) is None]
            earlier = [v for v in promoted if v in usable]
            choice = earlier[-1] if earlier else (usable[0] if usable else None)
            if choice is not None:
                self._set_champion(choice, "repaired: the champion pointer was missing after an interrupted write")
                done.append(f"{choice} is champion again")
        elif champion is not None and (not promoted or promoted[-1] != champion):
            self._log({"event": "promoted", "version": champion, "previous": promoted[-1] if promoted else None,
                       "reason": "repaired: the pointer was replaced, its history line was not written",
                       "repaired": True})
            done.append(f"recorded the promotion of {champion}")
        return done

    def log_decision(self, decision: dict[str, Any]) -> None:
        """Append a retrain decision to the history."""
        with self._locked():
            self._log({"event": "decision", **decision})

    def register(self, bundle_dir: str | Path, run: dict[str, Any] | None = None) -> tuple[str, bool]:
        """Copy a bundle that loads fully in as the next version; returns (version, newly added).

        A bundle whose identity is a version already is recognised from its hashes without loading it.

        The first version becomes champion. ``run`` (the registering flow run's id, name and
        report path) goes into the version's history line.

        Raises:
            BundleError: the bundle does not verify or load.
        """
        # A bundle already registered is recognised by its files' hashes (re-hashed against its manifest,
        # nothing deserialised, no Keras import): a cached run does no model work. A new one loads
        # fully (hashes, allowed types, safe loading) before anything is written.
        files = verify(bundle_dir)["files"]
        identity = bundle_identity(files)
        with self._locked():
            self._recover()
            registered = {name: self._files(name) for name in self.names()}
        existing = next((name for name, f in registered.items() if f and bundle_identity(f) == identity), None)
        if existing:
            return existing, False
        key = signing_key()
        # an encoder byte-identical to a registered version's was loaded when that version was: only the
        # other files need loading then (a change of svc settings imports no Keras)
        known = {f.get(ENCODER_MODEL) for f in registered.values()}
        if Bundle(bundle_dir, signed=False, encoder=files[ENCODER_MODEL] not in known).identity != identity:
            raise BundleError(f"{bundle_dir}: changed while it was being registered")
        with self._locked():
            self._recover()
            existing = self._find(identity)
            if existing:  # registered by another process while this one loaded it
                return existing, False
            staging = self.dir / ".staging"
            staging.mkdir(exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=staging))
            try:
                for f in Path(bundle_dir).iterdir():
                    if f.name != SIGNATURE:  # the registry signs what it admits, with its own key
                        shutil.copyfile(f, tmp / f.name)
                if key is not None:
                    sign(tmp, key)
                for f in tmp.iterdir():
                    os.chmod(f, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
                names = self.names()
                name = f"v{(int(names[-1][1:]) + 1) if names else 1:04d}"
                faults.point("register:staged")
                os.rename(tmp, self.dir / name)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            faults.point("register:renamed")
            self._log({"event": "registered", "version": name, "identity": identity, "run": run or {}})
            faults.point("register:logged")
            try:
                has_champion = self.champion() is not None
            except RegistryError:
                has_champion = True  # a damaged pointer is left for `promote` to repair
            if not has_champion:
                self._set_champion(name, "first model")
            return name, True

    def promote(self, spec: str, reason: str = "promoted by hand", expected: str | None | object = ...) -> str:
        """Make ``spec`` the champion (also for rollback, and to repair a damaged pointer); returns its name.

        ``expected``: promote only if the champion is still this version (None: no champion), checked under the
        registry lock, so a decision made against one champion never replaces another one promoted meanwhile.

        Raises:
            InputError: no registry, or unknown version; BundleError: the version does not verify or load;
            ChampionChanged: the champion is not ``expected`` any more.
        """
        with self._locked(create=False):
            self._recover()
            name = self.resolve(spec)
            if expected is not ...:
                current = self.champion()
                if current != expected:
                    raise ChampionChanged(current)
            Bundle.load(self.dir / name)
            self._set_champion(name, reason)
            return name

    def _set_champion(self, name: str, reason: str) -> None:
        try:
            previous = self.champion()
        except RegistryError:
            previous = None
        pointer = {"version": name, "promoted_at": _now(), "reason": reason, "previous": previous}
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".champion-")
        with os.fdopen(fd, "w") as f:
            json.dump(pointer, f)
            f.flush()
            os.fsync(f.fileno())
        faults.point("champion:before-replace")
        os.replace(tmp, self.dir / CHAMPION)
        faults.point("champion:replaced")
        self._log({"event": "promoted", "version": name, "previous": previous, "reason": reason})


def models_table(versions: list[Version], link=lambda flow_run_id: flow_run_id) -> list[dict[str, Any]]:
    """The registry as rows of the dashboard's ``marginflow-models`` table: version, champion, test
    metrics, config changes from the defaults, and the registering run (``link(flow_run_id)``)."""
    rows = []
    for v in versions:
        m = v.metrics
        rows.append({
            "version": v.version, "champion": "yes" if v.champion else "",
            "accuracy": round(m["accuracy"], 4) if isinstance(m.get("accuracy"), float) else None,
            "macro_f1": round(m["macro_f1"], 4) if isinstance(m.get("macro_f1"), float) else None,
            "source": m.get("source"), "changes": shown(v.changes),
            "run": v.run.get("flow_run_name") or "",
            "run link": link(v.run["flow_run_id"]) if v.run.get("flow_run_id") else "",
            "refused": v.problem or "",
        })
    return rows

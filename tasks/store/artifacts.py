"""Content-addressed, atomically written artifact directories under the data root.

A stage never hands the next one arrays or bare paths. It writes its output files into a
temporary directory under the data root, and `ArtifactWriter` renames that directory to
``<root>/artifacts/<kind>/<digest[:16]>`` once every file is complete, where ``digest`` is
the SHA-256 over the files' names and hashes. The stage returns an `ArtifactRef`: kind,
path *relative to the data root*, digest, the per-file hashes, and the parameters that
made it. A reference that is resolved against a root (``ref.at(root)``) can open its
files; the relative path is what is stored, so a copied or moved data root keeps working.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks import faults
from tasks.obs.processes import process_alive
from tasks.store.kinds import TIMING

_CHUNK = 1 << 20
ARTIFACTS = "artifacts"
STAGING = ".staging"
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# Files that record how long the work took (`tasks.store.outputs.write_timing`), not what it made: listed and
# re-hashed like every file, but outside the content digest, so that recomputing an artifact gives the same
# artifact (and leaves the stages after it cached) however long it took.
MEASURED_FILES = (TIMING,)


def digest_files(files: dict[str, str]) -> str:
    """Digest of a directory artifact: SHA-256 over its sorted ``name\\0sha256`` lines (`MEASURED_FILES` left out)."""
    return sha256_text("".join(f"{name}\0{sha}\n" for name, sha in sorted(files.items())
                               if name not in MEASURED_FILES))


class ArtifactRef(BaseModel):
    """A small, serialisable reference to one stage output.

    Attributes:
        kind: what the artifact is (``dataset``, ``scaled``, ``encoder`` ...).
        path: the artifact directory relative to the data root (``artifacts/<kind>/<digest16>``);
            for a ``source`` reference, the source's own location (never stored in a record).
        sha256: digest of the content; the cache keys of later stages use only this.
        files: file name -> SHA-256, for directory artifacts.
        params: the parameters that made it (config section, input digests).
        root: the data root this reference is resolved against; not serialised, not stored.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    path: str
    sha256: str
    files: dict[str, str] = {}
    params: dict[str, Any] = {}
    root: str | None = Field(default=None, exclude=True, repr=False)

    def at(self, root: str | os.PathLike[str]) -> ArtifactRef:
        """This reference resolved against data root ``root``."""
        return self.model_copy(update={"root": str(root)})

    @property
    def dir(self) -> Path:
        """The artifact's directory on this machine."""
        if self.kind == "source" or Path(self.path).is_absolute():
            return Path(self.path)
        if self.root is None:
            raise ValueError(f"artifact {self.kind} at {self.path} is not resolved against a data root")
        return Path(self.root) / self.path

    def file(self, name: str) -> Path:
        """Path of one file of a directory artifact."""
        if name not in self.files:
            raise KeyError(f"artifact {self.kind} at {self.path} has no file {name!r}")
        return self.dir / name

    def is_intact(self) -> bool:
        """True when every file still exists with the bytes it was written with."""
        root = self.dir
        if not self.files:
            return root.is_file() and sha256_file(root) == self.sha256
        return damaged_file(root, self.files) is None


class StoredRef(ArtifactRef):
    """An `ArtifactRef` read from a file: its path must be ``artifacts/<kind>/<name>`` under the root."""

    @field_validator("path")
    @classmethod
    def _inside_root(cls, path: str) -> str:
        parts = PurePosixPath(path).parts
        if (len(parts) != 3 or parts[0] != ARTIFACTS or not _KIND.match(parts[1])
                or not re.fullmatch(r"[0-9a-f]{16}", parts[2])):
            raise ValueError(f"not an artifact path under the data root: {path!r}")
        return path

    @field_validator("files")
    @classmethod
    def _plain_names(cls, files: dict[str, str]) -> dict[str, str]:
        for name in files:
            if "/" in name or "\\" in name or name in ("", ".", ".."):
                raise ValueError(f"not a plain file name: {name!r}")
        return files


def damaged_file(root: Path, files: dict[str, str]) -> tuple[str, str] | None:
    """The first of ``files`` (name -> SHA-256) under ``root`` that is ``"missing"`` or ``"altered"``.

    Returns ``(name, "missing" | "altered")``, or None when every file has its recorded bytes.
    """
    for name, digest in files.items():
        try:
            if sha256_file(root / name) != digest:
                return name, "altered"
        except OSError:
            return name, "missing"
    return None


class ArtifactWriter:
    """Context manager that builds one artifact directory and moves it into place atomically.

    Usage::

        with ArtifactWriter(root, "scaled", params) as w:
            df.to_parquet(w.path("scaled.parquet"))
            w.write_json("scaler.json", {...})
        ref = w.ref

    Nothing appears under ``<root>/artifacts/<kind>`` unless the block completes; on an
    exception the temporary directory is removed.
    """

    def __init__(self, root: str | os.PathLike[str], kind: str, params: dict[str, Any]):
        if not _KIND.match(kind):
            raise ValueError(f"artifact kind must be a lower-case identifier, got {kind!r}")
        self.root = Path(root)
        self.kind = kind
        self.params = params
        self.ref: ArtifactRef | None = None
        self._tmp: Path | None = None

    def __enter__(self) -> ArtifactWriter:
        staging = self.root / ARTIFACTS / STAGING
        staging.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=staging_prefix(self.kind), dir=staging))
        return self

    def path(self, name: str) -> Path:
        """Where to write file ``name`` inside the artifact being built."""
        assert self._tmp is not None, "use ArtifactWriter as a context manager"
        return self._tmp / name

    def write_json(self, name: str, obj: Any) -> None:
        self.path(name).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def write_text(self, name: str, text: str) -> None:
        self.path(name).write_text(text)

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tmp is not None
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        files = {p.name: sha256_file(p) for p in sorted(self._tmp.iterdir()) if p.is_file()}
        digest = digest_files(files)
        relative = f"{ARTIFACTS}/{self.kind}/{digest[:16]}"
        final = self.root / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        candidate = ArtifactRef(kind=self.kind, path=relative, sha256=digest, files=files, params=self.params,
                                root=str(self.root))
        faults.point("artifact:before-rename")
        if final.exists():
            kept = self._already_there(candidate)
            if kept is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                candidate = kept
            else:  # a damaged copy of the same content: replace it
                shutil.rmtree(final)
                os.replace(self._tmp, final)
        else:
            try:
                os.replace(self._tmp, final)
            except OSError:  # another process moved identical content into place first
                shutil.rmtree(self._tmp, ignore_errors=True)
                kept = self._already_there(candidate)
                if kept is None:
                    raise
                candidate = kept
        faults.point("artifact:after-rename")
        self.ref = candidate

    @staticmethod
    def _already_there(candidate: ArtifactRef) -> ArtifactRef | None:
        """The artifact already at ``candidate``'s path when it holds the same content, intact: ``candidate`` with
        the measured files (`MEASURED_FILES`) of that copy, whose measurement is kept; None when it is damaged."""
        files = dict(candidate.files)
        for name in MEASURED_FILES:
            if name in files:
                try:
                    if not isinstance(json.loads((candidate.dir / name).read_text()), dict):
                        return None
                    files[name] = sha256_file(candidate.dir / name)
                except (OSError, ValueError):  # missing or not JSON: damaged
                    return None
        there = candidate.model_copy(update={"files": files})
        return there if there.is_intact() else None


def staging_prefix(kind: str) -> str:
    """Name prefix of a staging folder: ``<kind>.<host>.<pid>.``, so the writer can be told alive or gone."""
    return f"{kind}.{socket.gethostname()}.{os.getpid()}."


def _writer_alive(name: str) -> bool:
    """False only for a staging folder written on this host by a process that no longer exists."""
    try:
        _kind, rest = name.split(".", 1)
        host, pid, _random = rest.rsplit(".", 2)
        return process_alive(host, int(pid))
    except ValueError:
        return True  # not a name this module gives: leave it


def clean_staging(root: str | os.PathLike[str]) -> list[str]:
    """Remove staging folders left under ``root`` by writers on this host that are gone; returns their names."""
    staging = Path(root) / ARTIFACTS / STAGING
    removed = []
    if staging.is_dir():
        for entry in sorted(staging.iterdir()):
            if entry.is_dir() and not _writer_alive(entry.name):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    return removed


def read_json(ref: ArtifactRef, name: str) -> Any:
    """One JSON file of an artifact, by name."""
    return json.loads(ref.file(name).read_text())

"""Zip files (``.keras``, ``.skops``) written with the same bytes for the same content.

Keras and skops write the time of saving into their zip entries and memory addresses (``id()``) into
their contents; for a content-addressed store that turns one model into many. `restamp` rewrites such
a file with fixed entry dates, a fixed order and the caller's clean-up of each entry's bytes.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def restamp(raw: str | Path, path: str | Path, clean: Callable[[str, bytes], tuple[str, bytes]]) -> None:
    """Write the zip ``raw`` to ``path`` again, each entry ``(name, data)`` passed through ``clean`` (which may
    rename it), in sorted order, with `FIXED_DATE` and deflate."""
    with zipfile.ZipFile(raw) as src:
        entries = sorted(clean(name, src.read(name)) for name in src.namelist())
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, data)


def numbering(pattern: str, template: str) -> Callable[[str], str]:
    """A function replacing each match of ``pattern`` (its group 1: a memory address) in a text by ``template``
    formatted with a number given in order of first appearance (the same address, the same number)."""
    ids: dict[str, int] = {}
    regex = re.compile(pattern)

    def renumber(text: str) -> str:
        return regex.sub(lambda m: template.format(ids.setdefault(m.group(1), len(ids) + 1)), text)

    return renumber


def temporary_beside(path: str | Path, suffix: str) -> str:
    """A new empty temporary file in ``path``'s folder (for the raw file `restamp` reads)."""
    import tempfile

    fd, raw = tempfile.mkstemp(dir=Path(path).parent, prefix=".raw-", suffix=suffix)
    os.close(fd)
    return raw

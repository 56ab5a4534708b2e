"""Zip files (``.keras``, ``.skops``) written with the same bytes for the same content.

Keras and skops write the time of saving into their zip entries and memory addresses (``id()``) into
their contents; for a content-addressed store that turns one model into many. `stable_save` lets the
library write its file, then writes it again with fixed entry dates, a fixed order and the caller's
clean-up of the entries.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def stable_save(path: str | Path, save: Callable[[str], None],
                clean: Callable[[dict[str, bytes]], dict[str, bytes]]) -> None:
    """``save(raw)`` writes a zip file beside ``path``; it is written again at ``path`` with its entries
    (name -> bytes) passed through ``clean`` (which may rename them), in sorted order, with `FIXED_DATE`."""
    fd, raw = tempfile.mkstemp(dir=Path(path).parent, prefix=".raw-", suffix=Path(path).suffix)
    os.close(fd)
    try:
        save(raw)
        with zipfile.ZipFile(raw) as src:
            entries = clean({name: src.read(name) for name in src.namelist()})
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
            for name in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                dst.writestr(info, entries[name])
    finally:
        Path(raw).unlink(missing_ok=True)


def numbering(pattern: str, template: str) -> Callable[[str], str]:
    """A function replacing each match of ``pattern`` (its group 1: a memory address) in a text by ``template``
    formatted with a number given in order of first appearance (the same address, the same number)."""
    ids: dict[str, int] = {}
    regex = re.compile(pattern)

    def renumber(text: str) -> str:
        return regex.sub(lambda m: template.format(ids.setdefault(m.group(1), len(ids) + 1)), text)

    return renumber

"""Small data and configs shared by the tests."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.config import Config
from tasks.config_text import load_config

TINY = [
    "encoder.kind='mlp'",  # one encoder, no search (tests/test_selection.py covers the search)
    "encoder.hidden=[16]",
    "encoder.epochs=4",
    "encoder.batch_size=32",
    "encoder.dropout=0.0",
    "features.batch_size=50",
    "linear_hinge.epochs=5",
    "rff_svm.epochs=3",
    "rff_svm.n_components=64",
]


def without_timings(metrics: dict) -> dict:
    """metrics.json less the measured ``*_seconds`` fields (the rest is a function of data, config, seed)."""
    return {k: (without_timings(v) if isinstance(v, dict) else v)
            for k, v in metrics.items() if not k.endswith("_seconds")}


def iris_csv(path: Path, label_names: bool = True) -> Path:
    """Iris as a CSV with a string (or int) label column ``species``."""
    from sklearn.datasets import load_iris

    bunch = load_iris()
    df = pd.DataFrame(bunch.data, columns=["sepal_length", "sepal_width", "petal_length", "petal_width"])
    df["species"] = np.asarray(bunch.target_names)[bunch.target] if label_names else bunch.target
    df.to_csv(path, index=False)
    return path


def tiny_config(csv: Path, *extra: str) -> Config:
    return load_config(None, [*TINY, *extra], {"data.input": str(csv), "data.label": "species", "data.dataset": None})


def statuses(result) -> dict[str, str]:
    return {name: s.status for name, s in result.stages.items()}


def run_main(*args: str) -> subprocess.CompletedProcess:
    """``marginflow ARGS`` through `flows.cli.main` in this process: the same parsing, commands, output and exit
    codes as `tests.conftest.run_cli`, without a new process's imports (about 5 s of CPU on these machines for
    a command that loads Keras). For what a command does; what only a process shows (the installed entry point,
    signals, a terminal, a fresh Prefect home) stays with `run_cli`.

    The environment variables and Prefect console levels a command sets for its process are put back after.
    """
    from flows.cli import main
    from flows.display import console_handlers

    env = dict(os.environ)
    levels = [(h, h.level, h.formatter) for h in console_handlers()]
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.environ.clear()
        os.environ.update(env)
        for handler, level, formatter in levels:
            handler.setLevel(level)
            handler.setFormatter(formatter)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())

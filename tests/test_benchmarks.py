"""Every benchmark runs at tiny size (``--smoke``), so that a benchmark that breaks fails the suite.

``make bench-smoke`` (``pytest -m bench_smoke``) runs just these. What each prints is its table; the test
checks the table's header is there, not the numbers (a smoke run's numbers mean nothing).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

BENCHMARKS = ROOT / "benchmarks"
HELPERS = {"smoke.py", "imagegen.py"}  # imported by the benchmarks, not run
HEADERS = {
    "accuracy.py": "features_svc",
    "image_encoders.py": "digits, features + SVC accuracy",
    "loop.py": "marginflow loop",
    "predict.py": "marginflow predict",
    "scale.py": "## exact vs approx",
    "speed.py": "marginflow speed",
}


def test_every_benchmark_has_a_smoke_mode_and_is_run_here():
    scripts = {p.name for p in BENCHMARKS.glob("*.py")} - HELPERS
    assert scripts == set(HEADERS), "a benchmark without a smoke test here (or a test without its benchmark)"
    for name in scripts:
        assert '"--smoke"' in (BENCHMARKS / name).read_text(), f"{name} has no --smoke"


def _smoke(name: str, tmp_path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / name), "--smoke"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert HEADERS[name] in proc.stdout, proc.stdout[-2000:]


# one class per benchmark: ``--dist loadscope`` (make test) spreads classes over the workers
@pytest.mark.slow
@pytest.mark.bench_smoke
class _Smoke:
    script = ""

    def test_smoke(self, prefect_api, tmp_path):
        _smoke(self.script, tmp_path)


class TestAccuracySmoke(_Smoke):
    script = "accuracy.py"


class TestImageEncodersSmoke(_Smoke):
    script = "image_encoders.py"


class TestLoopSmoke(_Smoke):
    script = "loop.py"


class TestPredictSmoke(_Smoke):
    script = "predict.py"


class TestScaleSmoke(_Smoke):
    script = "scale.py"


class TestSpeedSmoke(_Smoke):
    script = "speed.py"


def test_a_smoke_test_per_benchmark():
    assert sorted(c.script for c in _Smoke.__subclasses__()) == sorted(HEADERS)

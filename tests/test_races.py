"""Stages start together in threads: cache keys and report charts must not race (stress tests).

CPython 3.11 can fail building AST objects in several threads at once (gh-106905, ``SystemError: AST
constructor recursion depth mismatch``), and a first ``import matplotlib.pyplot`` racing in two threads
leaves a half-imported module. Code digests read imports with `tokenize`; charts use matplotlib's
object API, imported once under one lock.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
from pathlib import Path

from tasks.store.code import code_units, parse
from tests.conftest import ROOT

STAGES = ["tasks.ingest", "tasks.scale", "tasks.encoder_candidate", "tasks.score_candidate", "tasks.train_encoder",
          "tasks.extract_features", "tasks.train_svc", "tasks.deep_hinge", "tasks.evaluate", "tasks.bundle"]


def _hammer(jobs, threads: int = 8) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(i: int) -> None:
        try:
            barrier.wait()
            jobs[i % len(jobs)]()
        except BaseException as e:  # noqa: BLE001  (every failure is the test's result)
            errors.append(e)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return errors


def test_code_digests_and_source_parsing_in_parallel_threads_never_fail_and_agree(tmp_path):
    from tasks.core.report import plot_confusions, plot_history

    want = {m: code_units(f"tasks.{m}:{m}") for m in STAGES}
    got: dict[str, list] = {m: [] for m in STAGES}
    big = "\n".join(p.read_text() for p in (ROOT / "tasks").rglob("*.py"))  # what other libraries parse meanwhile

    def digest(m: str):
        return lambda: got[m].append(code_units(f"tasks.{m}:{m}"))

    def chart(i: int):
        return lambda: (plot_confusions({"m": {"confusion": [[3, 1], [0, 4]], "accuracy": 0.875}}, ["a", "b"],
                                        tmp_path / f"c{i}.png"),
                        plot_history({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}, tmp_path / f"h{i}.png"))

    jobs = [*(digest(m) for m in STAGES), *(chart(i) for i in range(4)), lambda: ast.parse(big)]
    for _ in range(6):
        parse.cache_clear()  # each round reads every module again (parsing is memoised by source text)
        errors = _hammer(jobs, threads=len(jobs))
        assert not errors, errors[0]
    for m in STAGES:
        assert got[m] and all(g == want[m] for g in got[m])
    assert (tmp_path / "c0.png").stat().st_size > 1000


_FIRST_IMPORT = """
import sys, threading
from pathlib import Path
from tasks.core.report import plot_approaches, plot_confusions
out = Path(sys.argv[1])
m = {"approaches": {"a": {"accuracy": 0.9}, "b": {"accuracy": 0.8}}, "main": "a", "source": "s", "n_test": 10}
errors = []
def run(i):
    try:
        (plot_confusions({"a": {"confusion": [[1, 0], [0, 1]], "accuracy": 1.0}}, ["x", "y"], out / f"c{i}.png")
         if i % 2 else plot_approaches(m, out / f"a{i}.png"))
    except BaseException as e:
        errors.append(repr(e))
ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print("ERRORS", errors)
sys.exit(1 if errors else 0)
"""


def test_first_chart_imports_racing_in_fresh_processes_never_fail(tmp_path):
    for i in range(3):
        out = tmp_path / str(i)
        out.mkdir()
        proc = subprocess.run([sys.executable, "-c", _FIRST_IMPORT, str(out)], capture_output=True, text=True,
                              timeout=120, cwd=ROOT)
        assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
        assert "matplotlib.pyplot" not in proc.stdout
        assert len(list(Path(out).glob("*.png"))) == 4

"""The house rule, checked on the source: who may import whom, and no import circle.

``flows -> tasks/<stage>.py -> tasks/_<helper>.py -> tasks/ops -> tasks/{core | store} -> tasks/obs ->
tasks.{config, catalog, errors, schema, faults}``: core (arrays and plain values) and store (files) side by side,
neither importing the other; only `PREFECT_PARTS` below the stages import Prefect.
Every ``import`` statement counts, also those inside functions. A stage module is a module
``tasks/<name>.py`` other than the base ones; ``tasks/_<name>.py`` is machinery shared by
stages (imported only by stage modules).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BASE = {"tasks", "tasks.config", "tasks.config_text", "tasks.errors", "tasks.catalog", "tasks.faults", "tasks.schema"}
PREFECT_PARTS = {"tasks.store.cache", "tasks.obs.runlog"}  # the modules below the stages that import Prefect


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    files = [*ROOT.joinpath("tasks").rglob("*.py"), *ROOT.joinpath("flows").rglob("*.py")]
    return {_module_name(p): p for p in files if "__pycache__" not in p.parts}


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import statement; names resolved to modules."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            for a in node.names:
                full = f"{base}.{a.name}"
                found.append((full if full in MODULES else base, id(node) in top_level))
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def room(name: str) -> str:
    if name.startswith("flows"):
        return "flows"
    if name in BASE:
        return "base"
    for r in ("core", "store", "ops", "obs"):
        if name.startswith(f"tasks.{r}"):
            return r
    if name.startswith("tasks._"):
        return "helper"
    if name.startswith("tasks."):
        return "stage"
    return "outside"


# room -> rooms it may import
# core and store are side by side: neither imports the other (core computes on arrays and plain values, store
# reads and writes files); obs (progress and logging) is below both
ALLOWED = {
    "base": {"base"},
    "obs": {"base", "obs"},
    "core": {"base", "core", "obs"},
    "store": {"base", "store", "obs"},
    "ops": {"base", "core", "store", "ops", "obs"},
    "helper": {"base", "core", "store", "ops", "obs"},
    "stage": {"base", "core", "store", "ops", "helper", "obs"},
    "flows": {"base", "core", "store", "ops", "helper", "stage", "flows", "obs"},
}


def test_the_rooms_exist_and_hold_modules():
    rooms = {room(n) for n in MODULES}
    assert {"base", "core", "store", "ops", "obs", "stage", "flows"} <= rooms
    assert "outside" not in rooms


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("tasks")))
def test_imports_follow_the_rule(name):
    mine = room(name)
    problems = []
    for target, _top in GRAPH[name]:
        if not target.startswith(("tasks", "flows")):
            if target.split(".")[0] == "prefect" and mine in ("base", "core", "ops", "store", "obs") \
                    and name not in PREFECT_PARTS:
                problems.append(f"imports Prefect ({target})")
            continue
        theirs = room(target)
        if theirs not in ALLOWED[mine]:
            problems.append(f"{mine} module imports {theirs} module {target}")
        if mine in ("core", "ops", "store", "obs") and target in PREFECT_PARTS and name not in PREFECT_PARTS:
            problems.append(f"{mine} module imports a module that imports Prefect ({target})")
        if mine == "stage" and theirs == "stage" and target != name:
            problems.append(f"stage module imports another stage module ({target}); shared code goes to tasks._*")
    assert not problems, f"{name}: " + "; ".join(problems)


def test_no_import_circle():
    edges = {n: sorted({t for t, _ in GRAPH[n] if t in MODULES and t != n}) for n in MODULES}
    for pkg in MODULES:  # importing a.b.c runs a/__init__ and a/b/__init__ first: not a circle of ours
        edges[pkg] = [t for t in edges[pkg] if not pkg.startswith(t + ".")]
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        path.append(n)
        for t in edges[n]:
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[n] = 2

    for n in sorted(MODULES):
        if n not in state:
            visit(n)


def test_the_checker_sees_a_violation(tmp_path):
    """The rule test is not vacuous: a core module importing a stage module is caught."""
    fake = tmp_path / "bad.py"
    fake.write_text("def f():\n    from tasks.train_svc import train_svc\n")
    found = _imports("tasks.core.bad", fake)
    assert ("tasks.train_svc", False) in found
    assert room("tasks.train_svc") not in ALLOWED[room("tasks.core.bad")]


def test_no_folder_shadows_a_backend():
    for where in (ROOT, ROOT / "tasks", ROOT / "flows"):
        assert not {"jax", "torch", "keras"} & {p.name for p in where.iterdir() if p.is_dir()}


def _imported_by(argv: list[str], tmp_path: Path) -> set[str]:
    script = (
        "import sys\n"
        "from flows.cli import main\n"
        f"code = main({argv!r})\n"
        "print('imported:', *(m for m in ('prefect', 'keras', 'jax', 'sklearn') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    line = [x for x in proc.stdout.splitlines() if x.startswith("imported:")]
    assert line, proc.stdout + proc.stderr
    return set(line[-1].split()[1:])


def test_models_and_promote_import_neither_prefect_nor_keras(tmp_path):
    assert _imported_by(["models", "--data-dir", str(tmp_path)], tmp_path) == set()
    assert _imported_by(["promote", "v0001", "--data-dir", str(tmp_path)], tmp_path) == set()


def test_every_plan_row_matches_its_stage_function():
    """Each row of `flows.plan` holds the task itself, and its inputs, config and fan-outs are the function's
    parameters (as Kedro checks a node against its function)."""
    from flows.plan import PIPELINE

    for stage in PIPELINE:
        stage.check()
        assert stage.task.fn.__wrapped__.__module__ == f"tasks.{stage.name}"


def test_a_plan_row_that_does_not_match_its_function_is_refused():
    import dataclasses

    from flows.plan import BY_STAGE, Grid

    wrong = dataclasses.replace(BY_STAGE["linear_hinge"], fanouts=(Grid(),))  # linear_hinge takes no cv
    with pytest.raises(TypeError, match="linear_hinge"):
        wrong.check()
    with pytest.raises(TypeError, match="train_svc"):
        dataclasses.replace(BY_STAGE["train_svc"], inputs=("scale",) * 2).check()
    with pytest.raises(TypeError, match="evaluate"):  # a fan-out its function reads, left out of the row
        dataclasses.replace(BY_STAGE["evaluate"], fanouts=()).check()


# a literal that is an artifact file's name by coincidence, with why it is not one
NOT_ARTIFACT_FILES = {("tasks/core/networks.py", "config.json"): "a member of Keras's own .keras archive"}


def test_no_module_but_the_declarations_names_an_artifact_file():
    """Every artifact file is named in `tasks.store.kinds` only; every other module of the package (the rest of
    the store included), the benchmarks and the scripts ask it."""
    from tasks.store import kinds

    declared = {str(f) for k in kinds.KINDS.values() for f in (*k.files, *k.optional)}
    declared |= {str(v) for v in vars(kinds).values() if isinstance(v, kinds.File)}
    assert {"meta.json", "encoder.keras", "svc.skops", "features.parquet", "champion.json"} <= declared
    found = []
    for path in sorted([*ROOT.joinpath("tasks").rglob("*.py"), *ROOT.joinpath("flows").rglob("*.py"),
                        *ROOT.joinpath("benchmarks").glob("*.py"), *ROOT.joinpath("scripts").glob("*.py")]):
        relative = path.relative_to(ROOT).as_posix()
        if relative == "tasks/store/kinds.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in declared \
                    and (relative, node.value) not in NOT_ARTIFACT_FILES:
                found.append(f"{relative}:{node.lineno} {node.value!r}")
    assert not found, "artifact files named outside tasks/store: " + ", ".join(found)


def test_the_readme_layout_lists_every_module_once():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout"):]
    section = section[:section.index("```", section.index("```") + 3)]
    listed = [line.split()[0] for line in section.splitlines() if line.startswith(("flows/", "tasks/"))]
    files = sorted(p.relative_to(ROOT).as_posix() for p in [*ROOT.joinpath("flows").rglob("*.py"),
                                                            *ROOT.joinpath("tasks").rglob("*.py")]
                   if "__pycache__" not in p.parts and p.relative_to(ROOT).as_posix() != "flows/__init__.py")
    assert sorted(listed) == files and len(listed) == len(set(listed))

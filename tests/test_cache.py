"""The cache spine: keys cover all the code a stage runs, records are safe JSON, roots can move,
and a model's identity ignores what did not make it."""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.pipeline import pipeline
from flows.plan import STAGES
from tasks.ops.bundle import FILES, MANIFEST, Bundle, bundle_identity
from tasks.ops.registry import Registry
from tasks.store.artifacts import ArtifactWriter, sha256_file
from tasks.store.cache import RecordProblem, read_record, record_path, write_record
from tasks.store.code import code_units
from tests.conftest import ROOT, copy_root
from tests.helpers import TINY, statuses, tiny_config

SOLVER_ROWS = ("train_svc.solver", "raw_svc.solver")  # each SVC stage's choose_solver task
ALL_CACHED = dict.fromkeys((*STAGES, *SOLVER_ROWS), "cached")


# ---------------------------------------------------------------- the code a key covers


def test_code_units_follow_calls_to_any_depth_at_the_grain_of_functions():
    reached = {unit.split(":")[0]: unit for unit in code_units("tasks.train_svc:train_svc")}
    units = code_units("tasks.train_svc:train_svc")
    # train_svc -> _svc_stage.fit_svc_artifact -> core.svm.fit_svc, and the margin module's rbf_gamma
    for name in ("tasks.train_svc:train_svc", "tasks._svc_stage:fit_svc_artifact", "tasks.core.svm:fit_svc",
                 "tasks.core.margin:rbf_gamma", "tasks.faults:point", "tasks:<prelude>"):
        assert name in units, name
    assert "tasks.core.networks" not in reached  # the SVC stage does not run the encoder's code
    assert "tasks.core.margin:step_budget" not in units  # a module it uses, but not this function of it
    assert "tasks.obs.runlog:tracked_run" not in units  # the flow's, not a stage's
    assert "tasks.core.layers:RandomFourierFeatures" in code_units("tasks.rff_svm:rff_svm")  # imported inside a function


def test_comments_docstrings_help_texts_and_log_messages_are_not_code(tmp_path):
    from tasks.store.code import parse

    base = parse("tasks.m", 'import logging\nfrom tasks.config import thing\n\ndef f(x):\n    """Doc."""\n'
                 '    logging.getLogger().info("%s rows", x)  # note\n    return Field(1, description="help")\n',
                 False)
    edited = parse("tasks.m", 'import logging\nfrom tasks.config import thing\n\n# a comment\ndef f(x):\n'
                   '    """Other doc."""\n    logging.getLogger().info("%s rows read", x)\n'
                   '    return Field(1, description="other help")\n', False)
    changed = parse("tasks.m", 'import logging\nfrom tasks.config import thing\n\ndef f(x):\n'
                    '    logging.getLogger().info("%s rows", x + 1)\n    return Field(2, description="help")\n', False)
    assert base.defs["f"][0].text == edited.defs["f"][0].text
    assert base.defs["f"][0].text != changed.defs["f"][0].text
    assert base.imports == {"thing": "tasks.config.thing"}


COPY_APPROACHES = "evaluate.approaches=['features_svc', 'raw_svc', 'linear_hinge', 'deep_hinge', 'rff_svm']"
_RUN = """
import json, sys
import tasks
assert tasks.__file__.startswith(sys.argv[1]), tasks.__file__
from flows.pipeline import pipeline
from tasks.config_text import load_config
config = load_config(None, json.loads(sys.argv[2]), {"data.input": sys.argv[3], "data.label": "species",
                                                     "data.dataset": None})
result = pipeline(config=config, data_dir=sys.argv[4])
print("STATUSES " + json.dumps({k: v.status for k, v in result.stages.items()}))
"""


def _run_copy(pkg: Path, csv: Path, data: Path) -> dict[str, str]:
    overrides = [*TINY, COPY_APPROACHES]
    env = {**os.environ, "PYTHONPATH": str(pkg)}
    proc = subprocess.run([sys.executable, "-c", _RUN, str(pkg), json.dumps(overrides), str(csv), str(data)],
                          capture_output=True, text=True, cwd=pkg, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("STATUSES "))
    return json.loads(line.removeprefix("STATUSES "))


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: {old!r} is not there once"
    path.write_text(text.replace(old, new))


@pytest.mark.slow
def test_editing_code_reruns_exactly_the_stages_that_reach_it(trained_runs, tmp_path):
    pkg = tmp_path / "pkg"
    for part in ("tasks", "flows"):
        shutil.copytree(ROOT / part, pkg / part, ignore=shutil.ignore_patterns("__pycache__"))
    # a run of the same config by the original source (in this process), its root copied (a key is the code's
    # text, not where the code lies)
    shared = trained_runs(COPY_APPROACHES)
    assert set(statuses(shared.result).values()) == {"ran"}
    csv, data = shared.csv, copy_root(shared.data, tmp_path)

    # what makes nothing: a log message of the training stages' epoch log, a config help text (the CLI's
    # --help), a comment, a docstring, and a function no stage calls (the flow's crash bookkeeping). The copy,
    # edited so, still finds every stage the original source ran
    tasks = pkg / "tasks"
    _edit(tasks / "obs" / "runlog.py", '"%s epoch %d/%d %s"', '"%s: epoch %d of %d (%s)"')
    _edit(tasks / "config.py", 'description="early stopping patience on val loss', 'description="patience, on val loss')
    _edit(tasks / "core" / "svm.py", "def fit_svc(", "# an edit\ndef fit_svc(")
    _edit(tasks / "obs" / "runlog.py", "def tracked_run(root: str):\n", "def tracked_run(root: str):\n    _ = 0\n")
    assert set(_run_copy(pkg, csv, data).values()) == {"cached"}

    # fit_keras_margin is run by linear_hinge and rff_svm only (deep_hinge imports its module for a constant, and
    # stays cached: a module grain reran it); they retrain to the same files (byte-stable saves; only timing.json
    # differs, which is not part of an artifact's digest): evaluate stays cached
    _edit(tasks / "core" / "margin_models.py", "    streamed = isinstance(X, TableRows)\n",
          "    streamed = isinstance(X, TableRows)\n    _ = 0\n")
    rerun = {"linear_hinge", "rff_svm"}
    assert _run_copy(pkg, csv, data) == {s: "ran" if s in rerun else "cached" for s in (*STAGES, *SOLVER_ROWS)
                                         if s != "knn"}

    # searched_config (core/svm.py) is run by both SVC stages' fits, not by their solver decisions (a module grain
    # reran those too); the bundle holds train_svc's SVC and the report reads both
    _edit(tasks / "core" / "svm.py", "    if not rows:\n        return config, None\n",
          "    if not rows:\n        return config, None\n    _ = 0\n")
    rerun = {"train_svc", "raw_svc", "evaluate", "bundle"}
    assert _run_copy(pkg, csv, data) == {s: "ran" if s in rerun else "cached" for s in (*STAGES, *SOLVER_ROWS)
                                         if s != "knn"}


# ---------------------------------------------------------------- records


def _artifact(root: Path):
    with ArtifactWriter(root, "thing", {"p": 1}) as w:
        w.write_text("a.txt", "hello")
    return w.ref


def _good_record(root: Path) -> dict:
    ref = _artifact(root)
    write_record(root, "scale", "k" * 64, ref)
    return json.loads(record_path(root, "k" * 64).read_text())


def test_record_round_trip_is_plain_relative_json(tmp_path):
    record = _good_record(tmp_path)
    assert record["format"] == "marginflow-cache/1" and record["artifact"]["path"].startswith("artifacts/thing/")
    assert "root" not in record["artifact"]
    ref = read_record(tmp_path, "scale", "k" * 64)
    assert ref is not None and ref.file("a.txt").read_text() == "hello"
    assert read_record(tmp_path, "scale", "0" * 64) is None  # no record: a plain miss


@pytest.mark.parametrize("damage", [
    lambda r: {**r, "artifact": {**r["artifact"], "path": "/etc"}},
    lambda r: {**r, "artifact": {**r["artifact"], "path": "artifacts/thing/../../../../etc"}},
    lambda r: {**r, "artifact": {**r["artifact"], "files": {"../../x": "0" * 64}}},
    lambda r: {**r, "artifact": {**r["artifact"], "kind": "other"}},
    lambda r: {**r, "stage": "train_svc"},
    lambda r: {**r, "format": "prefect"},
    lambda r: {**r, "serializer": {"type": "pickle"}},
    lambda r: [r],
    lambda r: "not json {",
], ids=["absolute path", "dot-dot path", "dot-dot file", "kind mismatch", "other stage", "format", "extra key",
        "a list", "not json"])
def test_an_invalid_record_is_a_miss_with_a_reason(tmp_path, damage):
    record = damage(_good_record(tmp_path))
    record_path(tmp_path, "k" * 64).write_text(record if isinstance(record, str) else json.dumps(record))
    with pytest.raises(RecordProblem):
        read_record(tmp_path, "scale", "k" * 64)


class _Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_forged_pickle_record_is_ignored_and_never_executed(prefect_api, csv, tmp_path):
    data = tmp_path / "data"
    config = tiny_config(csv, "evaluate.approaches=['features_svc']")
    first = pipeline(config=config, data_dir=str(data))
    records = {json.loads(p.read_text())["stage"]: p for p in (data / "cache").glob("*.json")}

    # the payload is live: unpickled, it creates its marker
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof)))
    assert proof.exists()

    marker = tmp_path / "pwned"
    forged = {"metadata": {"storage_key": str(records["scale"]), "expiration": None,
                           "serializer": {"type": "pickle", "picklelib": "pickle", "picklelib_version": None},
                           "prefect_version": "3.9.1", "storage_block_id": None},
              "result": base64.b64encode(pickle.dumps(_Payload(marker))).decode()}
    records["scale"].write_text(json.dumps(forged))
    Path(str(records["scale"]).removesuffix(".json")).write_text(json.dumps(forged))  # Prefect's own record name
    again = pipeline(config=config, data_dir=str(data))
    assert statuses(again) == {**dict.fromkeys(statuses(first), "cached"), "scale": "ran"}
    assert not marker.exists()
    assert again.artifacts["scale"] == first.artifacts["scale"]  # recomputed, same bytes


# ---------------------------------------------------------------- portable roots and model identity


def test_a_copied_data_root_reuses_every_stage_and_registers_nothing_new(trained_runs, tmp_path):
    shared = trained_runs()  # a finished run (its root is shared: copied here, and the copy moved)
    config = tiny_config(shared.csv)
    assert shared.result.model == "v0001" and set(statuses(shared.result).values()) == {"ran"}
    first_root, second_root = copy_root(shared.data, tmp_path / "one"), tmp_path / "two"
    shutil.copytree(first_root, second_root)
    shutil.rmtree(first_root)
    moved = pipeline(config=config, data_dir=str(second_root))
    assert statuses(moved) == ALL_CACHED
    assert (moved.model, moved.model_is_new) == ("v0001", False)
    assert Registry(second_root).names() == ["v0001"]
    assert all(Path(s.artifact).is_relative_to(second_root) for s in moved.stages.values())


def test_an_unrelated_config_change_registers_no_new_version(trained_runs, tmp_path):
    shared = trained_runs()
    csv, data = shared.csv, copy_root(shared.data, tmp_path)
    first = pipeline(config=tiny_config(csv), data_dir=str(data))
    assert statuses(first) == ALL_CACHED and first.model == "v0001"
    changed = pipeline(config=tiny_config(csv, "rff_svm.epochs=2", "retrain.tolerance=0.1"), data_dir=str(data))
    assert statuses(changed) == {**ALL_CACHED, "rff_svm": "ran", "evaluate": "ran"}
    assert (changed.model, changed.model_is_new) == ("v0001", False)
    assert changed.artifacts["bundle"] == first.artifacts["bundle"]
    model = pipeline(config=tiny_config(csv, "svc.C=0.5"), data_dir=str(data))
    assert (model.model, model.model_is_new) == ("v0002", True)  # a model setting is a new model
    config = json.loads(Registry(data).path("v0002").joinpath("config.json").read_text())
    assert set(config) == {"data", "scale", "encoder", "features", "svc"} and "input" not in config["data"]


def test_an_old_schema_bundle_loads_and_predicts(prefect_api, csv, tmp_path):
    data = tmp_path / "data"
    pipeline(config=tiny_config(csv, "evaluate.approaches=['features_svc']"), data_dir=str(data))
    old = tmp_path / "old"
    shutil.copytree(Registry(data).path("v0001"), old)
    for f in old.iterdir():
        f.chmod(0o644)
    config = json.loads((old / "config.json").read_text())
    config["svc"]["kernel_name"] = config["svc"].pop("kernel")  # a renamed key
    del config["features"]  # a removed section
    config["legacy"] = {"anything": [1, 2]}  # a section today's Config does not know
    (old / "config.json").write_text(json.dumps(config))
    files = {name: sha256_file(old / name) for name in FILES}
    (old / MANIFEST).write_text(json.dumps({"format": "marginflow-bundle/1", "files": files}))

    from tasks.config import Config

    with pytest.raises(ValueError):
        Config.model_validate(config)  # today's schema would refuse it
    frame = pd.read_csv(csv).drop(columns=["species"])
    loaded, current = Bundle.load(old), Bundle.load(Registry(data).path("v0001"))
    assert loaded.feature_batch == 1024  # the removed key's default
    np.testing.assert_array_equal(loaded.predict(frame), current.predict(frame))
    assert bundle_identity(files) != current.identity  # its config differs, so it is another model

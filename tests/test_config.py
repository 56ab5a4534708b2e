"""Unit tests: the typed config and its error messages."""

from __future__ import annotations

import pytest

from tasks.config import Config, EncoderConfig
from tasks.config_text import load_config
from tasks.errors import InputError


def test_defaults_and_overrides_in_order(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[svc]\nC = 3.0\nkernel = 'linear'\n[encoder]\nhidden = [8]\n")
    c = load_config(str(f), ["svc.C=0.5", "encoder.hidden=[32, 16]"], {"data.dataset": "wine"})
    assert (c.svc.C, c.svc.kernel, c.encoder.hidden, c.data.dataset) == (0.5, "linear", [32, 16], "wine")
    assert load_config() == Config()  # the default dataset is digits, with the same defaults as any data


def test_file_flag_replaces_builtin_dataset():
    c = load_config(None, [], {"data.input": "x.csv", "data.label": "y", "data.dataset": None})
    assert c.data.input == "x.csv" and c.data.dataset is None


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["svc.C=-1"], "svc.C"),
        (["svc.nope=1"], "svc.nope: unknown key"),
        (["nope.x=1"], "unknown section 'nope'"),
        (["encoder.hidden=[]"], "encoder.hidden"),
        (["svc.gamma='wide'"], "svc.gamma"),
        (["data.input=x.csv", "data.dataset='digits'"], "either data.dataset or data.input"),
        (["svc.C"], "expected section.key=value"),
        (["encoder.epochs=0"], "encoder.epochs"),
        (["data.shape=[0, 4]"], "data.shape"),
        (["data.layout='video'"], "data.layout"),
        (["knn.k_values=[]"], "knn.k_values"),
    ],
)
def test_invalid_config_names_the_key(overrides, needle):
    with pytest.raises(InputError, match=None) as e:
        load_config(None, overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_bad_toml_file_names_the_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[svc\nC=1")
    with pytest.raises(InputError, match="bad.toml: invalid TOML"):
        load_config(str(f))
    with pytest.raises(InputError, match="missing.toml: config file not found"):
        load_config(str(tmp_path / "missing.toml"))


def test_no_dataset_has_defaults_of_its_own():
    for dataset in ("digits", "mnist1d", "iris"):
        assert load_config(None, [], {"data.dataset": dataset}).encoder == EncoderConfig()
    assert EncoderConfig().kind == "auto"


def test_the_moved_input_shape_key_says_where_it_went():
    with pytest.raises(InputError, match="encoder.input_shape is now data.shape"):
        load_config(None, ["encoder.input_shape=[8, 8, 1]"])


def test_changes_are_what_was_set_not_a_built_in_datasets_own_defaults():
    from tasks.config_text import changes, run_name

    def changed(overrides, flags):
        return changes(load_config(None, overrides, flags).model_dump(mode="json"))

    assert changed([], {"data.dataset": "digits"}) == {}  # digits' own encoder defaults are not changes
    assert changed(["svc.C=3", "encoder.hidden=[64,32]"], {"data.dataset": "mnist1d"}) == {
        "encoder.hidden": [64, 32], "svc.C": 3.0}
    assert changed(["encoder.epochs=4"], {"data.input": "x.csv", "data.label": "y", "data.dataset": None}) == {
        "encoder.epochs": 4}  # the source (input, label) is shown as the source
    a, b = (run_name(load_config(None, o, {"data.dataset": "iris"})) for o in ([], ["svc.C=3"]))
    assert a.startswith("iris-") and b.startswith("iris-") and a != b
    assert a == run_name(load_config(None, ["engine.kind='dask'"], {"data.dataset": "iris"}))  # not the engine


def test_the_readmes_table_of_keys_is_the_configs_own():
    """The README's table of every key, type, default and range is generated from the config's fields."""
    from pathlib import Path

    from tasks.config_text import key_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    shown = readme.split("<!-- config keys: begin -->\n", 1)[1].split("\n<!-- config keys: end -->", 1)[0]
    assert shown == key_table(), "regenerate: python -c 'from tasks.config_text import key_table; print(key_table())'"


def test_a_former_section_name_is_read_under_its_new_name_with_a_one_line_notice(caplog, tmp_path):
    import logging

    from tasks.config_text import load_config

    toml = tmp_path / "old.toml"
    toml.write_text("[rff]\nepochs = 7\n")
    with caplog.at_level(logging.WARNING, logger="marginflow"):
        config = load_config(str(toml), ["rff.C=2.5", "rff_svm.seed=3"])
    assert (config.rff_svm.epochs, config.rff_svm.C, config.rff_svm.seed) == (7, 2.5, 3)
    notices = [r.getMessage() for r in caplog.records if "rff" in r.getMessage()]
    assert notices == ["config section rff is now rff_svm: read as rff_svm"]

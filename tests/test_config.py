"""Unit tests: the typed config and its error messages."""

from __future__ import annotations

import pytest

from tasks.config import Config, EncoderConfig, load_config
from tasks.errors import InputError


def test_defaults_and_overrides_in_order(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[svc]\nC = 3.0\nkernel = 'linear'\n[encoder]\nhidden = [8]\n")
    c = load_config(str(f), ["svc.C=0.5", "encoder.hidden=[32, 16]"], {"data.dataset": "wine"})
    assert (c.svc.C, c.svc.kernel, c.encoder.hidden, c.data.dataset) == (0.5, "linear", [32, 16], "wine")
    from tasks.config import DATASET_DEFAULTS

    digits = Config().model_copy(update={"encoder": EncoderConfig(**DATASET_DEFAULTS["digits"]["encoder"])})
    assert load_config() == digits  # the default dataset is digits, with its encoder defaults


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


def test_builtin_dataset_defaults_apply_unless_set():
    from tasks.config import DATASET_DEFAULTS

    mnist = load_config(None, ["encoder.dropout=0.05"], {"data.dataset": "mnist1d"})
    assert mnist.encoder.kernel_size == DATASET_DEFAULTS["mnist1d"]["encoder"]["kernel_size"] != EncoderConfig().kernel_size
    assert mnist.encoder.dropout == 0.05
    assert load_config(None, [], {"data.dataset": "iris"}).encoder == EncoderConfig()


def test_changes_are_what_was_set_not_a_built_in_datasets_own_defaults():
    from tasks.config import changes, run_name

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

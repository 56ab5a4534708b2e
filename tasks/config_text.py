"""A config to and from text: reading one (a TOML file, ``--set section.key=value`` overrides, CLI flags: `load_config`)
and describing one (its changes from the defaults, the run's name, the table of every key for the README).

The sections themselves are `tasks.config`'s.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ValidationError

from tasks.config import (
    RENAMED_SECTIONS,
    Config,
    DataConfig,
)
from tasks.errors import InputError


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"][:2]) or "config"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    value = first.get("input")
    shown = "" if first["type"] in ("extra_forbidden", "missing") or isinstance(value, dict) else f" (got {value!r})"
    return f"config key {key}: {msg}{shown}"


def _parse_value(key: str, raw: str) -> Any:
    """A ``--set`` value is read as exactly one TOML value (numbers, booleans, lists, quoted strings); else, when it
    is one line of printable text, as a string.

    Raises:
        InputError: more than one TOML value (a value that would set other keys), or control characters.
    """
    try:
        parsed = tomllib.loads(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        parsed = None
    if parsed is not None:
        if set(parsed) != {"v"}:
            raise InputError(f"--set {key}: the value must be one TOML value, not {raw!r}")
        return parsed["v"]
    if not raw.isprintable():
        raise InputError(f"--set {key}: the value must be one line of printable text, not {raw!r}")
    return raw


def _set_key(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) != 2 or not all(parts):
        raise InputError(f"--set {dotted}: keys look like section.key, e.g. svc.C=1.0")
    section, key = parts
    if section not in Config.model_fields and section not in RENAMED_SECTIONS:  # a former name: Config renames it
        raise InputError(f"--set {dotted}: unknown section {section!r} (one of {', '.join(Config.model_fields)})")
    tree.setdefault(section, {})[key] = value


def load_config(
    path: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    flags: dict[str, Any] | None = None,
) -> Config:
    """Build the config from a TOML file, ``section.key=value`` overrides, then flags.

    Args:
        path: optional TOML file with one table per section.
        overrides: ``section.key=value`` strings; values parse as TOML, else as strings.
        flags: ``{"section.key": value}`` from CLI flags, applied last; ``None`` sets a
            key to null (``data.dataset=None`` when a file is given).

    Raises:
        InputError: unreadable file, unknown key, or invalid value (one line).
    """
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            tree = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise InputError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: cannot read config file ({e})") from None
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{path}: invalid TOML ({e})") from None
    for item in overrides:
        if "=" not in item:
            raise InputError(f"--set {item}: expected section.key=value")
        key, raw = item.split("=", 1)
        _set_key(tree, key.strip(), _parse_value(key.strip(), raw.strip()))
    for key, value in (flags or {}).items():
        _set_key(tree, key, value)
    data = tree.get("data")
    if isinstance(data, dict) and data.get("input") is not None and "dataset" not in data:
        data["dataset"] = None  # a file replaces the default built-in dataset
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        where = f"{path}: " if path else ""
        raise InputError(where + _describe(e)) from None


# --------------------------------------------------------------------------- describing a config


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"svc": {"C": 3}}`` -> ``{"svc.C": 3}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


# the keys that name the data source: shown as the source, never as a config change
SOURCE_KEYS = ("data.dataset", "data.input", "data.label")


def defaults_for(dataset: Any) -> dict[str, Any]:
    """The flattened config a run on ``dataset`` gets without any setting (for a file source,
    ``dataset`` None, the defaults with no built-in dataset)."""
    tree: dict[str, Any] = {}
    tree["data"] = {"dataset": dataset, "input": "-", "label": "-"} if dataset is None else {"dataset": dataset}
    return {k: v for k, v in flatten(Config.model_validate(tree).model_dump(mode="json")).items()
            if k not in SOURCE_KEYS}


def changes(config: dict[str, Any], sections: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The keys of ``config`` (a config as JSON, whole or some sections) that a user set: those that
    differ from what a run on the same source gets by default (`defaults_for`).

    Args:
        sections: only these sections (default: those ``config`` has, ``engine`` left out:
            where a run ran does not change what it computes).
    Returns:
        ``{"svc.C": 3.0, ...}`` in key order. The source itself (``data.dataset``, ``data.input``)
        is not a change: it is shown as the source.
    """
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    defaults = defaults_for(data.get("dataset", DataConfig.model_fields["dataset"].default))
    names = sections or tuple(s for s in config if s != "engine")
    mine = flatten({s: config[s] for s in names if s in config})
    return {k: v for k, v in sorted(mine.items())
            if k not in SOURCE_KEYS and (k not in defaults or defaults[k] != v)}


def shown(values: dict[str, Any]) -> str:
    """``svc.C=3 encoder.hidden=[64,32]``: a changes dict on one line (``defaults`` when empty)."""
    if not values:
        return "defaults"
    return " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"
                    for k, v in values.items())


def source_name(data: DataConfig) -> str:
    """A short name of the data source: the built-in dataset, or the input file's or folder's stem."""
    if data.input is None:
        return str(data.dataset)
    name = Path(str(data.input).rstrip("/")).name
    for suffix in (".gz", ".csv", ".parquet"):
        name = name.removesuffix(suffix)
    return name or "input"


def run_name(config: Config) -> str:
    """A flow run's name: ``<source>-<first 8 hex of the config's digest>`` (``digits-3fa2c1d0``).

    Equal for runs of the same source and config, whatever the engine; different otherwise.
    """
    material = json.dumps(config.model_dump(mode="json", exclude={"engine"}), sort_keys=True)
    return f"{source_name(config.data)}-{hashlib.sha256(material.encode()).hexdigest()[:8]}"


# --------------------------------------------------------------------------- the keys, as a table


def _type_name(annotation: Any) -> str:
    """A field's type in words: ``int``, ``float``, ``bool``, ``text``, ``list of int``, ``'a' | 'b'``, ``... or none``."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(parts) + (" \\| none" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is Annotated:
        return _type_name(args[0])
    return {int: "int", float: "float", bool: "bool", str: "text"}.get(annotation, str(annotation))


def key_table() -> str:
    """Every config key with its type, default and range, as a markdown table (the README shows it; a test
    keeps the two equal). The ranges are the fields' own constraints: this is where the rules live."""
    lines = ["| key | type | default | range |", "|:---|:---|:---|:---|"]
    for section, field in Config.model_fields.items():
        for key, f in field.annotation.model_fields.items():
            limits = []
            for m in f.metadata:
                for name, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                    value = getattr(m, name, None)
                    if value is not None:
                        limits.append(f"{sym} {value}" if isinstance(value, int) else f"{sym} {value:g}")
            if "float" in _type_name(f.annotation):
                limits.append("finite")
            default = f.get_default(call_default_factory=True)
            shown = "none" if default is None else json.dumps(default)
            lines.append(f"| `{section}.{key}` | {_type_name(f.annotation)} | `{shown}` | {', '.join(limits)} |")
    return "\n".join(lines)

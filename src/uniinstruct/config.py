"""Typed, validated configuration read from ``params.yaml``.

Config sections are dataclasses; :func:`from_dict` builds one from a mapping and rejects unknown
keys, missing keys, wrong types and bad values with a message that names the key path, e.g.
``params.yaml: theory.expansion.sigma_min: must be > 0, got -1``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad value in params.yaml (or a dict standing for it), naming the key path."""


def _coerce(value: Any, kind: Any, path: str) -> Any:
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return from_dict(kind, value, path)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if kind in (str, bool):
        if not isinstance(value, kind):
            raise ConfigError(f"{path}: expected {kind.__name__}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{path}: union-typed config fields are not supported")
    return value


def from_dict(cls: type[T], data: Any, path: str = "params.yaml") -> T:
    """Build the config dataclass ``cls`` from ``data``, validating every key (then ``cls.check``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown key; valid keys: {', '.join(fields)}")
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _coerce(data[name], hints[name], f"{path}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}.{name}: missing required key")
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        for key, problem in check():
            raise ConfigError(f"{path}.{key}: {problem}")
    return obj


def positive(**values: float) -> list[tuple[str, str]]:
    """Problems for the values that are not > 0 (a helper for ``check`` methods)."""
    return [(k, f"must be > 0, got {v}") for k, v in values.items() if not v > 0]


def valid_names(key: str, names: list[str], lookup: Callable[[str], Any]) -> list[tuple[str, str]]:
    """Problems for the names that ``lookup`` rejects (its ValueError lists the valid ones)."""
    problems = []
    for i, name in enumerate(names):
        try:
            lookup(name)
        except ValueError as err:
            problems.append((f"{key}[{i}]", str(err)))
    return problems


def load_section(cls: type[T], section: str, params_file: str | Path = "params.yaml") -> T:
    """Read ``section`` of ``params_file`` into the config class ``cls``."""
    params_file = Path(params_file)
    with params_file.open() as fh:
        params = yaml.safe_load(fh) or {}
    if section not in params:
        raise ConfigError(f"{params_file}: missing section {section!r}; sections present: {', '.join(params)}")
    return from_dict(cls, params[section], f"{params_file.name}: {section}")

"""Typed, validated configuration read from ``params.yaml``.

Config sections are dataclasses; :func:`from_dict` builds one from a mapping and rejects unknown
keys, missing keys, wrong types and bad values with a message that names the key path, e.g.
``params.yaml: theory.expansion.sigma_min: must be > 0, got -1``. :func:`load_section` reads ``params.yaml``, which
must name every key (it is the complete record of a run's settings: a deleted key is an error, never a silent code
default), and only the sections in :data:`SECTIONS`. Configs that inherit (``toy.wide.distill`` over ``toy.distill``,
each ``paper.profiles[i].distill`` over ``paper.distill``) are merged by :func:`inherit`; a config class whose parts
inherit from its other keys says how in an ``inherited(data, path)`` static method, which :func:`from_dict` applies
to the mapping first (so "every key" and range checks hold after the merge).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import yaml

T = TypeVar("T")
SECTIONS = ("theory", "unification", "toy", "digits", "paper")      # the top-level sections of params.yaml


class ConfigError(ValueError):
    """A bad value in params.yaml (or a dict standing for it), naming the key path."""


def _coerce(value: Any, kind: Any, path: str, complete: bool) -> Any:
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return from_dict(kind, value, path, complete)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item, f"{path}[{i}]", complete) for i, v in enumerate(value)]
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
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


def from_dict(cls: type[T], data: Any, path: str = "params.yaml", complete: bool = False) -> T:
    """Build the config dataclass ``cls`` from ``data`` (its inherited keys merged first, where ``cls.inherited``
    exists), validating every key (then ``cls.check``); keys that ``data`` omits take the code's defaults unless
    ``complete``, which requires every key."""
    inherited = getattr(cls, "inherited", None)
    if inherited is not None and isinstance(data, Mapping):
        data = inherited(data, path)
    fields = known_keys(cls, data, path)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _coerce(data[name], hints[name], f"{path}.{name}", complete)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}.{name}: missing required key")
        elif complete:
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            shown = default if not dataclasses.is_dataclass(default) else "a section"
            raise ConfigError(f"{path}.{name}: missing key; params.yaml records every setting of a run, so add it "
                              f"(the code's default is {shown!r})")
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        for key, problem in check():
            raise ConfigError(f"{path}.{key}: {problem}")
    return obj


def known_keys(cls: type, data: Any, path: str) -> dict[str, dataclasses.Field]:
    """The fields of the config class ``cls``, once ``data`` is found to be a mapping of only those keys."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown key; valid keys: {', '.join(fields)}")
    return fields


def inherit(cls: type, base: Any, overrides: Any, path: str) -> dict:
    """Configs that inherit: the keys of ``base`` (a ``cls`` or a mapping of some of its keys) with those of
    ``overrides`` in their place, for :func:`from_dict` to build and check as a whole. ``overrides`` must be a
    mapping of keys of ``cls``; an unknown one is refused, named under ``path``."""
    known_keys(cls, overrides, path)
    return {**(dataclasses.asdict(base) if dataclasses.is_dataclass(base) else base), **overrides}


def positive(**values: float) -> list[tuple[str, str]]:
    """Problems for the values that are not finite and > 0 (a helper for ``check`` methods)."""
    return [(k, f"must be > 0, got {v}") for k, v in values.items() if not (v > 0 and math.isfinite(v))]


def valid_names(key: str, names: list[str], lookup: Callable[[str], Any]) -> list[tuple[str, str]]:
    """Problems for the names that ``lookup`` rejects (its ValueError lists the valid ones)."""
    problems = []
    for i, name in enumerate(names):
        try:
            lookup(name)
        except ValueError as err:
            problems.append((f"{key}[{i}]", str(err)))
    return problems


def read_params(params_file: str | Path = "params.yaml") -> dict:
    """The parsed ``params_file``: a mapping of known sections (a YAML error names its line and column)."""
    params_file = Path(params_file)
    try:
        with params_file.open(encoding="utf-8") as fh:
            params = yaml.safe_load(fh) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{params_file}: not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(params, Mapping):
        raise ConfigError(f"{params_file}: expected a mapping of sections, got {type(params).__name__}")
    unknown = [key for key in params if key not in SECTIONS]
    if unknown:
        raise ConfigError(f"{params_file}: unknown section {unknown[0]!r}; valid sections: {', '.join(SECTIONS)}")
    return params


def load_section(cls: type[T], section: str, params_file: str | Path = "params.yaml") -> T:
    """Read ``section`` of ``params_file`` into the config class ``cls``; every key must be there."""
    params = read_params(params_file)
    if section not in params:
        raise ConfigError(f"{params_file}: missing section {section!r}; sections present: {', '.join(params)}")
    return from_dict(cls, params[section], f"{Path(params_file).name}: {section}", complete=True)

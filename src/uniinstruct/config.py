"""Typed, validated configuration read from ``params.yaml``.

Config sections are dataclasses; :func:`from_dict` builds one from a mapping and rejects unknown
keys, missing keys, wrong types and bad values with a message that names the key path, e.g.
``params.yaml: theory.expansion.sigma_min: must be > 0, got -1``. :func:`load_section` reads ``params.yaml``, which
must name every key (it is the complete record of a run's settings: a deleted key is an error, never a silent code
default), and only the sections in :data:`SECTIONS`. The tiers' ``distill`` blocks merge the top-level one with a
YAML merge key (``<<: *released``), which the loader resolves: each block arrives complete. Configs that inherit
(``toy.wide.distill`` over ``toy.distill``, each ``paper.profiles[i].distill`` over ``paper.distill``) are merged by
:func:`inherit`; a config class whose parts
inherit from its other keys says how in an ``inherited(data, path)`` static method, which :func:`from_dict` applies
to the mapping first (so "every key" and range checks hold after the merge); it also returns where each inherited key
is written (:func:`origins`), so that a bad inherited value is named there, not under the config that inherits it.
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
# the top-level sections of params.yaml; ``distill`` holds the released settings that the tiers' distill blocks merge
SECTIONS = ("theory", "unification", "distill", "toy", "digits", "paper")


class ConfigError(ValueError):
    """A bad value in params.yaml (or a dict standing for it), naming the key path: ``"{path}: {problem}"``."""

    def __init__(self, message: str, path: str | None = None, problem: str | None = None):
        super().__init__(message)
        self.path, self.problem = path, problem         # set by :meth:`at`; None for errors without a key path

    @classmethod
    def at(cls, path: str, problem: str) -> "ConfigError":
        """The error ``problem`` at the key path ``path``."""
        return cls(f"{path}: {problem}", path, problem)

    def moved(self, origins: Mapping[str, str]) -> "ConfigError":
        """This error named where its key is written: ``origins`` maps an inherited key path to its source's (the
        inheriting path is added to the problem); self when its key is not inherited."""
        for inherited, written in origins.items():
            if self.path is not None and (self.path == inherited or self.path.startswith((f"{inherited}.",
                                                                                           f"{inherited}["))):
                by = inherited.rsplit(".", 1)[0].split(": ", 1)[-1]     # the inheriting config, without a file name
                return ConfigError.at(written + self.path[len(inherited):], f"{self.problem} (inherited by {by})")
        return self


def _coerce(value: Any, kind: Any, path: str, complete: bool) -> Any:
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return from_dict(kind, value, path, complete)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            raise ConfigError.at(path, f"expected a list, got {type(value).__name__}")
        return [_coerce(v, item, f"{path}[{i}]", complete) for i, v in enumerate(value)]
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError.at(path, f"expected a finite number, got {value!r}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError.at(path, f"expected an integer, got {value!r}")
        return value
    if kind in (str, bool):
        if not isinstance(value, kind):
            raise ConfigError.at(path, f"expected {kind.__name__}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        raise ConfigError.at(path, "union-typed config fields are not supported")
    return value


def from_dict(cls: type[T], data: Any, path: str = "params.yaml", complete: bool = False) -> T:
    """Build the config dataclass ``cls`` from ``data`` (its inherited keys merged first, where ``cls.inherited``
    exists), validating every key (then ``cls.check``); keys that ``data`` omits take the code's defaults unless
    ``complete``, which requires every key. A bad inherited value is named where it is written."""
    inherited = getattr(cls, "inherited", None)
    if inherited is None or not isinstance(data, Mapping):
        return _build(cls, data, path, complete)
    data, written = inherited(data, path)
    try:
        return _build(cls, data, path, complete)
    except ConfigError as err:
        raise err.moved(written) from None


def _build(cls: type[T], data: Any, path: str, complete: bool) -> T:
    fields = known_keys(cls, data, path)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _coerce(data[name], hints[name], f"{path}.{name}", complete)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError.at(f"{path}.{name}", "missing required key")
        elif complete:
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            shown = default if not dataclasses.is_dataclass(default) else "a section"
            raise ConfigError.at(f"{path}.{name}", f"missing key; params.yaml records every setting of a run, so add "
                                                   f"it (the code's default is {shown!r})")
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        for key, problem in check():
            raise ConfigError.at(f"{path}.{key}", problem)
    return obj


def known_keys(cls: type, data: Any, path: str) -> dict[str, dataclasses.Field]:
    """The fields of the config class ``cls``, once ``data`` is found to be a mapping of only those keys."""
    if not isinstance(data, Mapping):
        raise ConfigError.at(path, f"expected a mapping of keys, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError.at(f"{path}.{unknown[0]}", f"unknown key; valid keys: {', '.join(fields)}")
    return fields


def inherit(cls: type, base: Any, overrides: Any, path: str) -> dict:
    """Configs that inherit: the keys of ``base`` (a ``cls`` or a mapping of some of its keys) with those of
    ``overrides`` in their place, for :func:`from_dict` to build and check as a whole. ``overrides`` must be a
    mapping of keys of ``cls``; an unknown one is refused, named under ``path``."""
    known_keys(cls, overrides, path)
    return {**(dataclasses.asdict(base) if dataclasses.is_dataclass(base) else base), **overrides}


def origins(base: Mapping, overrides: Mapping, path: str, base_path: str) -> dict[str, str]:
    """Where each key that ``path`` inherits is written: ``{path}.KEY`` → ``{base_path}.KEY`` for the keys of
    ``base`` that ``overrides`` does not replace (the second value of an ``inherited`` method)."""
    return {f"{path}.{key}": f"{base_path}.{key}" for key in base if key not in overrides}


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

"""Stage parameters: one dataclass per stage, built the same way from a notebook's parameters
cell, a papermill YAML, the CLI or a widget panel. Unknown keys and wrong types are errors that
name the key and list the valid ones."""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError


def choice(default, choices: tuple, help: str = ""):
    return field(default=default, metadata={"choices": tuple(choices), "help": help})


def param(default, help: str = "", lo=None, hi=None, role: str = "", runtime: bool = False, **kw):
    """A stage parameter. ``lo``/``hi``: inclusive bounds of a number (checked with the type, with
    NaN/Inf refused for every float); ``role``: 'input' (a path the stage reads: fingerprinted,
    never written) or 'output'; ``runtime``: does not change the output (workers, batch sizes,
    grids), so a rerun that differs only in it still resumes."""
    kw.update({k: v for k, v in (("lo", lo), ("hi", hi)) if v is not None})
    if role:
        kw["role"] = role
    if runtime:
        kw["runtime"] = True
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def _check_type(name: str, value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(name, value, a, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}{name}: expected {_tname(tp)}, got {type(value).__name__} {value!r}")
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, (str, Path)):
        return str(value)
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        if args and args[0] is not Ellipsis and origin is list:
            return [_check_type(f"{name}[{i}]", v, args[0], where) for i, v in enumerate(value)]
        return list(value) if origin is list else tuple(value)
    if origin is dict and isinstance(value, dict):
        return dict(value)
    if tp in (list, dict) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}{name}: expected {_tname(tp)}, got {type(value).__name__} {value!r}")


def check_number(name: str, v: Any, lo=None, hi=None) -> None:
    """A float must be finite; a number must lie in [lo, hi] where given (one rule for every
    stage parameter, the plan and head parameters)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"{name}: must be a finite number, got {v}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"in [{lo}, {hi}]" if lo is not None and hi is not None else (f">= {lo}" if lo is not None else f"<= {hi}")
        raise ConfigError(f"{name}: must be {rng}, got {v}")


def _tname(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


@dataclass
class StageConfig:
    """Base: ``Cfg.from_dict({...})``, ``Cfg.from_yaml(path)``, ``cfg.to_dict()``, ``cfg.replace(**kw)``."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict | None = None, source: str = "", **overrides) -> "StageConfig":
        d = {**(d or {}), **overrides}
        where = f"{source}: " if source else f"{cls.__name__}: "
        valid = cls.field_names()
        unknown = [k for k in d if k not in valid]
        if unknown:
            raise ConfigError(f"{where}unknown parameter(s) {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            v = _check_type(f.name, d[f.name], hints[f.name], where)
            ch = f.metadata.get("choices")
            if ch and v not in ch:
                raise ConfigError(f"{where}{f.name}: {v!r} is not one of {', '.join(map(repr, ch))}")
            check_number(f"{where}{f.name}", v, f.metadata.get("lo"), f.metadata.get("hi"))
            kwargs[f.name] = v
        cfg = cls(**kwargs)
        cfg.validate(where)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides) -> "StageConfig":
        import yaml

        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except OSError as e:
            raise ConfigError(f"{p}: cannot read ({e.strerror})") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of parameter: value, got {type(data).__name__}")
        return cls.from_dict(data, source=str(p), **overrides)

    @classmethod
    def from_namespace(cls, ns: dict, source: str = "notebook parameters") -> "StageConfig":
        """From a notebook's globals: the fields this stage knows, ignoring everything else."""
        return cls.from_dict({k: ns[k] for k in cls.field_names() if k in ns}, source=source)

    def validate(self, where: str = "") -> None:
        """Cross-field checks; subclasses extend."""

    def content_params(self) -> dict:
        """What a rerun must also match beyond the parameters as written: the content they name
        where a parameter is a file read as settings (a training plan's schedule file). The
        pipeline's rerun key and a run's resume check read it."""
        return {}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **kw) -> "StageConfig":
        return type(self).from_dict({**self.to_dict(), **kw})

    @classmethod
    def fields_with(cls, key: str, value=True) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.metadata.get(key) == value]

    def input_paths(self) -> dict[str, str | list]:
        """The non-empty parameters with role 'input' (paths this stage reads)."""
        return {k: getattr(self, k) for k in self.fields_with("role", "input") if getattr(self, k)}

    def output_params(self) -> dict:
        """What decides the output's content: every parameter except inputs and outputs (those are
        fingerprinted by content) and runtime ones. A resumed run must match these."""
        skip = set(self.fields_with("role", "input") + self.fields_with("role", "output") + self.fields_with("runtime"))
        return {k: v for k, v in self.to_dict().items() if k not in skip}

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}

"""Dataclass configs from YAML files, packaged presets and dotted ``key=value`` overrides.

Any tree of dataclasses is a schema: a :class:`ConfigSchema` names the root dataclass, the package
holding its presets (``*.yaml``) and the command whose ``--print-config`` lists the keys. Loading
merges, over the dataclass defaults, a YAML file or preset (read with the safe loader) and then
the command-line overrides; values are coerced to the annotated types (ints to floats, ``1e-3``
strings to floats, lists to tuples) and every field's declared range is checked.

Errors name the key, the value and the fix (:class:`~dinolab.errors.ConfigError`):

- an unknown key suggests the closest valid one (``optim.lr_rate`` -> ``optim.lr``);
- a value of the wrong type names the expected type (and the closest choice of a ``Literal``);
- a value outside the range declared with the field (:func:`bounded`) names the range and the
  default; a declared range also refuses ``inf`` and ``nan``.

Cross-field checks (one value against another) stay with the caller, after loading.

Examples:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Optim:
    ...     lr: float = bounded(0.1, gt=0)
    ...     betas: tuple[float, float] = (0.9, 0.999)
    >>> schema = ConfigSchema(Optim, command="dinolab demo")
    >>> schema.load(None, ["lr=1e-3", "betas=[0.8, 0.9]"])
    Optim(lr=0.001, betas=(0.8, 0.9))
    >>> schema.load(None, ["lr=inf"])
    Traceback (most recent call last):
    ...
    dinolab.errors.ConfigError: lr=inf must be a finite number > 0; e.g. lr=0.1 (the default)
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Generic, Literal, Sequence, TypeVar

import yaml

from ..errors import ConfigError

T = TypeVar("T")

__all__ = ["ConfigSchema", "add_flags", "bounded", "flag_values", "check_fields", "device_name", "parse_override",
           "save_config", "to_dict", "to_yaml", "valid_keys"]


# ------------------------------------------------------------------------------------------------
# ranges declared with the fields

_BOUNDS = {"gt": (">", lambda v, b: v > b), "ge": (">=", lambda v, b: v >= b),
           "lt": ("<", lambda v, b: v < b), "le": ("<=", lambda v, b: v <= b)}


def bounded(default: Any = dataclasses.MISSING, *, gt: float | None = None, ge: float | None = None,
            lt: float | None = None, le: float | None = None, check: Callable[[Any], str | None] | None = None,
            default_factory: Callable[[], Any] | Any = dataclasses.MISSING, help: str | None = None) -> Any:
    """A dataclass field whose value (or each element of a list value) must satisfy the bounds.

    ``check(value)`` may add any other test: it returns what is wrong (e.g. ``"is not a device"``)
    or None. ``None`` values pass (an optional field unset). A range refuses ``inf`` and ``nan``. ``help`` is the
    field's description (command-line flags, :func:`add_flags`).
    """
    bounds = {k: v for k, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if v is not None}
    metadata = {"bounds": bounds, "check": check, "help": help}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _range_text(bounds: dict[str, float]) -> str:
    return " and ".join(f"{_BOUNDS[k][0]} {v:g}" if isinstance(v, float) else f"{_BOUNDS[k][0]} {v}"
                        for k, v in bounds.items())


def _integer_range(bounds: dict[str, float]) -> str:
    if set(bounds) == {"ge"}:
        return f"must be at least {bounds['ge']}"
    if set(bounds) == {"ge", "le"}:
        return f"must be in [{bounds['ge']}, {bounds['le']}]"
    return f"must be {_range_text(bounds)}"


def _field_problem(f: dataclasses.Field, value: Any) -> str | None:
    bounds, check = f.metadata.get("bounds") or {}, f.metadata.get("check")
    if value is None:
        return None
    for v in (value if isinstance(value, (list, tuple)) else [value]):
        if bounds and isinstance(v, int) and not isinstance(v, bool):
            if not all(_BOUNDS[k][1](v, b) for k, b in bounds.items()):
                return _integer_range(bounds)
        elif bounds and isinstance(v, float):
            if not math.isfinite(v) or not all(_BOUNDS[k][1](v, b) for k, b in bounds.items()):
                return f"must be a finite number {_range_text(bounds)}"
    return check(value) if check is not None else None


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def check_fields(config: Any, prefix: str = "", where: str = "") -> None:
    """Check every field with declared bounds or a ``check`` in the dataclass tree ``config``."""
    for f in dataclasses.fields(config):
        value, name = getattr(config, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            check_fields(value, name + ".", where)
            continue
        problem = _field_problem(f, value)
        if problem:
            default = _default_of(f)
            fix = f"; e.g. {name}={_yaml_scalar(default)} (the default)" if _field_problem(f, default) is None else ""
            raise ConfigError(f"{name}={_yaml_scalar(value)}{where} {problem}{fix}")


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return str(value)


_DEVICE_TYPES = ("cpu", "cuda", "mps")


def device_name(value: Any) -> str | None:
    """``check`` for device fields: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (availability is checked
    when the device is opened)."""
    kind, sep, index = str(value).partition(":")
    if str(value) == "auto" or (kind in _DEVICE_TYPES and (not sep or index.isdigit())):
        return None
    return "is not a device; use auto, cpu, cuda, cuda:N or mps"


# ------------------------------------------------------------------------------------------------
# keys, types and merging


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def valid_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of the schema rooted at dataclass ``cls``, e.g. ``optim.lr``."""
    keys = []
    for f in dataclasses.fields(cls):
        name, sub = prefix + f.name, _hints(cls)[f.name]
        keys += valid_keys(sub, name + ".") if dataclasses.is_dataclass(sub) else [name]
    return keys


_PLURAL = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        return f"a list of {len(args)} {_PLURAL.get(args[0], str(args[0]))}"
    if origin is list:
        return f"a list of {_PLURAL.get(typing.get_args(tp)[0], 'values')}"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


class _Mismatch(Exception):
    pass


def _coerce_union(value: Any, tp: Any) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    for a in args:
        if a is type(None):
            continue
        try:
            return _coerce(value, a)
        except _Mismatch:
            pass
    raise _Mismatch


def _coerce_sequence(value: Any, tp: Any) -> Any:
    if not isinstance(value, (list, tuple)):
        raise _Mismatch
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    return [_coerce(v, args[0]) for v in value]


def _coerce_scalar(value: Any, tp: Any) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and number and (isinstance(value, int) or value.is_integer()):
        return int(value)
    if tp is float and number:
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            raise _Mismatch from None
    if tp is str and (isinstance(value, str) or number):
        return str(value)
    if tp is Any:
        return value
    if tp in (bool, int, float, str):
        raise _Mismatch
    raise TypeError(f"unsupported config type {tp!r}")


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` converted to type ``tp`` (ints to floats, number strings such as ``1e-3`` to floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _Mismatch
    if origin in (list, tuple):
        return _coerce_sequence(value, tp)
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return dict(value)
    return _coerce_scalar(value, tp)


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of YAML-safe values (tuples become lists) of a dataclass tree."""
    return _plain(dataclasses.asdict(config))


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def to_yaml(config: Any) -> str:
    """Block-style YAML (one key per line, lists inline) that :meth:`ConfigSchema.load` reads back."""
    return yaml.dump(to_dict(config), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Write ``config`` as YAML to ``path`` atomically."""
    from ..io import atomic_save_text

    atomic_save_text(path, to_yaml(config))


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-3"`` -> ``("optim.lr", 0.001)``; the value is read as a YAML scalar or list."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. optim.lr=1e-3)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({e.problem}); quote it") from None
    return key, value


def _nest(key: str, value: Any) -> dict[str, Any]:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


# ------------------------------------------------------------------------------------------------
# command-line flags generated from a flat dataclass


def _flag_type(tp: Any) -> Callable[[str], Any]:
    """argparse ``type``: the text itself for strings (paths stay paths), else its YAML reading (coerced to the
    field's type when merged)."""
    if tp is str or str in typing.get_args(tp):
        return str
    return lambda text: yaml.safe_load(text) if text.strip() else None


def add_flags(parser: Any, cls: type, skip: Sequence[str] = ()) -> None:
    """One ``--kebab-name`` flag per field of dataclass ``cls`` (help from the field's ``help``, default from the
    dataclass, named in the help); a ``True`` boolean gets ``--no-NAME``, a ``False`` one ``--NAME``. Flags not
    given are absent from the namespace (see :func:`flag_values`)."""
    import argparse

    for f in dataclasses.fields(cls):
        if f.name in skip or dataclasses.is_dataclass(_hints(cls)[f.name]):
            continue
        default, flag = _default_of(f), "--" + f.name.replace("_", "-")
        text = f.metadata.get("help") or f.name.replace("_", " ")
        if _hints(cls)[f.name] is bool:
            parser.add_argument(f"--no-{flag[2:]}" if default else flag, dest=f.name, action="store_const",
                                const=not default, default=argparse.SUPPRESS, help=text)
            continue
        parser.add_argument(flag, dest=f.name, type=_flag_type(_hints(cls)[f.name]), default=argparse.SUPPRESS,
                            metavar=f.name.upper(),
                            help=text if default is None else f"{text} (default {_yaml_scalar(default)})")


def flag_values(args: Any, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` given as flags in the argparse namespace ``args`` (for :meth:`ConfigSchema.merge`)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


# ------------------------------------------------------------------------------------------------
# the schema


@dataclass(frozen=True)
class ConfigSchema(Generic[T]):
    """How to load one command's config: its root dataclass, presets and name (for hints).

    Args:
        root: the root dataclass; nested dataclass fields are sections.
        presets: package holding ``NAME.yaml`` presets (None: files only).
        default_preset: what ``load(None)`` reads over the defaults (None: the defaults alone).
        command: the command users run, named in hints (``dinolab train --print-config``).
    """

    root: type[T]
    presets: str | None = None
    default_preset: str | None = None
    command: str = "dinolab"

    def valid_keys(self) -> list[str]:
        return valid_keys(self.root)

    def _unknown_key(self, key: str, where: str) -> ConfigError:
        keys = self.valid_keys()
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
        if not close:  # a misspelt last part in the right section, or a right name in the wrong section
            last = key.rsplit(".", 1)[-1]
            close = difflib.get_close_matches(last, [k.rsplit(".", 1)[-1] for k in keys], n=1, cutoff=0.6)
            close = [k for k in keys if close and (k == close[0] or k.endswith("." + close[0]))][:1]
        hint = f"; did you mean {close[0]}?" if close else f"; `{self.command} --print-config` lists every key"
        return ConfigError(f"unknown config key {key!r}{where}{hint}")

    def _merge_into(self, obj: Any, values: Any, prefix: str, where: str) -> None:
        if not isinstance(values, dict):
            raise ConfigError(f"config section {prefix.rstrip('.') or '(top level)'}{where} must be a mapping "
                              f"of keys to values, got {values!r}")
        hints = _hints(type(obj))
        for key, value in values.items():
            name = prefix + str(key)
            if key not in hints:
                while isinstance(value, dict) and len(value) == 1:  # report the whole dotted key of an override
                    key, value = next(iter(value.items()))
                    name += f".{key}"
                raise self._unknown_key(name, where)
            tp = hints[key]
            if dataclasses.is_dataclass(tp):
                self._merge_into(getattr(obj, key), value if value is not None else {}, name + ".", where)
                continue
            try:
                setattr(obj, key, _coerce(value, tp))
            except _Mismatch:
                choices = typing.get_args(tp) if typing.get_origin(tp) is Literal else ()
                close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{name}={value!r}{where} has the wrong type: expected {_type_name(tp)}{hint}") \
                    from None

    def merge(self, config: T, values: dict[str, Any] | None, where: str = "") -> T:
        """Merge a nested dict of values into ``config`` (in place; also returned); see :func:`check_fields`."""
        self._merge_into(config, values or {}, "", where)
        return config

    def apply_overrides(self, config: T, overrides: Sequence[str]) -> T:
        """Apply ``key=value`` strings in order."""
        for text in overrides:
            key, value = parse_override(text)
            self.merge(config, _nest(key, value), where=" (command line)")
        return config

    def list_presets(self) -> list[str]:
        """Names of the packaged presets (``<presets>/*.yaml``)."""
        if self.presets is None:
            return []
        return sorted(p.name[:-5] for p in resources.files(self.presets).iterdir() if p.name.endswith(".yaml"))

    def _preset_text(self, name: str) -> tuple[str, str]:
        presets = self.list_presets()
        if name not in presets:
            close = difflib.get_close_matches(name, presets, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            listed = f"presets: {', '.join(presets)}" if presets else "give a YAML file"
            raise ConfigError(f"{name!r} is neither a config file nor a preset; {hint}{listed}")
        return resources.files(self.presets).joinpath(name + ".yaml").read_text(), f" (in preset {name})"

    def read_yaml(self, source: str | os.PathLike) -> tuple[dict[str, Any], str]:
        """The dict in a YAML file or packaged preset, and a description of where it came from."""
        path = Path(source)
        if path.suffix in (".yaml", ".yml") or path.exists() or os.sep in str(source) or self.presets is None:
            if not path.is_file():
                what = "is not a file" if path.exists() else "does not exist"
                presets = f" or one of the presets: {', '.join(self.list_presets())}" if self.presets else ""
                raise ConfigError(f"config file {path} {what}; give a YAML file{presets}")
            where = f" (in {path})"
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{path} is not a text YAML file (it holds binary data); give a YAML config, "
                                  f"e.g. one written by `{self.command} --print-config`") from None
        else:
            text, where = self._preset_text(str(source))
        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse{where}: {e}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"the config{where} must be a mapping of sections, got {type(values).__name__}")
        return values, where

    def from_dict(self, values: dict[str, Any], where: str = "") -> T:
        """A config from a (possibly partial) nested dict merged over the defaults, ranges checked."""
        config = self.merge(self.root(), values, where)
        check_fields(config)
        return config

    def load(self, source: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
        """Defaults, then the YAML file or preset ``source`` (None: ``default_preset``), then ``overrides``."""
        source = self.default_preset if source is None else source
        config = self.root() if source is None else self.merge(self.root(), *self.read_yaml(source))
        self.apply_overrides(config, overrides)
        check_fields(config)
        return config

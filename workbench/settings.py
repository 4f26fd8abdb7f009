"""Settings as data: one field helper and one strict reader/writer for every settings dataclass.

Every configurable thing (the training config's sections, each defense and plugin's settings, the eval
settings) is a dataclass whose fields are made with :func:`setting`: a default, a help text, and where it
applies the accepted ``choices`` or numeric ``bounds``. :func:`from_mapping` builds one from a mapping (a
YAML block) strictly: an unknown key is a one-line ``WorkbenchError`` naming it and the accepted keys, values
are converted to the field types (nested dataclasses included) and checked against their choices and
range. :func:`to_mapping` writes it back as a YAML-ready dict, so ``from_mapping(cls, to_mapping(obj))``
equals ``obj``.

>>> from dataclasses import dataclass
>>> @dataclass
... class Example:
...     steps: int = setting(10, help="how many", bounds=Bounds(1, 100))
>>> from_mapping(Example, {"steps": 3}, "demo.yaml")
Example(steps=3)
>>> to_mapping(Example(4))
{'steps': 4}
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from ._errors import WorkbenchError

__all__ = ["Bounds", "from_mapping", "help_of", "setting", "to_mapping"]


@dataclass(frozen=True)
class Bounds:
    """The accepted values of a numeric field: ``lo``/``hi`` inclusive unless ``lo_open``/``hi_open``."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: Any) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def describe(self, integer: bool) -> str:
        if integer and self.lo is not None and self.hi is not None and not (self.lo_open or self.hi_open):
            return f"an integer from {self.lo:_} to {self.hi:_}".replace("_", ",")
        what = "an integer" if integer else "a number"
        lo, hi = _num(self.lo), _num(self.hi)
        if self.lo is not None and self.hi is not None:
            return f"{what} in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{what} {'>' if self.lo_open else '>='} {lo}"
        return f"{what} {'<' if self.hi_open else '<='} {hi}"


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    choices: tuple[Any, ...] | None = None,
    bounds: Bounds | None = None,
    default_factory: Any = dataclasses.MISSING,
    **kw: Any,
) -> Any:
    """A dataclass field with its help text, and optionally its accepted ``choices`` or numeric ``bounds``
    (checked by :func:`from_mapping`; ``describe``-style listings show them). Other keywords go to
    ``dataclasses.field``."""
    meta: dict[str, Any] = {"help": help}
    if choices:
        meta["choices"] = tuple(choices)
    if bounds is not None:
        meta["bounds"] = bounds
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta, **kw)
    if default is dataclasses.MISSING:
        return field(metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


def help_of(cls: type) -> dict[str, str]:
    """``{field: help}`` of a settings dataclass (init fields only)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.init}


def to_mapping(obj: Any) -> Any:
    """A settings dataclass (or a value inside one) as plain YAML-ready data: dicts, lists, scalars."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, Mapping):
        return {k: to_mapping(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_mapping(v) for v in obj]
    return obj


def from_mapping(
    cls: type,
    data: Any,
    where: str = "config",
    *,
    prefix: str = "",
    exact: bool = False,
    locate: Callable[[str], str] | None = None,
) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, converting types; unknown keys are errors.

    ``where`` (a file, ``--set`` item, ...) and the key (``prefix`` + field name) start every message.
    ``exact`` converts nothing but a YAML 1.1 float string (``1e-5``): integers must be integers and
    numbers finite (the eval settings' rules and wording). ``locate(key)`` returns a suffix naming where
    the key is in the source (``", line 4"``); with it, a check of ``cls`` itself that fails is reported at
    the line of the key its message names.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        scalar = getattr(cls, "_from_scalar", None)
        if scalar is not None:
            try:
                return scalar(data)
            except ValueError as exc:
                raise WorkbenchError(f"{where}: '{prefix.rstrip('.')}': {exc}") from None
        raise WorkbenchError(f"{where}: '{prefix.rstrip('.') or 'config'}' must be a mapping, got {data!r}")
    at = (lambda key: f"{where}{locate(key)}") if locate is not None else (lambda key: where)
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    for k in data:
        if k not in known:
            raise WorkbenchError(
                f"{at(k)}: unknown key {_q(f'{prefix}{k}')} (known keys: {', '.join(known)})"
            )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        key = f"{prefix}{f.name}"
        if exact:
            value = coerce_exact(data[f.name], hints[f.name], f"{at(f.name)}: '{key}'")
        else:
            value = _coerce_strict(data[f.name], hints[f.name], key, at(f.name))
        choices = f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise WorkbenchError(
                f"{at(f.name)}: '{key}' must be one of {', '.join(map(str, choices))}, got {_short(value)}"
            )
        problem = _out_of_bounds(f.metadata.get("bounds"), value, hints[f.name])
        if problem:
            raise WorkbenchError(f"{at(f.name)}: '{key}' {problem}")
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except (ValueError, WorkbenchError) as exc:
        if locate is not None:
            bad = next((n for n in known if f"'{n}'" in str(exc)), "")
            raise WorkbenchError(f"{where}{locate(bad)}: {exc}") from None
        raise WorkbenchError(f"{where}: {_keyed(str(exc), cls, prefix)}") from None
    except TypeError as exc:  # a required field is missing
        raise WorkbenchError(f"{where}: '{prefix.rstrip('.') or 'config'}': {exc}") from None


def coerce_exact(value: Any, tp: Any, what: str) -> Any:
    """``value`` as the field type ``tp`` (int, float, str, bool, ``X | None``, ``tuple[str, ...]``) in the eval
    settings' dialect: integers only from integers, finite numbers, the value shown in full; a mismatch is
    ``WorkbenchError("<what> must be ...")``."""
    args = typing.get_args(tp)
    if type(None) in args:
        if value is None:
            return None
        (tp,) = [a for a in args if a is not type(None)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise WorkbenchError(f"{what} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise WorkbenchError(f"{what} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise WorkbenchError(f"{what} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise WorkbenchError(f"{what} must be a string, got {value!r}")
    if typing.get_origin(tp) is tuple:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise WorkbenchError(f"{what} must be a list of names, got {value!r}")
    return value


# ---------------------------------------------------------------------- messages
def _num(value: float | None) -> str:
    """1000000.0 as ``1000000``, 1e-8 as ``1e-08``."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters (a 4000-digit integer stays readable)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _q(text: Any) -> str:
    """A user-supplied name quoted for a one-line message (``repr`` when it holds control characters)."""
    s = str(text)
    return f"'{s}'" if s.isprintable() and "'" not in s else repr(s)


def _out_of_bounds(bounds: Any, value: Any, hint: Any) -> str | None:
    """``"must be <range>[ or null], got <value>"`` when the number ``value`` lies outside ``bounds`` (a field of
    type ``hint``), else None (also for no bounds, null, bools and non-numbers: other checks own those)."""
    if bounds is None or isinstance(value, bool) or not isinstance(value, int | float) or value in bounds:
        return None
    null = " or null" if _is_union(hint) else ""
    return f"must be {bounds.describe(_strip_optional(hint) is int)}{null}, got {_short(value)}"


def _check_bounds(obj: Any) -> None:
    """Raise ``ValueError`` naming the first field of dataclass ``obj`` outside its ``bounds``."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        problem = _out_of_bounds(f.metadata.get("bounds"), getattr(obj, f.name), hints[f.name])
        if problem:
            raise ValueError(f"'{f.name}' {problem}")


def _keyed(message: str, cls: type, prefix: str) -> str:
    """A ``__post_init__`` message about field ``'x'`` of a class marked ``__keyed_messages__`` (the training
    config's own sections) with the field's full key (``'optim.x' must ...``); its other messages are
    prefixed with the section (``'data.0': give exactly one of ...``). Other dataclasses (defense settings,
    the monitor block) keep the form ``'monitor': 'every' must ...``."""
    if getattr(cls, "__keyed_messages__", False):
        if message.startswith("'"):
            name = message[1:].split("'", 1)[0]
            if name in {f.name for f in dataclasses.fields(cls)}:
                return f"'{prefix}{name}'{message[len(name) + 2 :]}"
        return f"'{prefix.rstrip('.')}': {message}" if prefix else message
    return f"'{prefix.rstrip('.') or 'config'}': {message}"


# ---------------------------------------------------------------------- types
def _strip_optional(tp: Any) -> Any:
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _type_name(tp: Any) -> str:
    if _is_union(tp):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    if tp is Any:
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise WorkbenchError(f"{where}: '{key}' must be {_type_name(tp)}, got null")
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, where)
            except _Mismatch:
                continue
        raise WorkbenchError(f"{where}: '{key}' must be {_type_name(tp)}, got {_short(value)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            scalar = getattr(tp, "_from_scalar", None)
            if scalar is not None:
                try:
                    return scalar(value)
                except ValueError as exc:
                    raise WorkbenchError(f"{where}: '{key}': {exc}") from None
            raise _Mismatch
        return from_mapping(typing.cast(type, tp), value, where, prefix=f"{key}.")
    origin = typing.get_origin(tp)
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise _Mismatch
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce_strict(v, item_tp, f"{key}.{i}", where) for i, v in enumerate(value)]
    if origin is tuple:  # tuple[X, ...]: a list (or one bare string) of X
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise _Mismatch
        item_tp = (typing.get_args(tp) or (Any,))[0]
        return tuple(_coerce_strict(v, item_tp, f"{key}.{i}", where) for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:  # 1e300 is no count
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 as a string
            try:
                return float(value.strip())
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    return value


def _coerce_strict(value: Any, tp: Any, key: str, where: str) -> Any:
    try:
        return _coerce(value, tp, key, where)
    except _Mismatch:
        raise WorkbenchError(f"{where}: '{key}' must be {_type_name(tp)}, got {_short(value)}") from None


# ---------------------------------------------------------------------- shared with the training config
# The training config (``workbench.training``) checks and reports its own sections with the same helpers;
# these are their public names (the underscore spellings stay for this module's own use).
check_bounds = _check_bounds
out_of_bounds = _out_of_bounds
coerce_value = _coerce_strict
strip_optional = _strip_optional
is_union = _is_union
quote = _q
short_repr = _short

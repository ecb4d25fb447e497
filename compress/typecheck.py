"""Strict, readable coercion of YAML values into dataclass fields (the recipe's type checker)."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union


def type_name(tp: Any) -> str:
    """A short human name for a type annotation, used in error messages."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"mapping of {type_name(k)} to {type_name(v)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any) -> Any:
    """Return `value` as type `tp`, or raise TypeError naming the expected type."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return coerce(value, arg)
            except TypeError:
                pass
        raise TypeError(f"expected {type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise TypeError(f"expected one of {type_name(tp)}, got {value!r}")
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if isinstance(value, (str, int, float)) and args and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected {type_name(tp)}, got {value!r}")
        items = [coerce(v, args[0]) if args else v for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise TypeError(f"expected {type_name(tp)}, got {value!r}")
        return {coerce(k, kt): coerce(v, vt) for k, v in value.items()}
    if tp is type(None):
        if value is None:
            return None
        raise TypeError(f"expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise TypeError(f"expected a finite number, got {value!r} (NaN and infinities would train or "
                                f"quantize every weight to NaN)")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise TypeError(f"expected {type_name(tp)}, got {value!r}")


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build dataclass `cls` from a dict, checking keys, types, choices and ranges.

    Raises ValueError('<where>: ...') with the allowed keys or values, ready to show the user.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping of options, got {values!r}")
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in fields:
            raise ValueError(f"{where}: option {key!r} is unknown; allowed: {', '.join(fields)}")
        f = fields[key]
        try:
            val = coerce(raw, hints[key])
        except TypeError as e:
            raise ValueError(f"{where}: option {key!r}: {e}") from None
        meta = f.metadata
        if meta.get("choices") is not None and val not in meta["choices"]:
            allowed = ", ".join(repr(c) for c in meta["choices"])
            raise ValueError(f"{where}: option {key!r} = {val!r} is not allowed; allowed: {allowed}")
        lo, hi = meta.get("min"), meta.get("max")
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            if (lo is not None and val < lo) or (hi is not None and val > hi):
                raise ValueError(f"{where}: option {key!r} = {val!r} is out of range [{lo}, {hi}]")
        kwargs[key] = val
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check()
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return obj


def to_plain(obj: Any) -> Any:
    """A dataclass (or nested values) as plain YAML/JSON-able data, every default filled in."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj

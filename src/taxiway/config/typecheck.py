"""Check the normalised raw config against the model's types, key by key.

msgspec stops at the first error; users want every problem of a file at once, with
the key that holds it. So this walks the data alongside the model's type
information, reports unknown keys (with the nearest known one) and values of the
wrong type, and drops them, so that the rest converts to an `AppConfig` and the
validation rules can still run.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec
import msgspec.inspect as mi

from taxiway.config import model
from taxiway.config.diagnostics import Diagnostics, KeyPath, describe_value, format_path
from taxiway.config.written_floats import plain

_DROP = object()

#: How each table is named in messages, as a user writes it in fly.toml.
SECTION_NAMES: dict[type, str] = {
    model.AppConfig: "the top level",
    model.Service: "[[services]]",
    model.ServicePort: "[[services.ports]]",
    model.HTTPService: "[http_service]",
    model.Concurrency: "[concurrency]",
    model.TCPCheck: "[[services.tcp_checks]]",
    model.HTTPCheck: "an HTTP check",
    model.MachineCheck: "[[machine_checks]]",
    model.TopLevelCheck: "[checks.NAME]",
    model.Compute: "[[vm]]",
    model.Mount: "[[mounts]]",
    model.Restart: "[[restart]]",
    model.Metrics: "[[metrics]]",
    model.Static: "[[statics]]",
    model.File: "[[files]]",
    model.Build: "[build]",
    model.Deploy: "[deploy]",
    model.Experimental: "[experimental]",
    model.TLSOptions: "tls_options",
    model.HTTPOptions: "http_options",
    model.HTTPResponseOptions: "http_options.response",
    model.ProxyProtoOptions: "proxy_proto_options",
}


def check_types(data: dict[str, Any], diags: Diagnostics) -> dict[str, Any]:
    """Return ``data`` with unknown keys and ill-typed values removed; report each."""
    result = _check(data, _info(model.AppConfig), (), diags)
    return {} if result is _DROP else result


def to_model(data: dict[str, Any]) -> model.AppConfig:
    """Convert checked data to the model (cannot fail after `check_types`)."""
    return msgspec.convert(data, model.AppConfig, str_keys=True)


@cache
def _info(tp: type) -> mi.Type:
    return mi.type_info(tp)


@cache
def _owners(key: str) -> tuple[str, ...]:
    """Sections that do have ``key``, for the hint on a misplaced key."""
    return tuple(
        name
        for cls, name in SECTION_NAMES.items()
        if any(f.encode_name == key for f in _info(cls).fields)
    )


def _check(
    value: Any,
    t: mi.Type,
    path: KeyPath,
    diags: Diagnostics,
    owner: mi.StructType | None = None,
) -> Any:
    """Check ``value`` against ``t``; ``owner`` is the table whose key holds it (for hints)."""
    if isinstance(t, mi.Metadata):
        t = t.type
    if isinstance(t, mi.UnionType):
        options = [o.type if isinstance(o, mi.Metadata) else o for o in t.types]
        options = [o for o in options if not isinstance(o, mi.NoneType)]
        if value is None:
            return _DROP  # null (JSON/YAML) means the key is not set
        if len(options) == 1:
            return _check(value, options[0], path, diags, owner)
        for option in options:
            if _accepts(value, option):
                return _check(value, option, path, diags, owner)
        _type_error(value, options, path, diags)
        return _DROP
    if isinstance(t, mi.StructType):
        return _check_struct(value, t, path, diags, owner)
    if isinstance(t, mi.ListType):
        if not isinstance(value, list):
            _type_error(value, [t], path, diags)
            return _DROP
        out = []
        for i, item in enumerate(value):
            checked = _check(item, t.item_type, (*path, i), diags, owner)
            if checked is not _DROP:
                out.append(checked)
        return out
    if isinstance(t, mi.DictType):
        if not isinstance(value, dict):
            _type_error(value, [t], path, diags)
            return _DROP
        out_map = {}
        for k, v in value.items():
            if not isinstance(k, str):
                diags.error(f"{format_path(path)} has the key {k!r}, which is not a string", path)
                continue
            checked = _check(v, t.value_type, (*path, k), diags, owner)
            if checked is not _DROP:
                out_map[k] = checked
        return out_map
    if _accepts(value, t):
        if isinstance(t, mi.AnyType):
            return plain(value)
        if isinstance(value, float):  # the model gets plain numbers, not WrittenFloats
            return int(value) if isinstance(t, mi.IntType) else float(value)
        return value
    _type_error(value, [t], path, diags)
    return _DROP


def _check_struct(
    value: Any,
    t: mi.StructType,
    path: KeyPath,
    diags: Diagnostics,
    owner: mi.StructType | None,
) -> Any:
    if not isinstance(value, dict):
        _type_error(value, [t], path, diags)
        return _DROP
    fields = {f.encode_name: f for f in t.fields}
    lowered = {name.lower(): name for name in fields}
    out: dict[str, Any] = {}
    for key, item in value.items():
        key_path = (*path, key)
        if not isinstance(key, str):
            diags.error(
                f"{format_path(path) or 'the file'} has the key {key!r}, which is not a string",
                path,
            )
            continue
        name = key
        if key not in fields:
            if key.lower() in lowered:
                name = lowered[key.lower()]
                diags.warning(
                    f"{format_path(key_path)} is spelled {name} (flyctl ignores the case of keys, "
                    "other tools do not)",
                    key_path,
                )
            else:
                diags.warning(_unknown_key_message(key, key_path, t, fields, owner), key_path)
                continue
        checked = _check(item, fields[name].type, key_path, diags, t)
        if checked is not _DROP:
            out[name] = checked
    return out


def _unknown_key_message(
    key: str,
    path: KeyPath,
    t: mi.StructType,
    fields: dict[str, mi.Field],
    owner: mi.StructType | None,
) -> str:
    where = format_path(path)
    import difflib  # only a file with an unknown key pays for it

    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
    if close:
        return f"unknown key {where}; did you mean {close[0]}?"
    here = SECTION_NAMES.get(t.cls)
    if owner is not None and any(f.encode_name == key for f in owner.fields):
        return (
            f"unknown key {where}: {key} is a key of {SECTION_NAMES.get(owner.cls)}, "
            f"one level up, not of {here}"
        )
    owners = [name for name in _owners(key) if name != here]
    if owners and len(owners) <= 2:
        return f"unknown key {where}: {key} is a key of {' and '.join(owners)}, not of {here}"
    return f"unknown key {where}; taxiway and flyctl ignore it"


def _accepts(value: Any, t: mi.Type) -> bool:
    """Whether ``value`` has the shape of ``t`` (without looking inside containers)."""
    if isinstance(t, mi.Metadata):
        t = t.type
    if isinstance(t, mi.StrType):
        return isinstance(value, str)
    if isinstance(t, mi.BoolType):
        return isinstance(value, bool)
    if isinstance(t, mi.IntType):
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(t, mi.FloatType):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(t, mi.LiteralType):
        return value in t.values and type(value) in {type(v) for v in t.values}
    if isinstance(t, mi.StructType | mi.DictType):
        return isinstance(value, dict)
    if isinstance(t, mi.ListType):
        return isinstance(value, list)
    return isinstance(t, mi.AnyType)


def _expected(t: mi.Type) -> str:
    if isinstance(t, mi.Metadata):
        t = t.type
    if isinstance(t, mi.StrType):
        return "a string"
    if isinstance(t, mi.BoolType):
        return "true or false"
    if isinstance(t, mi.IntType):
        return "a whole number"
    if isinstance(t, mi.FloatType):
        return "a number"
    if isinstance(t, mi.LiteralType):
        values = [f'"{v}"' if isinstance(v, str) else str(v) for v in t.values]
        return "one of " + ", ".join(values)
    if isinstance(t, mi.StructType):
        return "a table"
    if isinstance(t, mi.DictType):
        return "a table"
    if isinstance(t, mi.ListType):
        return f"a list of {_expected(t.item_type).removeprefix('a ').removeprefix('an ')}s"
    return "something else"


def _type_error(value: Any, options: list[mi.Type], path: KeyPath, diags: Diagnostics) -> None:
    expected = " or ".join(dict.fromkeys(_expected(o) for o in options))
    what = describe_value(value)
    diags.error(f"{format_path(path)} must be {expected}, not {what}", path)

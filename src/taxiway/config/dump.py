"""Writing a config back out: TOML, JSON or YAML, always in today's form.

What is written reads back to the same `AppConfig` in any of the three formats
(and in flyctl: durations and sizes carry units, so nothing depends on which unit
a bare number would be read in). A TOML written from a TOML keeps the user's
comments: the new values are merged into the original document, key by key, so
only what changed is rewritten.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from taxiway.config.model import AppConfig


def to_data(config: AppConfig) -> dict[str, Any]:
    """The config as plain data: only keys that are set, in the model's order.

    A ``[[services]]`` entry with nothing set (its keys were all unknown) would be an
    empty table, which taxiway and flyctl drop when they read it; ``ports = []`` says
    the same "no ports" in a way both keep.
    """
    data = msgspec.to_builtins(config)
    for service in data.get("services", ()):
        if not service:
            service["ports"] = []
    return data


def dump(config: AppConfig, fmt: str) -> str:
    data = to_data(config)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
    if fmt == "toml":
        import tomlkit

        return tomlkit.dumps(data)
    raise ValueError(f"unknown format {fmt!r}")


def dump_toml_keeping_comments(config: AppConfig, original: str) -> str:
    """Merge the normalised config into the original TOML text, keeping its comments.

    Falls back to a fresh document when the original's layout cannot be merged
    (tomlkit refuses some rewrites of out-of-order tables); the values are the
    same either way.
    """
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(original)
        _merge(doc, to_data(config))
        text = tomlkit.dumps(doc)
        import tomllib

        if tomllib.loads(text) != _plain(to_data(config)):
            raise ValueError("merge changed a value")
        return text
    except (TOMLKitError, ValueError, KeyError, TypeError, AttributeError):
        return dump(config, "toml")


def _merge(container: Any, new: dict[str, Any]) -> None:
    """Make ``container`` (a tomlkit table or document) hold exactly ``new``."""
    for key in [k for k in container if k not in new]:
        del container[key]
    for key, value in new.items():
        if key not in container:
            container[key] = value
            continue
        old = container[key]
        if isinstance(value, dict) and isinstance(old, dict):
            _merge(old, value)
        elif (
            isinstance(value, list)
            and isinstance(old, list)
            and len(old) == len(value)
            and all(isinstance(v, dict) for v in value)
            and all(isinstance(o, dict) for o in old)
        ):
            for o, v in zip(old, value, strict=True):
                _merge(o, v)
        elif _plain(old) != value:
            container[key] = value


def _plain(value: Any) -> Any:
    """tomlkit items (and anything else) as plain Python values, for comparison."""
    unwrap = getattr(value, "unwrap", None)
    if unwrap is not None:
        return unwrap()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value

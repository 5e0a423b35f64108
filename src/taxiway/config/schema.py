"""A JSON Schema of fly.toml for editors (taplo / Even Better TOML) and CI.

Generated from the typed model, then widened to every spelling the loader accepts
(a single table where a list of tables is usual, the old section names, numbers
written as strings, ...), so every config taxiway loads without an error also
validates against the schema. Unknown keys are allowed: taxiway warns about them,
and the platform ignores them. Draft-07, the newest draft editors read reliably.
"""

from __future__ import annotations

from typing import Any

import msgspec

from taxiway.config.model import AppConfig

SCHEMA_ID = "https://taxiway.dev/schemas/fly.toml.json"


def json_schema() -> dict[str, Any]:
    (_root,), defs = msgspec.json.schema_components(
        [AppConfig], ref_template="#/definitions/{name}"
    )
    for definition in defs.values():
        _apply_input_types(definition)
        _widen_lists(definition)
    root = dict(defs.pop("AppConfig"))
    props = root["properties"]
    # Old names of sections, read as their new names.
    props["mount"] = props["mounts"]
    props["metric"] = props["metrics"]
    props["compute"] = props["computes"] = props["vm"]
    # Old shapes: processes = [] or [[processes]] name/command; [[env]]; [[checks]] with names.
    props["processes"] = {"anyOf": [props["processes"], {"type": "array"}]}
    props["env"] = {"anyOf": [props["env"], {"type": "array", "items": {"type": "object"}}]}
    props["checks"] = {"anyOf": [props["checks"], {"type": "array", "items": {"type": "object"}}]}
    service = defs["Service"]["properties"]
    service["concurrency"] = {
        "anyOf": [
            service["concurrency"],
            {"type": "string", "pattern": r"^\s*\d+\s*,\s*\d+\s*$", "description": '"soft,hard"'},
        ]
    }
    for check in ("HTTPCheck", "TopLevelCheck"):
        headers = defs[check]["properties"]["headers"]
        defs[check]["properties"]["headers"] = {
            "anyOf": [
                {
                    "type": "object",
                    "additionalProperties": {"type": ["string", "number", "boolean"]},
                },
                {"type": "array", "items": {"type": "object"}},
            ],
            "description": _description(headers),
        }
    defs["Build"]["properties"]["build_target"] = defs["Build"]["properties"]["build-target"]
    defs["Deploy"]["properties"]["max_unavailable"]["exclusiveMinimum"] = 0
    return {
        **root,
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "fly.toml",
        "description": "Fly.io app configuration, as read by taxiway and flyctl.",
        "definitions": defs,
    }


def _widen_lists(definition: dict[str, Any]) -> None:
    """Every list of tables also accepts a single table (``[mounts]`` for ``[[mounts]]``)."""
    for name, prop in definition.get("properties", {}).items():
        options = prop.get("anyOf", [prop])
        for i, option in enumerate(options):
            if option.get("type") == "array" and "$ref" in option.get("items", {}):
                options[i] = {"anyOf": [option, option["items"]]}
        if "anyOf" not in prop:
            definition["properties"][name] = options[0]


def _apply_input_types(node: Any) -> None:
    """Where the model states what input a key accepts (``x-input`` in its metadata),
    that replaces the generated type, which describes only the normalised form."""
    if isinstance(node, dict):
        accepted = node.pop("x-input", None)
        if accepted is not None:
            for key in ("anyOf", "type", "enum", "additionalProperties", "items"):
                node.pop(key, None)
            node.update(accepted)
        for value in node.values():
            _apply_input_types(value)
    elif isinstance(node, list):
        for value in node:
            _apply_input_types(value)


def _description(schema: dict[str, Any]) -> str:
    return schema.get("description", "") or next(
        (o.get("description", "") for o in schema.get("anyOf", [])), ""
    )

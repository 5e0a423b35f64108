"""The shape `taxiway config validate --json` promises, checked the same way everywhere."""

from __future__ import annotations

import json
from typing import Any


def assert_validate_json(text: str) -> dict[str, Any]:
    """`validate --json` output: exactly {"valid": bool, "diagnostics": [{4 keys}]}."""
    out = json.loads(text)
    assert isinstance(out, dict)
    assert set(out) == {"valid", "diagnostics"}
    assert isinstance(out["valid"], bool)
    assert isinstance(out["diagnostics"], list)
    for d in out["diagnostics"]:
        assert isinstance(d, dict)
        assert set(d) == {"severity", "message", "path", "line"}, d
        assert d["severity"] in {"error", "warning", "info"}
        assert isinstance(d["message"], str) and d["message"]
        assert isinstance(d["path"], str)
        assert d["line"] is None or (type(d["line"]) is int and d["line"] >= 1), d
    return out

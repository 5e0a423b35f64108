"""What a Machines API request carries, checked: its JSON body's fields and types, its
query values, durations and signals. Every refusal is an `HTTPError` 400 with one
sentence naming the field, so a client's mistake never reaches the runtime.

Unknown body fields are refused rather than ignored: a misspelt ``"timout"`` silently
ignored would leave the user wondering why the default applied.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Mapping
from typing import Any

from taxiway.api.routing import HTTPError, Request
from taxiway.config.units import UnitError, parse_duration_ns

#: A field's expected kind: its name in sentences, and the test.
Kind = tuple[str, Callable[[Any], bool]]

STRING: Kind = ("a string", lambda v: isinstance(v, str))
INTEGER: Kind = ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
NUMBER: Kind = (
    "a number",
    lambda v: isinstance(v, int | float) and not isinstance(v, bool),
)
BOOLEAN: Kind = ("true or false", lambda v: isinstance(v, bool))
OBJECT: Kind = ("an object", lambda v: isinstance(v, dict))
STRING_LIST: Kind = (
    "a list of strings",
    lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
)
STRING_MAP: Kind = (
    "an object of strings",
    lambda v: isinstance(v, dict) and all(isinstance(i, str) for i in v.values()),
)


def bad_request(message: str) -> HTTPError:
    return HTTPError(400, message)


def not_found(message: str) -> HTTPError:
    return HTTPError(404, message)


def conflict(message: str) -> HTTPError:
    return HTTPError(409, message)


def json_body(
    request: Request, fields: Mapping[str, Kind], *, what: str, optional: bool = False
) -> dict[str, Any]:
    """The request's JSON object with only ``fields``, each of its kind (null counts as
    absent, as Go's decoder takes it). ``optional``: an empty body is ``{}``."""
    if not request.body.strip():
        if optional:
            return {}
        raise bad_request(f"{what} needs a JSON object in the request body")
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("the request body is not valid JSON") from None
    except RecursionError:
        raise bad_request("the request body's JSON nests too deeply") from None
    if data is None and optional:
        return {}
    if not isinstance(data, dict):
        raise bad_request(f"{what} takes a JSON object, not {_kind_of(data)}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(fields) or "no fields"
        raise bad_request(f"{what} has no field {unknown[0]!r} (it takes: {known})")
    for name, value in data.items():
        description, accepts = fields[name]
        if value is not None and not accepts(value):
            raise bad_request(f"{what}: {name} must be {description}, not {_kind_of(value)}")
    return {name: value for name, value in data.items() if value is not None}


def query_int(request: Request, name: str, default: int, *, minimum: int = 0) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise bad_request(f"{name} must be at least {minimum}, not {value}")
    return value


def query_bool(request: Request, name: str) -> bool:
    raw = request.query.get(name, "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise bad_request(f"{name} must be true or false, not {request.query[name]!r}")


def duration_s(value: object, what: str) -> float:
    """Seconds from a number of seconds, or a Go duration string (``"10s"``, ``"1m30s"``),
    as the platform's stop and restart timeouts take them."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                seconds = parse_duration_ns(text) / 1e9
            except UnitError:
                raise bad_request(
                    f'{what} must be seconds or a duration like "10s", not {value!r}'
                ) from None
    else:
        raise bad_request(f'{what} must be seconds or a duration like "10s"')
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise bad_request(f"{what} can't be {value!r}")
    return seconds


def signal_from(value: object, what: str = "signal") -> int:
    """A signal by name (``SIGTERM`` or ``TERM``) or number (``9`` or ``"9"``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    elif isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            return int(signal.Signals[name])
        except KeyError:
            raise bad_request(f"{what} {value!r} is not a signal name like SIGTERM") from None
    else:
        raise bad_request(f"{what} must be a signal name like SIGTERM or its number")
    try:
        return int(signal.Signals(number))
    except ValueError:
        raise bad_request(f"{what} {number} is not a signal number") from None


def _kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"

"""Finding, reading and parsing a config file into a plain dict.

Like flyctl: ``./fly.toml`` unless ``-c`` names another file (or a directory that
holds one); the format follows the extension (``.json``, ``.yaml``/``.yml``, else
TOML). Every way a file can fail to read becomes a `ConfigFileError` carrying one
sentence with the file and, where the parser knows it, the line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec

from taxiway.errors import TaxiwayError

#: Looked for, in this order, when no file is named (or a directory is).
DEFAULT_NAMES = ("fly.toml", "fly.yaml", "fly.yml", "fly.json")


class ConfigFileError(TaxiwayError):
    """The config file is missing, unreadable or not valid TOML/JSON/YAML."""

    def __init__(self, message: str, *, path: Path | None = None, line: int | None = None):
        super().__init__(message)
        self.path = path
        self.line = line


class ConfigSource(msgspec.Struct, frozen=True):
    """A config file as read from disk: where it is, its format, its text and its data."""

    path: Path
    format: str  # "toml" | "json" | "yaml"
    text: str
    data: dict[str, Any]

    @property
    def display_name(self) -> str:
        """The path as the user wrote it (``fly.toml``, ``../app/fly.toml``)."""
        return str(self.path)


def format_for(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    return "toml"


def find_config(config: str | Path | None = None, cwd: Path | None = None) -> Path:
    """Resolve ``-c`` (or its absence) to a config file path, or say clearly why not.

    Relative paths stay relative (to ``cwd``, default the current directory), so
    messages name the file the way the user wrote it.
    """
    base = Path(".") if cwd is None else cwd
    if config is None:
        for name in DEFAULT_NAMES:
            candidate = base / name
            if candidate.is_file():
                return candidate
        where = "this folder" if cwd is None else str(cwd)
        raise ConfigFileError(
            f"no fly.toml in {where}; run taxiway in the app's folder or pass -c PATH"
        )
    path = Path(config).expanduser()
    if cwd is not None and not path.is_absolute():
        path = cwd / path
    if path.is_dir():
        for name in DEFAULT_NAMES:
            if (path / name).is_file():
                return path / name
        raise ConfigFileError(
            f"{config} is a directory with no fly.toml in it; pass the config file itself",
            path=path,
        )
    if not path.exists():
        raise ConfigFileError(f"{config}: no such file", path=path)
    return path


def read_config(path: Path) -> ConfigSource:
    """Read and parse one config file."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise ConfigFileError(f"{name} is a directory, not a config file", path=path) from None
    except PermissionError:
        raise ConfigFileError(f"cannot read {name}: permission denied", path=path) from None
    except FileNotFoundError:
        raise ConfigFileError(f"{name}: no such file", path=path) from None
    except OSError as exc:
        raise ConfigFileError(f"cannot read {name}: {exc.strerror or exc}", path=path) from None
    text = _decode(raw, path)
    fmt = format_for(path)
    data = _PARSERS[fmt](text, path)
    if not isinstance(data, dict):
        kind = _kind(data)
        raise ConfigFileError(
            f"{name} must hold a table of keys at the top level, not {kind}", path=path
        )
    return ConfigSource(path=path, format=fmt, text=text, data=data)


def _decode(raw: bytes, path: Path) -> str:
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise ConfigFileError(
            f"{path}:{line}: not a text file (it contains NUL bytes)", path=path, line=line
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigFileError(
            f"{path}:{line}: not a text file (not valid UTF-8 at byte {exc.start})",
            path=path,
            line=line,
        ) from None
    return text.removeprefix("\ufeff")


_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)$|\s*\(at end of document\)$")


def _parse_toml(text: str, path: Path) -> Any:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_POS.search(msg)
        line = int(m.group(1)) if m and m.group(1) else text.count("\n") + 1
        reason = _TOML_POS.sub("", msg)
        reason = _TOML_HINTS.get(reason.split(" (")[0], reason[:1].lower() + reason[1:])
        raise ConfigFileError(
            f"{path}:{line}: not valid TOML: {reason}", path=path, line=line
        ) from None


#: tomllib's terse reasons, said the way a user can act on them.
_TOML_HINTS = {
    "Cannot overwrite a value": "the same key is defined twice",
    "Cannot declare": "the same table is declared twice",
    "Invalid value": "a value here is not valid TOML (strings need quotes)",
    "Invalid statement": "this line is neither a key = value pair nor a [table] header",
    "Expected '=' after a key in a key/value pair": "a key must be followed by '='",
    "Unclosed array": "an array is not closed with ']'",
    "Unterminated string": "a string is not closed",
}


def _parse_json(text: str, path: Path) -> Any:
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigFileError(
            f"{path}:{exc.lineno}: not valid JSON: {exc.msg[:1].lower() + exc.msg[1:]}",
            path=path,
            line=exc.lineno,
        ) from None
    except RecursionError:
        raise ConfigFileError(f"{path}: not valid JSON: nested too deeply", path=path) from None


def _parse_yaml(text: str, path: Path) -> Any:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        reason = exc.problem or exc.context or "malformed YAML"
        where = f"{path}:{line}" if line else str(path)
        raise ConfigFileError(f"{where}: not valid YAML: {reason}", path=path, line=line) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigFileError(
            f"{path}:{line}: not valid YAML: {exc.reason} (character #x{exc.character:04x})"
            if isinstance(exc.character, int)
            else f"{path}:{line}: not valid YAML: {exc.reason}",
            path=path,
            line=line,
        ) from None
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigFileError(f"{path}: not valid YAML: {reason}", path=path) from None
    except RecursionError:
        raise ConfigFileError(f"{path}: not valid YAML: nested too deeply", path=path) from None
    return {} if data is None else data  # an empty YAML file is an empty config, as in TOML


_PARSERS = {"toml": _parse_toml, "json": _parse_json, "yaml": _parse_yaml}


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (the file is empty)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__

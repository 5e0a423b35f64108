"""Finding, reading and parsing a config file into a plain dict.

Like flyctl: ``./fly.toml`` unless ``-c`` names another file (or a directory that
holds one); the format follows the extension (``.json``, ``.yaml``/``.yml``, else
TOML). Every way a file can fail to read becomes a `ConfigFileError` carrying one
sentence with the file and, where the parser knows it, the line.

Keys set twice are refused in TOML (by the format) and in YAML (YAML requires unique
keys, and flyctl's reader, gopkg.in/yaml.v3, refuses them); JSON allows them and Go's
encoding/json, like Python's, keeps the last, so they are noted for a warning instead.
"""

from __future__ import annotations

import re
import stat
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import msgspec

from taxiway.config.diagnostics import KeyPath, format_path
from taxiway.config.written_floats import FloatTexts
from taxiway.errors import TaxiwayError

#: Looked for, in this order, when no file is named (or a directory is).
DEFAULT_NAMES = ("fly.toml", "fly.yaml", "fly.yml", "fly.json")

#: Tables and lists nested deeper than this are refused: fly.toml needs a handful of
#: levels, and the layers after the parser walk values recursively.
MAX_NESTING = 100


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
    #: Keys a JSON file sets twice in one object; the last one counts, as in flyctl.
    repeated_keys: tuple[KeyPath, ...] = ()
    #: How the file spelled floats that Python prints otherwise (see `written_floats`).
    float_texts: dict[float, str] = msgspec.field(default_factory=dict)

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
    kind = _kind_on_disk(path, str(config))
    if kind == "directory":
        for name in DEFAULT_NAMES:
            if (path / name).is_file():
                return path / name
        raise ConfigFileError(
            f"{config} is a directory with no fly.toml in it; pass the config file itself",
            path=path,
        )
    if kind is None:
        raise ConfigFileError(f"{config}: no such file", path=path)
    return path


def _kind_on_disk(path: Path, shown: str) -> str | None:
    """What is at ``path``: a "directory", a "file" (anything else) or None (nothing).

    The system's refusals to look (a name too long, a loop of symlinks) become a sentence.
    """
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigFileError(f"cannot read {shown}: {_reason(exc)}", path=path) from None
    return "directory" if stat.S_ISDIR(mode) else "file"


def _reason(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return reason[:1].lower() + reason[1:]


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
    notes = _ParseNotes()
    data = _PARSERS[fmt](text, path, notes)
    if not isinstance(data, dict):
        kind = _kind(data)
        raise ConfigFileError(
            f"{name} must hold a table of keys at the top level, not {kind}", path=path
        )
    _refuse_deep_nesting(data, text, fmt, path)
    return ConfigSource(
        path=path,
        format=fmt,
        text=text,
        data=data,
        repeated_keys=notes.repeated_key_paths(data),
        float_texts=notes.floats.texts,
    )


class _ParseNotes:
    """What a parser learns besides the data: float spellings and JSON's repeated keys."""

    def __init__(self) -> None:
        self.floats = FloatTexts()
        #: id() of each JSON object that had repeated keys → the object (held, so that its
        #: id is not reused) and those keys.
        self.repeated: dict[int, tuple[dict[str, Any], list[str]]] = {}

    def json_object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        """An ``object_pairs_hook`` for json: a dict as json makes it, noting repeats."""
        table = dict(pairs)
        if len(table) < len(pairs):
            counts = Counter(key for key, _ in pairs)
            self.repeated[id(table)] = (table, [key for key, n in counts.items() if n > 1])
        return table

    def repeated_key_paths(self, data: dict[str, Any]) -> tuple[KeyPath, ...]:
        """The key paths, in ``data``, of the keys noted as repeated."""
        if not self.repeated:
            return ()
        found: list[KeyPath] = []
        pending: list[tuple[Any, KeyPath]] = [(data, ())]
        while pending:
            value, path = pending.pop()
            if isinstance(value, dict):
                table, keys = self.repeated.get(id(value), (None, ()))
                if table is value:
                    found.extend((*path, key) for key in keys)
                pending.extend((v, (*path, k)) for k, v in value.items())
            elif isinstance(value, list):
                pending.extend((v, (*path, i)) for i, v in enumerate(value))
        return tuple(sorted(found, key=format_path))


def _refuse_deep_nesting(data: dict[str, Any], text: str, fmt: str, path: Path) -> None:
    """Refuse values nested beyond `MAX_NESTING` (or in a loop, which YAML anchors allow).

    Goes level by level, each table or list once per level, so shared YAML anchors
    cost no more than the text that writes them.
    """
    level: dict[int, tuple[Any, KeyPath]] = {id(data): (data, ())}
    for _ in range(MAX_NESTING):
        below: dict[int, tuple[Any, KeyPath]] = {}
        for value, key_path in level.values():
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(item, dict | list):
                    below.setdefault(id(item), (item, (*key_path, key)))
        if not below:
            return
        level = below
    from taxiway.config.positions import PositionIndex

    _, deepest = next(iter(level.values()))
    line = PositionIndex.build(text, fmt).line(deepest)
    where = f"{path}:{line}" if line else str(path)
    raise ConfigFileError(
        f"{where}: values are nested too deeply (more than {MAX_NESTING} levels of tables "
        "and lists; fly.toml needs a handful)",
        path=path,
        line=line,
    )


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


def _parse_toml(text: str, path: Path, notes: _ParseNotes) -> Any:
    import tomllib

    try:
        return tomllib.loads(text, parse_float=notes.floats.parse)
    except RecursionError:
        raise ConfigFileError(f"{path}: not valid TOML: nested too deeply", path=path) from None
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


def _parse_json(text: str, path: Path, notes: _ParseNotes) -> Any:
    import json

    try:
        return json.loads(text, parse_float=notes.floats.parse, object_pairs_hook=notes.json_object)
    except json.JSONDecodeError as exc:
        raise ConfigFileError(
            f"{path}:{exc.lineno}: not valid JSON: {exc.msg[:1].lower() + exc.msg[1:]}",
            path=path,
            line=exc.lineno,
        ) from None
    except RecursionError:
        raise ConfigFileError(f"{path}: not valid JSON: nested too deeply", path=path) from None


def _parse_yaml(text: str, path: Path, notes: _ParseNotes) -> Any:
    import yaml

    try:
        data = _load_yaml(text, path, notes)
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


def _load_yaml(text: str, path: Path, notes: _ParseNotes) -> Any:
    """`yaml.safe_load`, refusing repeated keys and noting how floats were written."""
    loader = _yaml_loader()(text)
    loader.float_texts = notes.floats
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_repeated_yaml_keys(node, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


@cache
def _yaml_loader() -> type:
    """PyYAML's safe loader, noting how floats were written (see `written_floats`)."""
    import yaml

    class Loader(yaml.SafeLoader):
        float_texts: FloatTexts

        def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
            return self.float_texts.note(node.value, super().construct_yaml_float(node))

    Loader.add_constructor("tag:yaml.org,2002:float", Loader.construct_yaml_float)
    return Loader


def _refuse_repeated_yaml_keys(root: Any, path: Path) -> None:
    """Refuse a mapping that has a key twice, as flyctl's YAML reader does.

    Keys are compared by their text, as gopkg.in/yaml.v3 does; of several repeats the
    one written first in the file is named. Each node is visited once (anchors share).
    """
    import yaml

    repeats: list[tuple[int, int, KeyPath]] = []  # (line, first line, key path)
    seen: set[int] = set()
    pending: list[tuple[Any, KeyPath]] = [(root, ())]
    while pending:
        node, key_path = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            pending.extend((item, (*key_path, i)) for i, item in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            first_lines: dict[str, int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue
                line = key.start_mark.line + 1
                if key.value in first_lines:
                    repeats.append((line, first_lines[key.value], (*key_path, key.value)))
                else:
                    first_lines[key.value] = line
                pending.append((value, (*key_path, key.value)))
    if repeats:
        line, first, key_path = min(repeats, key=lambda r: r[:2])
        raise ConfigFileError(
            f"{path}:{line}: not valid YAML: {format_path(key_path)} is set twice "
            f"(first on line {first}); keys must be unique in YAML, and flyctl refuses the "
            "file too",
            path=path,
            line=line,
        )


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

"""Load a config: read → normalise → type-check → model → rules, with line numbers.

This is the one entry point the rest of taxiway uses (`load_config`). It never
raises for problems *inside* the file: those come back as diagnostics, so callers
can print all of them. A file that cannot be read or parsed at all raises
`ConfigFileError`.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import msgspec.structs

from taxiway.config.diagnostics import Diagnostic, Diagnostics, Severity, format_path
from taxiway.config.model import AppConfig, Deploy
from taxiway.config.normalize import Normalized, normalize
from taxiway.config.source import ConfigSource, find_config, read_config


class LoadedConfig(msgspec.Struct):
    """A config as taxiway understood it, and everything it has to say about it."""

    source: ConfigSource
    config: AppConfig
    normalized: Normalized
    diagnostics: list[Diagnostic]

    @property
    def valid(self) -> bool:
        return not any(d.severity is Severity.ERROR for d in self.diagnostics)

    @property
    def base_dir(self) -> Path:
        """The folder fly.toml lives in: relative paths in the config are resolved from it."""
        return self.source.path.parent


def load_config(
    config: str | Path | None = None,
    *,
    cwd: Path | None = None,
    strategy: str | None = None,
) -> LoadedConfig:
    """Find, read and check a config file.

    ``strategy`` checks the config as a deploy with ``--strategy`` would (it replaces
    ``[deploy] strategy``), e.g. that canary is refused for groups with volumes.
    """
    source = read_config(find_config(config, cwd))
    return check_source(source, strategy=strategy)


def check_source(source: ConfigSource, *, strategy: str | None = None) -> LoadedConfig:
    """Normalise, type-check and validate an already parsed config."""
    from taxiway.config.rules import validate
    from taxiway.config.typecheck import check_types, to_model

    diags = Diagnostics()
    for path in source.repeated_keys:
        diags.warning(
            f"{format_path(path)} is set twice in one JSON object; the last one counts, as in "
            "flyctl, and the first is ignored",
            path,
            file_path=path,
        )
    normalized = normalize(source.data, diags, float_texts=source.float_texts)
    checked = check_types(normalized.data, diags)
    config = to_model(checked)
    if strategy is not None:
        deploy = msgspec.structs.replace(config.deploy or Deploy(), strategy=strategy)
        config = msgspec.structs.replace(config, deploy=deploy)
    validate(config, diags, base_dir=source.path.parent)
    return LoadedConfig(source, config, normalized, _with_lines(diags, source, normalized))


def _with_lines(
    diags: Diagnostics, source: ConfigSource, normalized: Normalized
) -> list[Diagnostic]:
    """Give each diagnostic the line where its key is written in the file."""
    if not diags:
        return []
    from taxiway.config.positions import PositionIndex

    index = PositionIndex.build(source.text, source.format)
    out = []
    for d in diags:
        where = d.file_path if d.file_path is not None else normalized.source_path(d.path)
        out.append(msgspec.structs.replace(d, line=d.line or index.line(where)))
    return out

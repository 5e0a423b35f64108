"""`taxiway config …`: validate, show, save, schema, machines."""

from __future__ import annotations

import argparse
import json
import sys

from taxiway.cli.render import print_diagnostics
from taxiway.config.diagnostics import Severity, in_file_order
from taxiway.config.loader import LoadedConfig, load_config
from taxiway.errors import TaxiwayError


def validate(args: argparse.Namespace) -> int:
    from taxiway.config.source import ConfigFileError

    try:
        loaded = load_config(args.config, strategy=args.strategy)
    except ConfigFileError as exc:
        if not args.json:
            raise
        _print_json(
            {
                "valid": False,
                "diagnostics": [
                    {"severity": "error", "message": str(exc), "path": "", "line": exc.line}
                ],
            }
        )
        return 1
    diags = in_file_order(loaded.diagnostics)
    failing = {Severity.ERROR} | ({Severity.WARNING} if args.strict else set())
    ok = not any(d.severity in failing for d in diags)
    if args.json:
        _print_json({"valid": ok, "diagnostics": [d.to_json() for d in diags]})
        return 0 if ok else 1
    name = loaded.source.display_name
    print_diagnostics(diags, name)
    errors = sum(d.severity is Severity.ERROR for d in diags)
    warnings = sum(d.severity is Severity.WARNING for d in diags)
    if ok:
        summary = f"{name} is valid"
        if warnings:
            summary += f" ({warnings} warning{'s' if warnings != 1 else ''})"
        print(summary)
        return 0
    parts = [f"{errors} error{'s' if errors != 1 else ''}"] if errors else []
    if args.strict and warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''} (--strict)")
    print(f"{name} is not valid: {', '.join(parts)}", file=sys.stderr)
    return 1


def load_valid(config: str | None) -> LoadedConfig:
    """Load a config for a command that needs it valid; print its findings."""
    loaded = load_config(config)
    name = loaded.source.display_name
    if not loaded.valid:
        print_diagnostics([d for d in loaded.diagnostics if d.severity is Severity.ERROR], name)
        raise TaxiwayError(
            f"{name} is not valid; fix the errors above (`taxiway config validate` lists all)"
        )
    return loaded


def show(args: argparse.Namespace) -> int:
    from taxiway.config.dump import dump

    loaded = load_valid(args.config)
    sys.stdout.write(dump(loaded.config, args.format))
    return 0


def save(args: argparse.Namespace) -> int:
    from pathlib import Path

    from taxiway.config.dump import dump, dump_toml_keeping_comments
    from taxiway.config.source import format_for

    loaded = load_valid(args.config)
    out = Path(args.output)
    fmt = args.format or format_for(out)
    if fmt == "toml" and loaded.source.format == "toml":
        text = dump_toml_keeping_comments(loaded.config, loaded.source.text)
    else:
        text = dump(loaded.config, fmt)
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise TaxiwayError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"wrote {out} ({fmt})")
    return 0


def schema(args: argparse.Namespace) -> int:
    from taxiway.config.schema import json_schema

    _print_json(json_schema())
    return 0


def machines(args: argparse.Namespace) -> int:
    from taxiway.cli.plan_view import machines_text, statics_groups
    from taxiway.config.groups import default_group
    from taxiway.plan.machine import plan_machines

    loaded = load_valid(args.config)
    specs = plan_machines(loaded.config, base_dir=loaded.base_dir)
    statics_shown = statics_groups(specs, default_group(loaded.config))
    if args.group is not None:
        if args.group not in specs:
            raise TaxiwayError(
                f"{loaded.source.display_name} has no process group '{args.group}' "
                f"(groups: {', '.join(specs)})"
            )
        specs = {args.group: specs[args.group]}
    if args.json:
        import msgspec

        sys.stdout.write(msgspec.json.format(msgspec.json.encode(specs), indent=2).decode() + "\n")
    else:
        sys.stdout.write(machines_text(specs, statics_shown))
    return 0


def _print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")

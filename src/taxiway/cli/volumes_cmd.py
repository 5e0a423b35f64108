"""`taxiway volumes list|create|extend|destroy`: the app's volumes and their data.

Volumes live in the state store and as folders under `.taxiway/volumes/`; nothing
removes a volume's data except `destroy`, which refuses while a machine uses it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from taxiway.cli.app_cmd import client_for, print_table
from taxiway.cli.json_result import print_json
from taxiway.errors import TaxiwayError
from taxiway.state.records import VolumeRecord
from taxiway.state.store import RECOVER_COMMAND
from taxiway.state.volume_folders import remove_folder, unlisted_folders


def volumes(args: argparse.Namespace) -> int:
    from taxiway.runtime.environment import region_for
    from taxiway.state import new_volume_id
    from taxiway.state.store import Store

    _, app, paths = client_for(args.config)
    paths.ensure()
    with Store.open(paths.state_dir) as store:
        store.ensure_app(app, str(paths.state_dir.parent))
        command = args.volumes_command
        if command == "list":
            records = store.list_volumes(app)
            if args.json:
                json.dump([_json(v) for v in records], sys.stdout, indent=2)
                print()
            elif not records:
                print(f"{app} has no volumes")
            else:
                print_table(
                    [("ID", "NAME", "SIZE", "REGION", "ATTACHED TO", "PATH")]
                    + [
                        (
                            v.id,
                            v.name,
                            f"{v.size_gb:g}GB",
                            v.region,
                            v.attached_machine_id or "-",
                            v.path,
                        )
                        for v in records
                    ]
                )
            _note_unlisted(paths.state_dir, store.list_volumes(app, include_destroyed=True))
            return 0
        if command == "create":
            from taxiway.config.names import volume_name_problem

            problem = volume_name_problem(args.name)
            if problem is not None:
                raise TaxiwayError(problem)
            if args.size <= 0:
                raise TaxiwayError("a volume's --size must be more than 0 GB")
            volume_id = new_volume_id()
            path = paths.state_dir / "volumes" / volume_id
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            from taxiway.config.loader import load_config

            region = region_for(load_config(args.config).config.primary_region)
            try:
                volume = store.create_volume(
                    app, args.name, args.size, region, path, volume_id=volume_id
                )
            except TaxiwayError:
                path.rmdir()  # refused (its name or size): no folder without a volume
                raise
            _say(args, volume, f"created volume {volume.id} ({volume.name}, {volume.size_gb:g}GB)")
            return 0
        volume = _find(store.list_volumes(app), args.id)
        if command == "extend":
            volume = store.extend_volume(volume.id, args.size)
            _say(args, volume, f"volume {volume.id} is now {volume.size_gb:g}GB")
            return 0
        destroyed = store.destroy_volume(volume.id)
        remove_folder(volume)
        _say(args, destroyed, f"destroyed volume {volume.id} ({volume.name}) and its data")
        return 0


def _say(args: argparse.Namespace, volume: VolumeRecord, sentence: str) -> None:
    """What a change did: the sentence, or with --json the volume as `list --json` shows
    it (its ``state`` says ``destroyed`` after a destroy)."""
    if getattr(args, "json", False):
        print_json(_json(volume))
    else:
        print(sentence)


def _note_unlisted(state_dir: Path, listed: list[VolumeRecord]) -> None:
    """Volume folders the store doesn't know (a lost database) are never hidden."""
    unlisted = unlisted_folders(state_dir, listed)
    if unlisted:
        print(
            f"note: {len(unlisted)} volume folder(s) in {state_dir / 'volumes'} are not in the "
            f"state store ({', '.join(f.name for f in unlisted)}); `{RECOVER_COMMAND}` "
            "records them as unattached volumes",
            file=sys.stderr,
        )


def _find(records: list, prefix: str):
    hits = [v for v in records if v.id == prefix or v.id.startswith(prefix)]
    if len(hits) != 1:
        raise TaxiwayError(
            f"no volume {prefix}" if not hits else f"{prefix} matches {len(hits)} volumes"
        )
    return hits[0]


def _json(v: object) -> dict[str, object]:
    import msgspec

    return msgspec.to_builtins(v)

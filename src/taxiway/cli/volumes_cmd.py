"""`taxiway volumes list|create|update|extend|destroy|snapshots`: the app's volumes,
their data and its snapshots.

Volumes live in the state store and as folders under `.taxiway/volumes/`; nothing
removes a volume's data except `destroy`, which refuses while a machine uses it.
Snapshots (`taxiway.volumes.snapshots`) are taken by the daemon when it runs the app,
since it owns the machine to pause for the copy, else straight from the folder;
`create --snapshot-id` restores one into a new volume.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from taxiway.cli.app_cmd import client_for, print_table
from taxiway.cli.json_result import print_json
from taxiway.errors import TaxiwayError
from taxiway.state.records import VolumeRecord
from taxiway.state.store import RECOVER_COMMAND
from taxiway.state.volume_folders import unlisted_folders

if TYPE_CHECKING:
    from taxiway.api.client import Client
    from taxiway.state.store import Store


def volumes(args: argparse.Namespace) -> int:
    from taxiway.runtime.environment import region_for
    from taxiway.state.store import Store

    client, app, paths = client_for(args.config)
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
        if command == "snapshots":
            return _snapshots(args, client, store, app, paths.state_dir)
        if command == "update":
            from taxiway.volumes.lookup import find_volume

            volume = store.update_volume(
                find_volume(store, app, args.id).id,
                snapshot_retention=args.snapshot_retention,
                auto_backup_enabled=args.scheduled_snapshots,
            )
            _say(
                args,
                volume,
                f"volume {volume.id}: snapshots kept {volume.snapshot_retention} days, daily "
                f"snapshots {'on' if volume.auto_backup_enabled else 'off'}",
            )
            return 0
        if command == "create":
            from taxiway.volumes.lifecycle import check_name, create_volume

            check_name(args.name)
            if args.snapshot_id is not None:
                return _restore(args, store, app, paths.state_dir)
            size = 1.0 if args.size is None else args.size
            if size <= 0:
                raise TaxiwayError("a volume's --size must be more than 0 GB")
            from taxiway.config.loader import load_config

            volume = create_volume(
                store,
                paths.state_dir,
                app,
                args.name,
                size_gb=size,
                region=region_for(load_config(args.config).config.primary_region),
                snapshot_retention=args.snapshot_retention or 5,
                auto_backup_enabled=args.scheduled_snapshots is not False,
            )
            _say(args, volume, f"created volume {volume.id} ({volume.name}, {volume.size_gb:g}GB)")
            return 0
        volume = _find(store.list_volumes(app), args.id)
        if command == "extend":
            volume = store.extend_volume(volume.id, args.size)
            _say(args, volume, f"volume {volume.id} is now {volume.size_gb:g}GB")
            return 0
        from taxiway.volumes.lifecycle import destroy_volume

        destroyed = destroy_volume(store, volume)
        _say(args, destroyed, f"destroyed volume {volume.id} ({volume.name}) and its data")
        return 0


def _restore(args: argparse.Namespace, store: Store, app: str, state_dir: Path) -> int:
    """`volumes create NAME --snapshot-id ID`: a new volume holding the snapshot's data."""
    from taxiway.config.loader import load_config
    from taxiway.runtime.environment import region_for
    from taxiway.volumes.snapshots import find_snapshot, restore_volume

    snapshot = find_snapshot(store, app, args.snapshot_id)
    region = region_for(load_config(args.config).config.primary_region)
    volume = restore_volume(
        store,
        state_dir,
        snapshot,
        name=args.name,
        region=region,
        size_gb=args.size,
        snapshot_retention=args.snapshot_retention,
        auto_backup_enabled=args.scheduled_snapshots is not False,
    )
    _say(
        args,
        volume,
        f"created volume {volume.id} ({volume.name}, {volume.size_gb:g}GB) from snapshot "
        f"{snapshot.id}",
    )
    return 0


def _snapshots(
    args: argparse.Namespace, client: Client, store: Store, app: str, state_dir: Path
) -> int:
    """`volumes snapshots list|create VOLUME`."""
    from taxiway.volumes.lookup import find_volume

    if args.snapshots_command == "create":
        from taxiway.api.client import DaemonNotRunning

        volume = find_volume(store, app, args.volume)
        client.timeout = 3600.0  # a big volume takes a while to copy
        try:  # the daemon owns the machines: it pauses the one using the volume
            snapshot = client.request("POST", f"/v1/apps/{app}/volumes/{volume.id}/snapshots")
        except DaemonNotRunning:  # no machine runs: the folder is still
            import msgspec

            from taxiway.volumes.snapshots import take_snapshot

            snapshot = msgspec.to_builtins(take_snapshot(store, state_dir, volume))
        if args.json:
            print_json(snapshot)
        else:
            print(
                f"created snapshot {snapshot['id']} of volume {volume.id} ({volume.name}, "
                f"{_bytes(snapshot['size'])}, kept {snapshot['retention_days']} days)"
            )
        return 0
    volume = find_volume(store, app, args.volume, destroyed_ok=True)
    records = store.list_snapshots(app, volume.id)
    if args.json:
        json.dump([_json(s) for s in records], sys.stdout, indent=2)
        print()
    elif not records:
        print(f"volume {volume.id} ({volume.name}) has no snapshots")
    else:
        print_table(
            [("ID", "KIND", "STATUS", "SIZE", "CREATED AT", "RETENTION DAYS")]
            + [
                (s.id, s.kind, s.status, _bytes(s.size), s.created_at, str(s.retention_days))
                for s in reversed(records)  # newest first
            ]
        )
    return 0


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


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

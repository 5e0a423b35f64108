"""`taxiway state recover`: start again from a lost or damaged state database, keeping
every volume's data.

The store refuses to start an app afresh when its database is empty or damaged while
the state folder holds volumes, logs or certificates (`taxiway.state.volume_folders`).
Restoring ``taxiway.db`` from a backup brings everything back; when there is none, this
command moves a damaged file aside (it is kept, renamed), starts an empty store, and
records every volume folder found on disk as an unattached volume with the name, size
and region its label remembers, so the next `up` attaches it to a machine that mounts
that name. Secrets and releases can't be recovered: they lived only in the database.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from taxiway.cli.app_cmd import client_for
from taxiway.errors import TaxiwayError

if TYPE_CHECKING:
    from taxiway.state.store import Store


def state(args: argparse.Namespace) -> int:
    from taxiway.daemon_startup import acquire_lock

    client, app, paths = client_for(args.config)
    if client.alive():
        raise TaxiwayError(
            f"taxiway is running {app}: stop it with `taxiway down` before recovering its state"
        )
    if not paths.state_dir.is_dir():
        print(f"{paths.state_dir} does not exist: nothing to recover")
        return 0
    lock = acquire_lock(paths)  # no `up` may start while the store is replaced
    try:
        _recover(args.config, app, paths.state_dir)
    finally:
        os.close(lock)
    return 0


def _recover(config: str | None, app: str, state_dir: Path) -> None:
    from taxiway.state.store import DB_NAME, DamagedStoreError, Store

    path = state_dir / DB_NAME
    try:
        store = Store.open(state_dir, fresh_ok=True)
        damage = store.damage()
    except DamagedStoreError as exc:
        store, damage = None, str(exc)
    if damage is not None:
        if store is not None:
            store.close()
        aside = _move_aside(path)
        print(f"moved the damaged {path.name} aside to {aside}")
        store = Store.open(state_dir, fresh_ok=True)
    assert store is not None
    with store:
        store.ensure_app(app, str(state_dir.parent / "fly.toml"))
        adopted = _adopt_volume_folders(store, config, app, state_dir)
        from taxiway.volumes.snapshots import adopt_archives

        for snapshot in adopt_archives(store, state_dir, app):
            print(f"adopted snapshot {snapshot.id} of volume {snapshot.volume_id}")
    if not adopted and damage is None:
        print(f"{path} is usable and lists every volume folder: nothing to recover")
        return
    print(
        "`taxiway up` attaches each volume to a machine that mounts its name; secrets and "
        "releases are not recovered (set secrets again with `taxiway secrets set`)"
    )


def _move_aside(path: Path) -> Path:
    """Rename the database (and its -wal/-shm files) out of the way, keeping it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            os.replace(source, aside.with_name(aside.name + suffix))
    return aside


def _adopt_volume_folders(store: Store, config: str | None, app: str, state_dir: Path) -> list[str]:
    """Record each volume folder the store doesn't list as an unattached volume."""
    from taxiway.state.volume_folders import read_label, unlisted_folders

    adopted = []
    for folder in unlisted_folders(state_dir, store.list_volumes(app, include_destroyed=True)):
        label = read_label(folder)
        if label is not None:
            name, size, region = label.name, label.size_gb, label.region
        else:
            name, size, region = _guessed_label(config)
        try:
            volume = store.create_volume(app, name, size, region, folder, volume_id=folder.name)
        except ValueError:
            print(f"{folder} is not named like a volume (vol_…): left as it is")
            continue
        guessed = "" if label is not None else " (no label: name and size from fly.toml)"
        print(
            f"adopted volume {volume.id} ({volume.name}, {volume.size_gb:g}GB) from {folder}, "
            f"unattached{guessed}"
        )
        adopted.append(volume.id)
    return adopted


def _guessed_label(config: str | None) -> tuple[str, float, str]:
    """Name, size and region for a volume folder without a label: the config's mount,
    when it has exactly one volume name; else ``data`` and 1 GB."""
    from taxiway.config.loader import load_config
    from taxiway.plan.machine import DEFAULT_VOLUME_GB, plan_machines
    from taxiway.runtime.environment import region_for

    loaded = load_config(config)
    mounts = {
        (mount.name, mount.size_gb)
        for spec in plan_machines(loaded.config, base_dir=loaded.base_dir).values()
        for mount in spec.mounts
    }
    name, size = next(iter(mounts)) if len(mounts) == 1 else ("data", DEFAULT_VOLUME_GB)
    return name, float(size), region_for(loaded.config.primary_region)

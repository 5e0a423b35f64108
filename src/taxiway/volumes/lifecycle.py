"""Making an empty volume and destroying one: the record and its folder together, so a
refused request leaves no folder without a volume and a destroy leaves no data.
(`taxiway volumes create|destroy` and the Machines API's volume routes share them.)"""

from __future__ import annotations

from pathlib import Path

from taxiway.config.names import volume_name_problem
from taxiway.errors import TaxiwayError
from taxiway.state.records import VolumeRecord, new_volume_id
from taxiway.state.store import Store
from taxiway.state.volume_folders import remove_folder


def check_name(name: str) -> None:
    """The platform's rule for a volume name, as a `TaxiwayError`."""
    problem = volume_name_problem(name)
    if problem is not None:
        raise TaxiwayError(problem)


def create_volume(
    store: Store,
    state_dir: Path,
    app: str,
    name: str,
    *,
    size_gb: float,
    region: str,
    snapshot_retention: int = 5,
    auto_backup_enabled: bool = True,
) -> VolumeRecord:
    """A new, empty, unattached volume with its folder under ``.taxiway/volumes``."""
    check_name(name)
    volume_id = new_volume_id()
    path = state_dir / "volumes" / volume_id
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        return store.create_volume(
            app,
            name,
            size_gb,
            region,
            path,
            snapshot_retention,
            volume_id=volume_id,
            auto_backup_enabled=auto_backup_enabled,
        )
    except BaseException:
        path.rmdir()  # refused (its name, size or retention): no folder without a volume
        raise


def destroy_volume(store: Store, volume: VolumeRecord) -> VolumeRecord:
    """Destroy an unattached volume and delete its data (its snapshots stay, for their
    retention, as the platform keeps a deleted volume's: https://fly.io/docs/volumes/
    volume-manage/#restore-a-deleted-volume)."""
    destroyed = store.destroy_volume(volume.id)
    remove_folder(volume)
    return destroyed

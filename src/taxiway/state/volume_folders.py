"""What a state folder holds beside its database, so a lost database orphans nothing.

The store is the record of an app's volumes, secrets and releases; the data of each
volume is a folder, ``.taxiway/volumes/<id>``, and machine logs are files. When the
database is empty or damaged while such things exist, starting afresh would silently
hide them (a new empty volume attached, the old one unlisted): the store refuses
instead, naming what it found (`earlier_state`), and `taxiway state recover` records
each volume folder again as an unattached volume, with the name, size and region its
label (``<id>.json`` beside the folder, written whenever the store creates or extends
a volume) remembers, so the next `up` attaches it again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import msgspec

from taxiway.state.records import VolumeRecord

VOLUMES_DIR = "volumes"
LOGS_DIR = "logs"
#: Volume snapshots' archives (`taxiway.volumes.snapshots`).
SNAPSHOTS_DIR = "snapshots"


class VolumeLabel(msgspec.Struct, kw_only=True):
    """What the store knew about a volume, kept beside its folder."""

    name: str
    size_gb: float
    region: str
    app: str = ""


def write_label(volume: VolumeRecord) -> None:
    """Remember the volume's name, size and region beside its folder (best effort: the
    store stays the record, this only helps `taxiway state recover`)."""
    label = VolumeLabel(
        name=volume.name, size_gb=volume.size_gb, region=volume.region, app=volume.app
    )
    path = _label_path(Path(volume.path))
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(msgspec.json.encode(label))
        os.replace(temporary, path)


def remove_folder(volume: VolumeRecord) -> None:
    """Delete a destroyed volume's data and its label."""
    shutil.rmtree(volume.path, ignore_errors=True)
    _label_path(Path(volume.path)).unlink(missing_ok=True)


def unlisted_folders(state_dir: Path, listed: Iterable[VolumeRecord]) -> list[Path]:
    """Volume folders on disk the store doesn't list (destroyed ones included)."""
    known = {volume.id for volume in listed}
    return [folder for folder in volume_folders(state_dir) if folder.name not in known]


def read_label(folder: Path) -> VolumeLabel | None:
    try:
        return msgspec.json.decode(_label_path(folder).read_bytes(), type=VolumeLabel)
    except (OSError, msgspec.DecodeError):
        return None


def volume_folders(state_dir: Path) -> list[Path]:
    """Every volume folder on disk, by name."""
    try:
        entries = sorted((state_dir / VOLUMES_DIR).iterdir())
    except OSError:
        return []
    return [entry for entry in entries if entry.is_dir() and entry.name.startswith("vol_")]


def earlier_state(state_dir: Path) -> list[str]:
    """What the folder holds from an earlier state (phrases; empty: nothing). The edge's
    certificates alone don't count: `taxiway certs` makes them before any `up` (to trust
    the CA first), and a state that ran has machine logs anyway."""
    found = []
    folders = volume_folders(state_dir)
    if folders:
        names = ", ".join(folder.name for folder in folders)
        found.append(f"{_count(len(folders), 'volume folder')} ({names})")
    try:
        logs = [p for p in (state_dir / LOGS_DIR).iterdir() if p.name.endswith(".log")]
    except OSError:
        logs = []
    if logs:
        found.append(_count(len(logs), "machine log"))
    snapshots = list((state_dir / SNAPSHOTS_DIR).glob("vol_*/vs_*.tar.gz"))
    if snapshots:
        found.append(_count(len(snapshots), "volume snapshot"))
    return found


def _label_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".json")


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")

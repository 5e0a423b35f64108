"""Which volume a user means: an id, a unique id prefix, or a name only one volume has."""

from __future__ import annotations

from taxiway.errors import TaxiwayError
from taxiway.state.records import VolumeRecord
from taxiway.state.store import Store


def find_volume(store: Store, app: str, ref: str, *, destroyed_ok: bool = False) -> VolumeRecord:
    """The app's volume ``ref`` names. A destroyed volume only by its whole id, and only
    when ``destroyed_ok`` (its snapshots outlive it)."""
    exact = store.get_volume(ref)
    if exact is not None and exact.app == app and (exact.state != "destroyed" or destroyed_ok):
        return exact
    live = store.list_volumes(app)
    by_id = [v for v in live if v.id.startswith(ref)] if ref else []
    if len(by_id) == 1:
        return by_id[0]
    by_name = [v for v in live if v.name == ref]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        raise TaxiwayError(
            f"{len(by_name)} volumes of {app} are called {ref} "
            f"({', '.join(v.id for v in by_name)}); name one by its id"
        )
    if len(by_id) > 1:
        raise TaxiwayError(f"{ref} matches {len(by_id)} volumes of {app}; give more of the id")
    raise TaxiwayError(f"app {app} has no volume {ref}; `taxiway volumes list` shows them")

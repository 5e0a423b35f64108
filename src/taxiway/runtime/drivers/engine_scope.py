"""What the docker driver leaves in the engine for one state folder, found by label and
removed: by `down`, and by the next `up` or `down` after the daemon died.

No asyncio here (`taxiway.runtime.leftovers` runs before `up -d`'s daemon imports it),
and no engine call at all for a state folder that never used one: the driver notes in
the state folder that the engine holds some of its machines (`note_engine`).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from taxiway.image import labels as image_labels
from taxiway.image.engine import client
from taxiway.runtime import netns, outbound

#: The state folder's note that the engine holds some of its containers or its network.
ENGINE_NOTE = "engine.json"


def network_name(scope: str) -> str:
    return f"taxiway-{scope}"


def bridge_name(scope: str) -> str:
    """The host interface of the scope's network: ``twd`` + 6 hex digits of the scope,
    apart from the namespace driver's ``tw…`` names, whose clean-up (which runs at every
    `up` where namespaces can be made) must never take the engine's bridge away."""
    return "twd" + netns.scope_hash(scope)[:6]


def container_name(scope: str, machine_id: str, container: str = "") -> str:
    """Unique on the host: the scope names the state folder, the id the machine; a
    multi-container machine's other containers add their name."""
    name = f"taxiway-{scope}-{machine_id}"
    return f"{name}-{container}" if container else name


def remove_scope(scope: str) -> list[str] | None:
    """Remove every container of ``scope`` (running ones are killed) and its network,
    with the host's rules for it; the machine ids of the containers that still ran, or
    None when the engine can't be asked (nothing was removed). Containers of another
    state folder, or not made by taxiway, are never touched: only the scope's label is."""
    try:
        api = client().api
        found = api.containers(all=True, filters=image_labels.scope_filter(scope))
        networks = api.networks(filters=image_labels.scope_filter(scope))
    except Exception:
        return None
    running = []
    for container in found:
        if container.get("State") == "running":
            running.append(container.get("Labels", {}).get(image_labels.MACHINE, "?"))
        with contextlib.suppress(Exception):
            api.remove_container(container["Id"], force=True)
    for network in networks:
        with contextlib.suppress(Exception):
            api.remove_network(network["Id"])
    if networks:
        outbound.remove(bridge_name(scope))  # host.taxiway.internal's rule
    return running


def note_engine(state_dir: Path) -> None:
    """Say in the state folder that the engine holds some of its machines."""
    note = state_dir / ENGINE_NOTE
    if not note.exists():
        with contextlib.suppress(OSError):
            note.write_text(json.dumps({"docker_host": os.environ.get("DOCKER_HOST", "")}))


def reap_engine(scope: str, state_dir: Path) -> list[str]:
    """What a dead daemon left in the engine (only when its note says it left any)."""
    note = state_dir / ENGINE_NOTE
    if not note.exists():
        return []
    running = remove_scope(scope)
    if running is None:
        return []  # the engine is away: the note stays, for when it answers again
    note.unlink(missing_ok=True)
    return running



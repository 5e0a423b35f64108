"""The labels on everything taxiway makes in a Docker engine: containers, networks, images.

One engine serves every checkout of every app on the host, so each object says which
state folder made it (``taxiway.scope``, the folder's scope string from
`taxiway.runtime.scope.scope_for`, e.g. ``myapp-1a2b3c4d``). Listing, reaping and
pruning filter on that label and never touch another folder's objects or the user's own.
"""

from __future__ import annotations

#: The state folder's scope string: the key every filter uses.
SCOPE = "taxiway.scope"
#: The app's name as fly.toml has it (readable in `docker ps`; scope is what filters).
APP = "taxiway.app"
#: The machine id a container runs.
MACHINE = "taxiway.machine"
#: The process group of that machine.
GROUP = "taxiway.group"
#: The release version a machine runs.
RELEASE = "taxiway.release"
#: On a created-but-never-started container that exists only to copy files out of an
#: image (`taxiway.image.rootfs`); the value is the image id. One left by a crash can go.
COPY_OUT = "taxiway.copy-out"

_KNOWN = {"machine": MACHINE, "group": GROUP, "release": RELEASE, "copy_out": COPY_OUT}


def labels(scope: str, app: str, **extra: object) -> dict[str, str]:
    """The labels for an object of ``scope``: ``machine=``, ``group=``, ``release=``
    become their ``taxiway.*`` keys; any other keyword ``x`` becomes ``taxiway.x``.
    None values are left out; the rest are strings, as the engine stores them."""
    out = {SCOPE: scope, APP: app}
    for key, value in extra.items():
        if value is not None:
            out[_KNOWN.get(key, f"taxiway.{key}")] = str(value)
    return out


def scope_filter(scope: str) -> dict[str, list[str]]:
    """The SDK's ``filters=`` that selects this state folder's objects only."""
    return {"label": [f"{SCOPE}={scope}"]}

"""Releases: what a deploy rolled out, and how it went.

A release is a snapshot of three things (https://fly.io/docs/launch/deploy/): the config as loaded,
the code (on the platform an image; here the app's folder, as it is run from there) and
the secrets. Versions count up per app (1, 2, …) as on the platform; a release is
``running`` while it deploys, then ``complete``, ``failed`` (nothing was left changed,
or ``--no-rollback``) or ``rolled_back`` (taxiway put the previous release back).

Where the digests live: the store's release row holds the config and its digest, and an
``image_ref``. With a driver that runs images (docker) the code is the built image, and
the ref reads ``local:image-<16 hex of the image id>.secrets-<digest>`` (the image is
tagged ``taxiway/<scope>:v<version>``, `taxiway.image.build.tag_release`); with the
host drivers it is the app's folder, ``local:code-<digest>.secrets-<digest>``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec

from taxiway.config.loader import LoadedConfig, check_source
from taxiway.config.source import ConfigSource
from taxiway.deploy.code_digest import code_digest
from taxiway.errors import TaxiwayError
from taxiway.state.records import ReleaseRecord, sha256_hex
from taxiway.state.store import Store

_REF = re.compile(
    r"^local:(?P<kind>code|image)-(?P<code>[0-9a-f]+)\.secrets-(?P<secrets>[0-9a-f]+)$"
)


class Snapshot(msgspec.Struct, frozen=True):
    """What a release is made of."""

    config_json: str
    code_digest: str
    secrets_digest: str
    #: What ``code_digest`` digests: ``code`` (the app's folder) or ``image`` (the built
    #: image's id).
    code_kind: str = "code"

    @property
    def config_digest(self) -> str:
        return sha256_hex(self.config_json)

    @property
    def image_ref(self) -> str:
        return f"local:{self.code_kind}-{self.code_digest}.secrets-{self.secrets_digest}"


def image_code(image_id: str) -> str:
    """A release's code digest for a built image: 16 hex digits of its id."""
    return image_id.removeprefix("sha256:")[:16]


def code_of(release: ReleaseRecord) -> str | None:
    """The code digest a release was made with (None for a ref taxiway didn't write)."""
    m = _REF.match(release.image_ref)
    return m["code"] if m else None


def runs_image(release: ReleaseRecord) -> bool:
    """Whether the release's code is a built image (the docker driver made it)."""
    m = _REF.match(release.image_ref)
    return m is not None and m["kind"] == "image"


def config_json(loaded: LoadedConfig) -> str:
    """The config as the file says it (keys sorted): what a rollback loads again."""
    return msgspec.json.encode(loaded.source.data, order="sorted").decode()


def take_snapshot(
    loaded: LoadedConfig,
    store: Store,
    app: str,
    *,
    code: str | None = None,
    image_id: str | None = None,
) -> Snapshot:
    """The release ``loaded`` makes now; ``code`` is its folder's `code_digest` when the
    caller has it already; ``image_id``: the image built for it (the code is that)."""
    if image_id is not None:
        return Snapshot(
            config_json=config_json(loaded),
            code_digest=image_code(image_id),
            secrets_digest=store.secrets_digest(app)[:16],
            code_kind="image",
        )
    return Snapshot(
        config_json=config_json(loaded),
        code_digest=code or code_digest(loaded.base_dir, config_file=loaded.source.path),
        secrets_digest=store.secrets_digest(app)[:16],
    )


def differences(snapshot: Snapshot, release: ReleaseRecord) -> list[str]:
    """What changed since ``release``: any of "config", "code", "secrets"."""
    changed = []
    if snapshot.config_digest != release.config_digest:
        changed.append("config")
    m = _REF.match(release.image_ref)
    if m is None or m["code"] != snapshot.code_digest or m["kind"] != snapshot.code_kind:
        changed.append("code")
    if m is None or m["secrets"] != snapshot.secrets_digest:
        changed.append("secrets")
    return changed


def new_release(
    store: Store, app: str, snapshot: Snapshot, strategy: str, description: str
) -> ReleaseRecord:
    """The app's next version, ``running``; one left ``running`` by a dead daemon is
    marked ``interrupted`` first (as the platform marks an abandoned deploy)."""
    latest = store.latest_release(app)
    if latest is not None and latest.status == "running":
        store.set_release_status(app, latest.version, "interrupted")
    return store.create_release(
        app,
        config_json=snapshot.config_json,
        strategy=strategy,
        image_ref=snapshot.image_ref,
        description=description,
    )


def release_for_up(
    store: Store,
    app: str,
    loaded: LoadedConfig,
    *,
    code: str | None = None,
    image_id: str | None = None,
) -> ReleaseRecord | None:
    """`taxiway up` starts every machine from the config file: that is a new release when
    there is none yet, the last one did not complete, or config, code or secrets changed.
    ``code``: the folder's `code_digest`, when `up -d` took it while the daemon started;
    ``image_id``: the image built for it (docker driver), which is then the code."""
    snapshot = take_snapshot(loaded, store, app, code=code, image_id=image_id)
    latest = store.latest_release(app)
    if latest is None:
        reason = "first release"
    elif latest.status == "running":  # its daemon died mid-deploy
        reason = f"v{latest.version} was interrupted"
    elif latest.status != "complete":
        reason = f"v{latest.version} is {latest.status}"
    else:
        changed = differences(snapshot, latest)
        if not changed:
            return None
        reason = " and ".join(changed) + " changed"
    return new_release(store, app, snapshot, "immediate", f"taxiway up ({reason})")


def release_for_secrets(
    store: Store, app: str, loaded: LoadedConfig, current: int, changed: list[str]
) -> ReleaseRecord:
    """`secrets set`/`unset` makes a release, as on the platform: the running config and
    code (release ``current``'s, not whatever the folder holds now) with the new secrets.
    Recorded complete: the caller has restarted the machines with them."""
    running = store.get_release(app, current) if current else None
    code = (code_of(running) if running is not None else None) or code_digest(
        loaded.base_dir, config_file=loaded.source.path
    )
    snapshot = Snapshot(
        config_json=config_json(loaded),
        code_digest=code,
        secrets_digest=store.secrets_digest(app)[:16],
        code_kind="image" if running is not None and runs_image(running) else "code",
    )
    release = new_release(store, app, snapshot, "rolling", f"secrets changed: {', '.join(changed)}")
    return store.set_release_status(app, release.version, "complete")


def loaded_from_release(release: ReleaseRecord, path: Path) -> LoadedConfig:
    """A release's config, loaded again as if it were the file at ``path`` (relative paths
    in it, like [[files]] local_path, resolve from the same folder)."""
    try:
        data = json.loads(release.config_json)
    except ValueError:
        raise TaxiwayError(f"release v{release.version} has no readable config") from None
    text = json.dumps(data, indent=2)
    return check_source(ConfigSource(path=path, format="json", text=text, data=data))


def release_json(release: ReleaseRecord, current: int) -> dict[str, object]:
    """A release as `taxiway releases --json` shows it (the config itself left out)."""
    m = _REF.match(release.image_ref)
    return {
        "version": release.version,
        "status": release.status,
        "strategy": release.strategy,
        "created_at": release.created_at,
        "description": release.description,
        "config_digest": release.config_digest[:16],
        "code_digest": m["code"] if m else "",
        "image_id": m["code"] if m and m["kind"] == "image" else None,
        "secrets_digest": m["secrets"] if m else "",
        "current": release.version == current,
        "release_command": (
            {"machine": release.release_command_machine, "exit_code": release.release_command_exit}
            if release.release_command_machine
            else None
        ),
    }

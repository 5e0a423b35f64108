"""The Machines API's volume routes: list, create (empty, from a snapshot, or a fork of
another volume), show, update, extend, destroy, and a volume's snapshots.

Shapes are the platform's OpenAPI document's (superfly/fly-openapi-sdk,
go/api/openapi.yaml: Volume, CreateVolumeRequest, UpdateVolumeRequest,
ExtendVolumeRequest/Response, VolumeSnapshot), plus the fields fly-go's
`volume_types.go` reads (``auto_backup_enabled``, a snapshot's ``retention_days``).
Handlers only translate: the rules live in the store and `taxiway.volumes`.

A volume is a folder here, not a block device: it has no zone, encryption or file
system of its own, and growing it needs no restart.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from taxiway.api.routing import HTTPError, Request, Result, Router
from taxiway.errors import TaxiwayError
from taxiway.runtime.app import AppRuntime
from taxiway.runtime.environment import region_for
from taxiway.state.records import NotFoundError, StateError, VolumeRecord


class CreateVolumeRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a create may say (fly-go's `volume_types.go` fields too); placement and
    encryption fields are accepted and have no meaning on one host. Unknown fields are
    refused, as the other Machines API routes refuse them: a misspelt field silently
    ignored would leave a default in its place."""

    name: str | None = None
    region: str | None = None
    size_gb: int | None = None
    snapshot_retention: int | None = None
    auto_backup_enabled: bool | None = None
    snapshot_id: str | None = None
    source_volume_id: str | None = None
    encrypted: bool | None = None
    fstype: str | None = None
    require_unique_zone: bool | None = None
    unique_zone_app_wide: bool | None = None
    machines_only: bool | None = None
    compute: dict[str, Any] | None = None
    compute_image: str | None = None


class UpdateVolumeRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    snapshot_retention: int | None = None
    auto_backup_enabled: bool | None = None


class ExtendVolumeRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    size_gb: int | None = None


def volume_json(volume: VolumeRecord) -> dict[str, object]:
    """The platform's Volume object. ``size_gb`` is whole GB there; a volume made here
    with a fraction reports the next whole GB. ``attached_machine_id`` is left out
    rather than null when nothing is attached (the document types it as a string)."""
    data: dict[str, object] = {
        "id": volume.id,
        "name": volume.name,
        "state": volume.state,
        "size_gb": math.ceil(volume.size_gb),
        "region": volume.region,
        "zone": "",
        "encrypted": False,
        "created_at": volume.created_at,
        "snapshot_retention": volume.snapshot_retention,
        "auto_backup_enabled": volume.auto_backup_enabled,
        "host_status": "ok",
    }
    if volume.attached_machine_id is not None:
        data["attached_machine_id"] = volume.attached_machine_id
    return data


def add_volume_routes(router: Router, runtime: AppRuntime) -> None:
    """Mount the volume routes for the app ``runtime`` runs on ``router``."""
    base = "/v1/apps/{app}/volumes"

    def app_of(params: dict[str, str]) -> None:
        if params["app"] != runtime.app:
            raise HTTPError(404, f"app {params['app']} not found")

    def volume_of(params: dict[str, str], *, destroyed_ok: bool = False) -> VolumeRecord:
        app_of(params)
        volume = runtime.store.get_volume(params["volume_id"])
        if (
            volume is None
            or volume.app != runtime.app
            or (volume.state == "destroyed" and not destroyed_ok)
        ):
            raise HTTPError(404, f"volume {params['volume_id']} not found")
        return volume

    async def list_volumes(request: Request, params: dict[str, str]) -> Result:
        app_of(params)
        return [volume_json(v) for v in runtime.store.list_volumes(runtime.app)]

    async def create(request: Request, params: dict[str, str]) -> Result:
        app_of(params)
        body = _body(request, CreateVolumeRequest)
        if not body.name:
            raise HTTPError(400, "a volume needs a name")
        region = body.region or region_for(runtime.loaded.config.primary_region)
        retention = 5 if body.snapshot_retention is None else body.snapshot_retention
        backups = body.auto_backup_enabled is not False
        try:
            if body.source_volume_id:
                from taxiway.volumes.lifecycle import check_name
                from taxiway.volumes.running import fork_running

                check_name(body.name)
                source = volume_of({**params, "volume_id": body.source_volume_id})
                volume = await fork_running(
                    runtime,
                    source,
                    name=body.name,
                    region=region,
                    size_gb=body.size_gb,
                    snapshot_retention=body.snapshot_retention,
                    auto_backup_enabled=backups,
                )
            elif body.snapshot_id:
                from taxiway.volumes.lifecycle import check_name
                from taxiway.volumes.snapshots import find_snapshot, restore_volume

                check_name(body.name)
                try:
                    snapshot = find_snapshot(runtime.store, runtime.app, body.snapshot_id)
                except TaxiwayError as exc:
                    raise HTTPError(404, str(exc)) from None
                volume = restore_volume(
                    runtime.store,
                    runtime.state_dir,
                    snapshot,
                    name=body.name,
                    region=region,
                    size_gb=body.size_gb,
                    snapshot_retention=body.snapshot_retention,
                    auto_backup_enabled=backups,
                )
            else:
                from taxiway.volumes.lifecycle import create_volume

                volume = create_volume(
                    runtime.store,
                    runtime.state_dir,
                    runtime.app,
                    body.name,
                    size_gb=1 if body.size_gb is None else body.size_gb,
                    region=region,
                    snapshot_retention=retention,
                    auto_backup_enabled=backups,
                )
        except HTTPError:
            raise
        except TaxiwayError as exc:
            raise HTTPError(400, str(exc)) from None
        return volume_json(volume)

    async def show(request: Request, params: dict[str, str]) -> Result:
        return volume_json(volume_of(params, destroyed_ok=True))

    async def update(request: Request, params: dict[str, str]) -> Result:
        volume = volume_of(params)
        body = _body(request, UpdateVolumeRequest)
        try:
            volume = runtime.store.update_volume(
                volume.id,
                snapshot_retention=body.snapshot_retention,
                auto_backup_enabled=body.auto_backup_enabled,
            )
        except StateError as exc:
            raise HTTPError(400, str(exc)) from None
        return volume_json(volume)

    async def extend(request: Request, params: dict[str, str]) -> Result:
        volume = volume_of(params)
        body = _body(request, ExtendVolumeRequest)
        if body.size_gb is None:
            raise HTTPError(400, "an extend needs size_gb, the volume's new size in GB")
        try:
            volume = runtime.store.extend_volume(volume.id, body.size_gb)
        except StateError as exc:
            raise HTTPError(400, str(exc)) from None
        return {"volume": volume_json(volume), "needs_restart": False}

    async def destroy(request: Request, params: dict[str, str]) -> Result:
        volume = volume_of(params)
        from taxiway.volumes.lifecycle import destroy_volume

        try:
            destroyed = destroy_volume(runtime.store, volume)
        except NotFoundError:
            raise HTTPError(404, f"volume {volume.id} not found") from None
        except StateError as exc:  # attached to a machine
            raise HTTPError(409, str(exc)) from None
        return volume_json(destroyed)

    async def list_snapshots(request: Request, params: dict[str, str]) -> Result:
        volume = volume_of(params, destroyed_ok=True)  # a deleted volume's can be restored
        from taxiway.volumes.snapshots import snapshot_json

        snapshots = runtime.store.list_snapshots(runtime.app, volume.id)
        return [snapshot_json(s) for s in reversed(snapshots)]

    async def create_snapshot(request: Request, params: dict[str, str]) -> Result:
        volume = volume_of(params)
        from taxiway.volumes.running import snapshot_running
        from taxiway.volumes.snapshots import snapshot_json

        try:
            snapshot = await snapshot_running(runtime, volume)
        except StateError as exc:
            raise HTTPError(409, str(exc)) from None
        except TaxiwayError as exc:  # e.g. a full disk: the host's condition
            raise HTTPError(500, str(exc)) from None
        return snapshot_json(snapshot)

    router.add("GET", base, list_volumes)
    router.add("POST", base, create)
    router.add("GET", base + "/{volume_id}", show)
    router.add("POST", base + "/{volume_id}", update)  # the document's method
    router.add("PUT", base + "/{volume_id}", update)  # the volumes-resource page's
    router.add("DELETE", base + "/{volume_id}", destroy)
    router.add("PUT", base + "/{volume_id}/extend", extend)
    router.add("GET", base + "/{volume_id}/snapshots", list_snapshots)
    router.add("POST", base + "/{volume_id}/snapshots", create_snapshot)


def _body(request: Request, shape: type[msgspec.Struct]) -> Any:
    """The request's JSON as ``shape``; malformed JSON or a wrong type is a 400 naming
    the field."""
    if not request.body.strip():
        raise HTTPError(400, "the request needs a JSON object body")
    try:
        return msgspec.json.decode(request.body, type=shape)
    except msgspec.ValidationError as exc:
        raise HTTPError(400, f"the request body is not valid: {exc}") from None
    except msgspec.DecodeError:
        raise HTTPError(400, "the request body is not valid JSON") from None

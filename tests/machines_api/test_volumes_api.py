"""The Machines API's volume routes over a real socket: create, show, list, update,
extend, snapshot, restore from the snapshot, destroy; the platform's shapes (checked
against its OpenAPI document) and its error statuses, never a traceback."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from taxiway.api.http11 import serve_connection
from taxiway.api.routing import Router
from taxiway.config.loader import load_config
from taxiway.machines_api.volumes import add_volume_routes
from taxiway.runtime.app import AppRuntime
from taxiway.runtime.drivers import make_driver
from taxiway.state.store import Store

#: The platform's OpenAPI document (superfly/fly-openapi-sdk, go/api/openapi.yaml), the
#: copy beside this file.
SPECS = [Path(__file__).resolve().parent / "openapi.yaml"]

Call = Callable[..., tuple[int, Any]]


def _request(path: Path, method: str, target: str, body: Any = None) -> tuple[int, Any]:
    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(path))

    conn = UnixConnection("taxiway", timeout=30)
    data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    conn.request(method, target, body=data)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, json.loads(payload) if payload else None


def _serve(tmp_path: Path, scenario: Callable[[Call, AppRuntime], None]) -> None:
    """Run ``scenario`` (blocking HTTP calls) against the routes served on a unix socket."""
    (tmp_path / "fly.toml").write_text('app = "vols"\nprimary_region = "ams"\n')
    loaded = load_config(tmp_path / "fly.toml")
    store = Store.open(tmp_path / ".taxiway")
    store.ensure_app("vols", tmp_path / "fly.toml")
    runtime = AppRuntime(
        loaded,
        app="vols",
        state_dir=tmp_path / ".taxiway",
        store=store,
        driver=make_driver("process"),
    )
    router = Router()
    add_volume_routes(router, runtime)
    path = tmp_path / "api.sock"

    async def main() -> None:
        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await serve_connection(router, reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_unix_server(connection, path=str(path))
        try:
            await asyncio.to_thread(
                scenario, lambda *args, **kw: _request(path, *args, **kw), runtime
            )
        finally:
            server.close()
            await server.wait_closed()

    try:
        asyncio.run(main())
    finally:
        store.close()


def _schema(name: str) -> dict[str, Any]:
    spec = next((path for path in SPECS if path.is_file()), None)
    if spec is None:
        pytest.skip(f"the platform's OpenAPI document is in none of {', '.join(map(str, SPECS))}")
    document = yaml.safe_load(spec.read_text())
    schemas = document["components"]["schemas"]

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(schemas[node["$ref"].rsplit("/", 1)[1]])
            return {k: resolve(v) for k, v in node.items() if k != "example"}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schemas[name])


def _conforms(value: Any, name: str, shapes: list[tuple[Any, str]] | None) -> None:
    """Check ``value`` against the document's ``name`` schema now, or later (``shapes``)."""
    if shapes is not None:
        shapes.append((value, name))
        return
    import jsonschema

    jsonschema.validate(value, _schema(name))


def test_a_volume_round_trip(tmp_path: Path) -> None:
    _round_trip(tmp_path, [])


def test_answers_have_the_platforms_shapes(tmp_path: Path) -> None:
    _schema("Volume")  # skips, saying why, without the document
    _round_trip(tmp_path, None)


def _round_trip(tmp_path: Path, shapes: list[tuple[Any, str]] | None) -> None:
    def scenario(call: Call, runtime: AppRuntime) -> None:
        base = "/v1/apps/vols/volumes"
        status, created = call("POST", base, {"name": "data", "size_gb": 3})
        assert status == 200, created
        _conforms(created, "Volume", shapes)
        assert (created["name"], created["size_gb"], created["region"]) == ("data", 3, "ams")
        assert created["state"] == "created" and created["snapshot_retention"] == 5
        assert created["auto_backup_enabled"] is True
        volume_id = created["id"]
        folder = runtime.state_dir / "volumes" / volume_id
        (folder / "kept.txt").write_text("before the snapshot\n")

        assert call("GET", f"{base}/{volume_id}") == (200, created)
        assert call("GET", base) == (200, [created])

        status, updated = call("POST", f"{base}/{volume_id}", {"snapshot_retention": 10})
        assert status == 200 and updated["snapshot_retention"] == 10
        status, updated = call("PUT", f"{base}/{volume_id}", {"auto_backup_enabled": False})
        assert status == 200 and updated["auto_backup_enabled"] is False

        status, extended = call("PUT", f"{base}/{volume_id}/extend", {"size_gb": 5})
        assert status == 200
        _conforms(extended, "ExtendVolumeResponse", shapes)
        assert extended["volume"]["size_gb"] == 5 and extended["needs_restart"] is False

        status, snapshot = call("POST", f"{base}/{volume_id}/snapshots")
        assert status == 200, snapshot
        _conforms(snapshot, "VolumeSnapshot", shapes)
        assert snapshot["id"].startswith("vs_") and snapshot["status"] == "created"
        assert snapshot["retention_days"] == 10
        status, listed = call("GET", f"{base}/{volume_id}/snapshots")
        assert (status, listed) == (200, [snapshot])
        (folder / "kept.txt").write_text("after the snapshot\n")

        status, restored = call(
            "POST", base, {"name": "copy", "snapshot_id": snapshot["id"], "region": "ams"}
        )
        assert status == 200, restored
        assert restored["size_gb"] == 5 and restored["id"] != volume_id
        copy = runtime.state_dir / "volumes" / restored["id"]
        assert (copy / "kept.txt").read_text() == "before the snapshot\n"

        status, forked = call("POST", base, {"name": "fork", "source_volume_id": volume_id})
        assert status == 200, forked
        assert forked["size_gb"] == 5 and forked["snapshot_retention"] == 10  # the source's
        fork = runtime.state_dir / "volumes" / forked["id"]
        assert (fork / "kept.txt").read_text() == "after the snapshot\n"
        assert call("GET", f"{base}/{volume_id}/snapshots") == (200, [snapshot])  # none kept
        assert len(list((runtime.state_dir / "snapshots" / volume_id).iterdir())) == 1
        small = {"name": "fork", "source_volume_id": volume_id, "size_gb": 1}
        assert call("POST", base, small)[0] == 400

        status, destroyed = call("DELETE", f"{base}/{volume_id}")
        assert status == 200 and destroyed["state"] == "destroyed"
        assert not folder.exists()
        assert call("GET", f"{base}/{volume_id}")[1]["state"] == "destroyed"
        assert call("GET", f"{base}/{volume_id}/snapshots") == (200, [snapshot])
        assert [v["name"] for v in call("GET", base)[1]] == ["copy", "fork"]

    _serve(tmp_path, scenario)


def test_bad_requests_get_the_platforms_statuses(tmp_path: Path) -> None:
    def scenario(call: Call, runtime: AppRuntime) -> None:
        base = "/v1/apps/vols/volumes"
        volumes_dir = runtime.state_dir / "volumes"
        for body, status in [
            (b"{not json", 400),
            (b"", 400),
            ({"size_gb": 1}, 400),  # no name
            ({"name": "data", "size_gb": "big"}, 400),
            ({"name": "data", "size_gb": 1.5}, 400),
            ({"name": "data", "sise_gb": 1}, 400),  # a misspelt field is not ignored
            ([{"name": "data"}], 400),
            ({"name": "data", "size_gb": -1}, 400),
            ({"name": "data", "size_gb": 100_000}, 400),
            ({"name": "Bad Name!", "size_gb": 1}, 400),
            ({"name": "data", "snapshot_retention": 0}, 400),
            ({"name": "data", "snapshot_id": "vs_nothing"}, 404),
            ({"name": "data", "source_volume_id": "vol_0123456789abcdef"}, 404),
        ]:
            answer = call("POST", base, body)
            assert answer[0] == status, (body, answer)
            assert isinstance(answer[1]["error"], str) and "Traceback" not in answer[1]["error"]
        assert call("GET", base) == (200, [])
        assert not volumes_dir.exists() or not any(volumes_dir.iterdir())  # nothing half-made

        assert call("GET", "/v1/apps/other/volumes")[0] == 404
        assert call("GET", f"{base}/vol_0123456789abcdef")[0] == 404
        assert call("PUT", f"{base}/vol_0123456789abcdef/extend", {"size_gb": 2})[0] == 404
        assert call("POST", f"{base}/vol_0123456789abcdef/snapshots")[0] == 404

        volume = call("POST", base, {"name": "data", "size_gb": 2})[1]
        one = f"{base}/{volume['id']}"
        assert call("PUT", one + "/extend", {"size_gb": 1})[0] == 400  # never shrinks
        assert call("PUT", one + "/extend", {})[0] == 400
        assert call("POST", one, {"snapshot_retention": "long"})[0] == 400
        assert call("POST", one, {"snapshot_retention": 61})[0] == 400
        restore = {"name": "small", "size_gb": 1}
        snapshot = call("POST", one + "/snapshots")[1]
        assert call("POST", base, {**restore, "snapshot_id": snapshot["id"]})[0] == 400

        machine = _attach(runtime, volume["id"])
        status, refused = call("DELETE", one)
        assert status == 409 and machine in refused["error"]
        assert (volumes_dir / volume["id"]).is_dir()

    _serve(tmp_path, scenario)


def _attach(runtime: AppRuntime, volume_id: str) -> str:
    """Attach the volume to a (recorded, not running) machine."""
    from taxiway.state.records import MachineRecord

    machine = MachineRecord(
        id="0123456789abcd",
        app="vols",
        group="app",
        state="stopped",
        region="ams",
        instance_id="01HZZZZZZZZZZZZZZZZZZZZZZZ",
        private_ip="fdaa::2",
    )
    runtime.store.add_machine(machine)
    runtime.store.attach_volume(volume_id, machine.id)
    return machine.id

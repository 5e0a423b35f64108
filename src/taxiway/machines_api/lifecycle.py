"""Machines made, updated and destroyed through the Machines API.

Routes (shapes from the platform's OpenAPI document, superfly/fly-openapi-sdk,
go/api/openapi.yaml: CreateMachineRequest, UpdateMachineRequest, Machine):

- ``POST /v1/apps/{app}/machines``: create (and start, unless ``skip_launch``);
- ``POST /v1/apps/{app}/machines/{id}``: update in place (a new ``instance_id``);
- ``DELETE /v1/apps/{app}/machines/{id}``: destroy (``?force=true`` or ``?kill=true``
  for one that runs, as fly-go's ``flaps.Destroy`` sends ``kill``).

A request is checked whole before anything is made (`machine_config.parse_request`), and
the image is found before the machine is recorded, so a refused request leaves nothing.
A machine whose launch fails after it was made stays, in state ``failed`` with a
``launch_failed`` event, as a platform machine would: the caller sees why and destroys it.

Choices where the platform's behaviour can't be copied as is:

- "Unmanaged" machines (`AppRuntime.unmanaged`): made here without
  ``metadata.fly_process_group`` naming a group of fly.toml. Deploys don't update or
  destroy them, `scale` doesn't count them, `status` shows their metadata group (or
  nothing). They are kept in the store with their API config; a restarted daemon takes
  them back, and starts again those that ran when it stopped (or died), while one that
  had exited (a finished job) stays stopped.
- A machine made here WITH a fly.toml group in its metadata joins that group, as a
  ``fly machine clone`` does on the platform: the group's count grows by one (so `scale`
  and the next `up` keep it), and the next deploy replaces its config with the group's.
- ``config.image`` naming the app's own image (its FLY_IMAGE_REF) runs on the app's
  driver (with the process driver: in the app's folder); any other image runs in a
  container of the local Docker engine, which must have it or be able to pull it.
- ``auto_destroy`` destroys the machine when its main process exits and its restart
  policy doesn't start it again (not after a stop asked through the API).
- The edge routes nothing to a machine made here unless it joins a group and has
  services; services of unmanaged machines are kept in their config, not served.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from typing import TYPE_CHECKING, Any, Protocol

from taxiway.api.routing import HTTPError, Request, Router
from taxiway.machines_api.machine_config import (
    ConfigError,
    MachineRequest,
    group_of,
    parse_request,
    resolve,
    stored_config,
)
from taxiway.runtime.lifecycle import RUNNING, State

if TYPE_CHECKING:
    from taxiway.plan.machine import MachineSpec
    from taxiway.runtime.app import AppRuntime
    from taxiway.runtime.drivers.base import Driver
    from taxiway.runtime.machine import SupervisedMachine

#: States a destroy without ``force``/``kill`` refuses: the platform destroys a machine
#: that is stopped, suspended, created or failed, and answers 412 for one that runs.
_REFUSED_UNFORCED = frozenset(
    {State.STARTING, State.STARTED, State.STOPPING, State.SUSPENDING, State.REPLACING}
)

#: The header that carries a lease's nonce (fly-go's ``flaps.NonceHeader``).
NONCE_HEADER = "fly-machine-lease-nonce"


class LeaseAdapter(Protocol):
    """What this module needs of the leases (`taxiway.machines_api.leases` at the merge)."""

    def acquire(self, machine_id: str, ttl: int, description: str) -> dict[str, Any]:
        """A new lease on the machine: the lease's data (``nonce``, ``expires_at``, ...)."""
        ...

    def check(self, machine_id: str, nonce: str | None) -> None:
        """Raise HTTPError(409) when someone else holds the machine's lease."""
        ...


class LocalLeases:
    """MERGE: stands in for `taxiway.machines_api.leases` until the two are merged: it
    hands out leases and enforces them, with nothing else (no refresh, no release)."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, float]] = {}

    def acquire(self, machine_id: str, ttl: int, description: str) -> dict[str, Any]:
        nonce = secrets.token_hex(16)
        expires = time.time() + ttl
        self._held[machine_id] = (nonce, expires)
        return {"nonce": nonce, "expires_at": int(expires), "owner": "", "description": description}

    def check(self, machine_id: str, nonce: str | None) -> None:
        held = self._held.get(machine_id)
        if held is None or held[1] < time.time() or held[0] == nonce:
            return
        raise HTTPError(409, f"machine {machine_id} is leased by someone else; give its nonce")


def add_lifecycle_routes(
    router: Router, runtime: AppRuntime, *, leases: LeaseAdapter | None = None
) -> None:
    """Mount create, update and destroy on ``router`` for ``runtime``'s app."""
    routes = _Lifecycle(runtime, leases if leases is not None else LocalLeases())
    router.add("POST", "/v1/apps/{app}/machines", routes.create)
    router.add("POST", "/v1/apps/{app}/machines/{id}", routes.update)
    router.add("DELETE", "/v1/apps/{app}/machines/{id}", routes.destroy)


class _Lifecycle:
    def __init__(self, runtime: AppRuntime, leases: LeaseAdapter) -> None:
        self.runtime = runtime
        self.leases = leases

    # -- routes ---------------------------------------------------------------------------

    async def create(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        runtime = self.runtime
        self._app(params)
        checked = _checked(request, update=False)
        name = checked.name or ""
        if name and any(_name(runtime, m) == name for m in runtime.machines.values()):
            raise HTTPError(409, f"app {runtime.app} already has a machine named {name}")
        config = stored_config(checked.config)
        spec, driver, image_ref = await _resolved(runtime, config)
        api = {"config": config, "skip_service_registration": checked.skip_service_registration}
        machine = await runtime.create_api_machine(
            spec,
            api=api,
            driver=driver,
            image_ref=image_ref,
            name=name or _made_up_name(group_of(config)),
            start=False,
        )
        nonce = None
        if checked.lease_ttl:
            nonce = self.leases.acquire(machine.id, checked.lease_ttl, "")["nonce"]
        if not checked.skip_launch:
            await machine.start()
        return machine_json(runtime, machine, nonce=nonce)

    async def update(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        runtime = self.runtime
        machine = self._machine(params)
        self.leases.check(machine.id, _nonce(request))
        checked = _checked(request, update=True)
        if checked.current_version and checked.current_version != machine.info.version:
            raise HTTPError(
                412,
                f"machine {machine.id} is at version {machine.info.version}, not "
                f"{checked.current_version} (current_version): read it again and retry",
            )
        config = stored_config(checked.config)
        spec, driver, image_ref = await _resolved(runtime, config)
        api = {"config": config, "skip_service_registration": checked.skip_service_registration}
        await runtime.update_api_machine(
            machine,
            spec,
            api=api,
            driver=driver,
            image_ref=image_ref,
            start=False if checked.skip_launch else None,
        )
        if checked.name:
            runtime.store.update_machine(machine.id, name=checked.name)
        return machine_json(runtime, machine)

    async def destroy(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        runtime = self.runtime
        machine = self._machine(params)
        self.leases.check(machine.id, _nonce(request))
        force = any(request.query.get(k, "").lower() in ("true", "1") for k in ("force", "kill"))
        if machine.state in _REFUSED_UNFORCED and not force:
            raise HTTPError(
                412,
                f"machine {machine.id} is {machine.state.value}: stop it first, or destroy it "
                "with ?force=true",
            )
        if force and machine.state in RUNNING:
            await machine.stop(sig=signal.SIGKILL, timeout_s=0.0)
        await runtime.destroy(machine)
        runtime.recount(machine.info.group)
        return {"ok": True}

    # -- lookups --------------------------------------------------------------------------

    def _app(self, params: dict[str, str]) -> None:
        if params["app"] != self.runtime.app:
            raise HTTPError(
                404, f"there is no app {params['app']} (this daemon runs {self.runtime.app})"
            )

    def _machine(self, params: dict[str, str]) -> SupervisedMachine:
        self._app(params)
        machine = self.runtime.machines.get(params["id"])
        if machine is None:
            raise HTTPError(404, f"app {self.runtime.app} has no machine {params['id']}")
        return machine


def _checked(request: Request, *, update: bool) -> MachineRequest:
    try:
        return parse_request(request.json(), update=update)
    except ConfigError as exc:
        raise HTTPError(exc.status, str(exc)) from None


async def _resolved(runtime: AppRuntime, config: dict[str, Any]) -> tuple[MachineSpec, Driver, str]:
    """`resolve` in a thread: finding (or pulling) an image asks the engine."""
    try:
        return await asyncio.to_thread(resolve, runtime, config)
    except ConfigError as exc:
        raise HTTPError(exc.status, str(exc)) from None


def _nonce(request: Request) -> str | None:
    """The lease nonce the request carries (headers: once the server passes them on)."""
    headers = getattr(request, "headers", None) or {}
    for key, value in dict(headers).items():
        if key.lower() == NONCE_HEADER:
            return value
    return None


def _made_up_name(group: str) -> str:
    """A name for a machine the request named none (the platform makes one up too)."""
    return f"{group or 'machine'}-{secrets.token_hex(3)}"


def _name(runtime: AppRuntime, machine: SupervisedMachine) -> str:
    record = runtime.store.get_machine(machine.id)
    return record.name if record is not None else ""


# -- MERGE: the Machine object, until `taxiway.machines_api.shapes` has it --------------------


def machine_json(
    runtime: AppRuntime, machine: SupervisedMachine, *, nonce: str | None = None
) -> dict[str, Any]:
    """MERGE: a minimal Machine object (the platform's OpenAPI document's ``Machine``);
    `taxiway.machines_api.shapes` replaces it at the merge."""
    record = runtime.store.get_machine(machine.id)
    api = runtime.api_machines.get(machine.id)
    config = api["config"] if api is not None else {"image": machine.spec.runs.image or ""}
    out: dict[str, Any] = {
        "id": machine.id,
        "name": record.name if record is not None else "",
        "state": machine.state.value,
        "region": machine.info.region,
        "instance_id": machine.info.version,
        "private_ip": machine.info.private_ip,
        "config": config,
        "image_ref": _image_ref(str(config.get("image", ""))),
        "created_at": record.created_at if record is not None else "",
        "updated_at": record.updated_at if record is not None else "",
        "events": machine_events(runtime, machine.id),
        "checks": [],
        "host_status": "ok",
    }
    if nonce is not None:
        out["nonce"] = nonce
    return out


def _image_ref(image: str) -> dict[str, Any]:
    """``registry.fly.io/app:tag`` as the Machine object's ``image_ref`` parts."""
    name, tag = image, "latest"
    if ":" in image.rpartition("/")[2]:
        name, _, tag = image.rpartition(":")
    registry, repository = "", name
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    return {"registry": registry, "repository": repository, "tag": tag, "digest": "", "labels": {}}


#: Store event types → the platform's event types.
_EVENT_TYPES = {
    "create": "launch",
    "start": "start",
    "started": "start",
    "exit": "exit",
    "stop": "stop",
    "update": "update",
    "destroy": "destroy",
    "launch_failed": "launch",
}


def machine_events(runtime: AppRuntime, machine_id: str) -> list[dict[str, Any]]:
    """MERGE: the machine's events, newest first, with an ``exit`` event's exit code in
    ``request.exit_event`` as the platform gives it."""
    out = []
    for event in runtime.store.events(runtime.app, machine_id=machine_id, limit=50):
        kind = _EVENT_TYPES.get(event.type)
        if kind is None:
            continue
        request: dict[str, Any] = {}
        if kind == "exit":
            code = event.data.get("exit_code")
            request["exit_event"] = {
                "exit_code": code,
                "guest_exit_code": code,
                "oom_killed": bool(event.data.get("oom_killed")),
                "requested_stop": False,
                "restarting": False,
            }
        out.append(
            {
                "id": str(event.id),
                "type": kind,
                "status": event.status,
                "source": "flyd" if kind in ("exit", "start") else "user",
                "timestamp": _millis(event.created_at),
                "request": request,
            }
        )
    return out


def _millis(stamp: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)

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
from typing import TYPE_CHECKING, Any

from taxiway.api.routing import HTTPError, Request, Router
from taxiway.machines_api.leases import LEASES, require_lease
from taxiway.machines_api.lookup import check_app, live_machine
from taxiway.machines_api.machine_config import (
    ConfigError,
    MachineRequest,
    group_of,
    parse_request,
    resolve,
    stored_config,
)
from taxiway.machines_api.shapes import machine_object
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

def add_lifecycle_routes(router: Router, runtime: AppRuntime) -> None:
    """Mount create, update and destroy on ``router`` for ``runtime``'s app."""
    routes = _Lifecycle(runtime)
    router.add("POST", "/v1/apps/{app}/machines", routes.create)
    router.add("POST", "/v1/apps/{app}/machines/{id}", routes.update)
    router.add("DELETE", "/v1/apps/{app}/machines/{id}", routes.destroy)


class _Lifecycle:
    def __init__(self, runtime: AppRuntime) -> None:
        self.runtime = runtime

    # -- routes ---------------------------------------------------------------------------

    async def create(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        runtime = self.runtime
        check_app(runtime, params["app"])
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
            lease, _ = LEASES.acquire(
                machine.id, ttl_s=checked.lease_ttl, description="", version=machine.info.version
            )
            nonce = lease.nonce
        if not checked.skip_launch:
            await machine.start()
        return machine_object(machine, runtime, nonce=nonce)

    async def update(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        runtime = self.runtime
        machine = live_machine(runtime, params["app"], params["id"])
        require_lease(machine.id, request)
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
        return machine_object(machine, runtime)

    async def destroy(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        runtime = self.runtime
        machine = live_machine(runtime, params["app"], params["id"])
        require_lease(machine.id, request)
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
        LEASES.forget(machine.id)
        runtime.recount(machine.info.group)
        return {"ok": True}


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


def _made_up_name(group: str) -> str:
    """A name for a machine the request named none (the platform makes one up too)."""
    return f"{group or 'machine'}-{secrets.token_hex(3)}"


def _name(runtime: AppRuntime, machine: SupervisedMachine) -> str:
    record = runtime.store.get_machine(machine.id)
    return record.name if record is not None else ""

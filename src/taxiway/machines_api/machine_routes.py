"""``/v1/apps/{app}/machines…``: reading machines and acting on them, the platform's way.

Every route turns a request into `AppRuntime`/`SupervisedMachine` calls and their
results into the platform's shapes (`taxiway.machines_api.shapes`). Changes to a
leased machine need the lease's nonce (`taxiway.machines_api.leases`). Creating,
updating and destroying machines live in `taxiway.machines_api.lifecycle`.
"""

from __future__ import annotations

import asyncio
import shlex
import signal as signals
from typing import Any

from taxiway.api.routing import Answer, HTTPError, Request, Result
from taxiway.machines_api.bodies import (
    INTEGER,
    OBJECT,
    STRING,
    STRING_LIST,
    bad_request,
    duration_s,
    json_body,
    query_bool,
    query_int,
    signal_from,
)
from taxiway.machines_api.changes import MachineChanges
from taxiway.machines_api.leases import DEFAULT_TTL_S, LEASES, NONCE_HEADER, Leases
from taxiway.machines_api.lookup import check_app, live_machine
from taxiway.machines_api.shapes import (
    events_of,
    machine_config,
    machine_object,
    record_object,
)
from taxiway.runtime.app import AppRuntime
from taxiway.runtime.lifecycle import State
from taxiway.runtime.machine import SupervisedMachine

#: The states `wait` can wait for (the platform's, suspended included).
WAIT_STATES = ("started", "stopped", "suspended", "destroyed")
#: The platform caps a wait at 60 s; a client waits longer by asking again.
MAX_WAIT_S = 60
#: Metadata the platform sets that a machine can't change here: its group is what the
#: machine runs, and the platform version is taxiway's.
FIXED_METADATA = ("fly_process_group", "fly_platform_version")
#: The longest an exec may run.
MAX_EXEC_S = 300


class MachineRoutes:
    def __init__(
        self, runtime: AppRuntime, changes: MachineChanges, leases: Leases = LEASES
    ) -> None:
        self.runtime = runtime
        self.changes = changes
        self.leases = leases

    def _machine(self, params: dict[str, str]) -> SupervisedMachine:
        return live_machine(self.runtime, params["app"], params["id"])

    def _changing(self, request: Request, params: dict[str, str]) -> SupervisedMachine:
        machine = self._machine(params)
        self.leases.require(machine.id, request)
        return machine

    # -- reading ---------------------------------------------------------------------------

    async def list(self, request: Request, params: dict[str, str]) -> Result:
        """Query: ``include_deleted``, ``region``, ``metadata.<key>=<value>``."""
        runtime = self.runtime
        check_app(runtime, params["app"])
        region = request.query.get("region") or None
        wanted = {
            key.removeprefix("metadata."): value
            for key, value in request.query.items()
            if key.startswith("metadata.")
        }
        shown = []
        include_deleted = query_bool(request, "include_deleted")
        for record in runtime.store.list_machines(runtime.app, include_destroyed=include_deleted):
            if region is not None and record.region != region:
                continue
            if any(record.metadata.get(k) != v for k, v in wanted.items()):
                continue
            machine = runtime.machines.get(record.id)
            if machine is not None and record.state != "destroyed":
                shown.append(machine_object(machine, runtime))
            elif include_deleted or record.state == "destroyed":
                shown.append(record_object(record, runtime))
        return shown

    async def show(self, request: Request, params: dict[str, str]) -> Result:
        runtime = self.runtime
        check_app(runtime, params["app"])
        machine = runtime.machines.get(params["id"])
        if machine is not None:
            return machine_object(machine, runtime)
        record = runtime.store.get_machine(params["id"])
        if record is not None and record.app == runtime.app:
            return record_object(record, runtime)
        raise HTTPError(404, f"app {runtime.app} has no machine {params['id']}")

    async def events(self, request: Request, params: dict[str, str]) -> Result:
        check_app(self.runtime, params["app"])
        record = self.runtime.store.get_machine(params["id"])
        if record is None or record.app != self.runtime.app:
            raise HTTPError(404, f"app {self.runtime.app} has no machine {params['id']}")
        return events_of(self.runtime, record.id)

    async def versions(self, request: Request, params: dict[str, str]) -> Result:
        """The machine's versions: taxiway keeps only the current one's config."""
        machine = self._machine(params)
        record = self.runtime.store.get_machine(machine.id)
        config = machine_config(machine.spec, record.metadata if record else None)
        return [{"version": machine.info.version, "user_config": config}]

    async def ps(self, request: Request, params: dict[str, str]) -> Result:
        """Query: ``sort_by`` (pid, cpu, rss, rtime, stime, command), ``order`` (asc|desc)."""
        from taxiway.machines_api.processes import machine_processes

        machine = self._machine(params)
        info = machine.info
        return await asyncio.to_thread(
            machine_processes,
            info.pid if machine.state in (State.STARTED, State.SUSPENDED) else None,
            info.pgid,
            sort_by=request.query.get("sort_by", ""),
            order=request.query.get("order", ""),
        )

    async def wait(self, request: Request, params: dict[str, str]) -> Result:
        """200 ``{"ok": true}`` once the machine is in ``state`` (default started), 408
        after ``timeout`` seconds (default and most 60), 400 for a state it can't wait
        for. ``instance_id``: the version to wait for; a machine that moved on to a newer
        version counts as stopped (and destroyed) for the old one."""
        runtime = self.runtime
        check_app(runtime, params["app"])
        target = request.query.get("state") or "started"
        if target not in WAIT_STATES:
            raise bad_request(f"a wait is for one of {', '.join(WAIT_STATES)}, not {target!r}")
        timeout_s = min(query_int(request, "timeout", MAX_WAIT_S), MAX_WAIT_S)
        instance_id = request.query.get("instance_id") or None
        machine_id = params["id"]
        if machine_id not in runtime.machines:
            record = runtime.store.get_machine(machine_id)
            if record is None or record.app != runtime.app:
                raise HTTPError(404, f"app {runtime.app} has no machine {machine_id}")
            if target == "destroyed" and record.state == "destroyed":
                return {"ok": True}
            raise HTTPError(404, f"machine {machine_id} was destroyed")

        def reached() -> bool:
            machine = runtime.machines.get(machine_id)
            if machine is None or machine.state is State.DESTROYED:
                return target in ("destroyed", "stopped") if instance_id else target == "destroyed"
            if instance_id is not None and machine.info.version != instance_id:
                return target in ("stopped", "destroyed")
            return machine.state.value == target

        if await self.changes.until(reached, timeout_s):
            return {"ok": True}
        machine = runtime.machines.get(machine_id)
        now = machine.state.value if machine is not None else "destroyed"
        raise HTTPError(
            408, f"machine {machine_id} did not become {target} within {timeout_s}s; it is {now}"
        )

    # -- actions ---------------------------------------------------------------------------

    async def start(self, request: Request, params: dict[str, str]) -> Result:
        machine = self._changing(request, params)
        previous = machine.state.value
        await machine.start()
        return {"previous_state": previous, "migrated": False, "new_host": ""}

    async def stop(self, request: Request, params: dict[str, str]) -> Result:
        """Body (optional): ``signal`` (default the machine's kill_signal) and ``timeout``
        (seconds or a duration; default its kill_timeout) before SIGKILL."""
        body = json_body(
            request,
            {"id": STRING, "signal": STRING, "timeout": _DURATION, "filters": OBJECT},
            what="a stop",
            optional=True,
        )
        sig = signal_from(body["signal"]) if body.get("signal") else None
        # fly-go sends "timeout": "0s" on every stop it isn't given one for: 0 is the default
        timeout_s = duration_s(body["timeout"], "timeout") if "timeout" in body else None
        machine = self._changing(request, params)
        if body.get("id") and body["id"] != machine.id:
            raise bad_request(f"the stop's body names machine {body['id']}, not {machine.id}")
        await machine.stop(sig=sig, timeout_s=timeout_s or None)
        return {"ok": True}

    async def restart(self, request: Request, params: dict[str, str]) -> Result:
        """Query: ``signal``, ``timeout`` (as for stop), ``force_stop`` (SIGKILL at once)."""
        sig = signal_from(request.query["signal"]) if request.query.get("signal") else None
        timeout_s = None
        if request.query.get("timeout"):
            timeout_s = duration_s(request.query["timeout"], "timeout")
        timeout_s = timeout_s or None  # fly-go's zero duration: the machine's kill_timeout
        if query_bool(request, "force_stop"):
            sig, timeout_s = int(signals.SIGKILL), 0.0
        machine = self._changing(request, params)
        if machine.state in (State.STARTED, State.SUSPENDED):
            await machine.stop(sig=sig, timeout_s=timeout_s)
        await machine.start()
        return {"ok": True}

    async def suspend(self, request: Request, params: dict[str, str]) -> Result:
        machine = self._changing(request, params)
        await machine.suspend()
        return {"ok": True}

    async def signal(self, request: Request, params: dict[str, str]) -> Result:
        """Body: ``signal``, a name (``SIGUSR1``) or a number (``9`` kills)."""
        body = json_body(request, {"signal": _SIGNAL}, what="a signal")
        if "signal" not in body:
            raise bad_request('a signal needs {"signal": "SIGTERM"} (a name or a number)')
        sig = signal_from(body["signal"])
        machine = self._changing(request, params)
        process = machine.process
        if process is None or machine.state not in (State.STARTED, State.SUSPENDED):
            raise HTTPError(
                409,
                f"machine {machine.id} is {machine.state.value}; only a started one takes signals",
            )
        machine.log.system(f"signal {signals.Signals(sig).name} (Machines API)")
        process.send_signal(sig)
        return {"ok": True}

    async def cordon(self, request: Request, params: dict[str, str]) -> Result:
        self._changing(request, params).set_cordoned(True)
        return {"ok": True}

    async def uncordon(self, request: Request, params: dict[str, str]) -> Result:
        self._changing(request, params).set_cordoned(False)
        return {"ok": True}

    async def exec(self, request: Request, params: dict[str, str]) -> Result:
        """Body: ``command`` (a list) or ``cmd`` (one string, split as a shell would),
        ``timeout`` seconds; answers ``{exit_code, stdout, stderr}``. ``container`` (fly-go
        sends it) is accepted: the command runs where the driver's exec runs it."""
        body = json_body(
            request,
            {
                "cmd": STRING,
                "command": STRING_LIST,
                "timeout": INTEGER,
                "stdin": STRING,
                "container": STRING,
            },
            what="an exec",
        )
        if body.get("stdin"):
            raise bad_request(
                "exec can't send stdin to the command yet; pass the input as an argument"
            )
        argv: list[str] = list(body.get("command") or [])
        if not argv and body.get("cmd"):
            try:
                argv = shlex.split(body["cmd"])
            except ValueError as exc:
                raise bad_request(f"cmd can't be split into arguments: {exc}") from None
        if not argv:
            raise bad_request('an exec needs "command": ["program", "arg", …] (or "cmd")')
        timeout_s = body.get("timeout") or 60
        if not 0 < timeout_s <= MAX_EXEC_S:
            raise bad_request(f"an exec's timeout is 1 to {MAX_EXEC_S} seconds, not {timeout_s}")
        machine = self._machine(params)
        return await self.runtime.exec(machine, argv, timeout_s=float(timeout_s))

    # -- leases ----------------------------------------------------------------------------

    async def lease_create(self, request: Request, params: dict[str, str]) -> Result:
        """Body: ``ttl`` seconds (default 30), ``description``. With the current lease's
        nonce in ``fly-machine-lease-nonce`` it refreshes that lease (200); a new lease
        is 201; someone else's lease: 409."""
        body = json_body(
            request, {"ttl": INTEGER, "description": STRING}, what="a lease", optional=True
        )
        ttl_s = body.get("ttl", DEFAULT_TTL_S)
        if ttl_s <= 0:
            raise bad_request(f"a lease's ttl is a number of seconds above 0, not {ttl_s}")
        machine = self._machine(params)
        lease, new = self.leases.acquire(
            machine.id,
            ttl_s=ttl_s,
            description=body.get("description", ""),
            version=machine.info.version,
            nonce=request.headers.get(NONCE_HEADER),
        )
        return Answer(201 if new else 200, lease.json())

    async def lease_show(self, request: Request, params: dict[str, str]) -> Result:
        machine = self._machine(params)
        lease = self.leases.current(machine.id)
        if lease is None:
            raise HTTPError(404, f"machine {machine.id} has no lease")
        shown = lease.json()
        shown["data"].pop("nonce")  # only its holder knows it
        return shown

    async def lease_release(self, request: Request, params: dict[str, str]) -> Result:
        machine = self._machine(params)
        self.leases.release(machine.id, request.headers.get(NONCE_HEADER))
        return {"ok": True}

    # -- metadata --------------------------------------------------------------------------

    async def metadata(self, request: Request, params: dict[str, str]) -> Result:
        machine = self._machine(params)
        return dict(self._metadata(machine))

    async def metadata_set(self, request: Request, params: dict[str, str]) -> Result:
        """Body: ``{"value": "…"}``; answers 204."""
        body = json_body(request, {"value": STRING}, what="a metadata value")
        if "value" not in body:
            raise bad_request('a metadata value needs {"value": "…"}')
        machine = self._changing(request, params)
        key = _metadata_key(params["key"])
        metadata = self._metadata(machine)
        self.runtime.store.update_machine(machine.id, metadata={**metadata, key: body["value"]})
        return Answer(204)

    async def metadata_delete(self, request: Request, params: dict[str, str]) -> Result:
        machine = self._changing(request, params)
        key = _metadata_key(params["key"])
        metadata = dict(self._metadata(machine))
        if metadata.pop(key, None) is not None:
            self.runtime.store.update_machine(machine.id, metadata=metadata)
        return Answer(204)

    def _metadata(self, machine: SupervisedMachine) -> dict[str, str]:
        record = self.runtime.store.get_machine(machine.id)
        return dict(record.metadata) if record is not None else {}


def _metadata_key(key: str) -> str:
    if key in FIXED_METADATA:
        raise bad_request(f"metadata {key} is set by taxiway when the machine is created")
    return key


def _is_duration(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


_DURATION = ("seconds or a duration string", _is_duration)
_SIGNAL = ("a signal name or number", _is_duration)

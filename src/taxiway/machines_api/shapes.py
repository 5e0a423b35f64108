"""taxiway's machines in the Machines API's shapes: the Machine object, its config, its
events, the App object.

Field names and nesting follow the platform's OpenAPI document (superfly/fly-openapi-sdk,
go/api/openapi.yaml): ``Machine``, ``api.MachineConfig``, ``MachineEvent``, ``App``.
Where the document is vaguer than the platform (an event's ``request``, an exit's
``exit_event``), the shapes follow what fly-go's `machine_types.go` decodes, so a client
built on fly-go reads them as it reads the platform's.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

from taxiway.plan.machine import Check, MachineSpec, ServiceSpec

if TYPE_CHECKING:
    from taxiway.runtime.app import AppRuntime
    from taxiway.runtime.machine import SupervisedMachine
    from taxiway.state.records import EventRecord, MachineRecord

#: The organization every local app belongs to (the platform's ``personal`` org slug).
ORG = {"name": "personal", "slug": "personal"}
#: How many of its newest events a Machine object carries (the events route has them all).
MACHINE_EVENTS = 10


def app_object(runtime: AppRuntime) -> dict[str, Any]:
    """The ``App`` object of the daemon's app."""
    return {"id": runtime.app, "name": runtime.app, "status": "deployed", "organization": ORG}


def machine_object(
    machine: SupervisedMachine, runtime: AppRuntime, *, nonce: str | None = None
) -> dict[str, Any]:
    """A live machine as the platform's ``Machine`` object. ``nonce``: only the create
    that took a lease with it (``lease_ttl``) shows one, as on the platform: anyone else
    reading the machine must not learn the lease's nonce."""
    info = machine.info
    record = runtime.store.get_machine(machine.id)
    metadata = record.metadata if record else None
    made = runtime.api_machines.get(machine.id)  # what the API was asked for, as it was
    config = dict(made["config"]) if made else machine_config(machine.spec, metadata)
    if made and metadata is not None:
        config["metadata"] = {**config.get("metadata", {}), **metadata}
    if not made:  # the image a platform machine would name: what FLY_IMAGE_REF says
        config["image"] = runtime.image_ref_of(info)
    shown: dict[str, Any] = {
        "id": machine.id,
        "name": machine_name(record, machine.id),
        "state": info.state.value,
        "region": info.region,
        "instance_id": info.version,
        "private_ip": info.private_ip,
        "config": config,
        "image_ref": image_ref(config.get("image")),
        "created_at": record.created_at if record else "",
        "updated_at": record.updated_at if record else "",
        "events": events_of(runtime, machine.id, MACHINE_EVENTS),
        "checks": checks_of(machine),
        "host_status": "ok",
    }
    if machine.cordoned:
        shown["cordoned"] = True
    if nonce is not None:
        shown["nonce"] = nonce
    return shown


def record_object(record: MachineRecord, runtime: AppRuntime) -> dict[str, Any]:
    """A machine the daemon no longer supervises (destroyed) from its stored record:
    ``GET …?include_deleted=true`` lists these."""
    spec = runtime.specs.get(record.group)
    return {
        "id": record.id,
        "name": machine_name(record, record.id),
        "state": record.state,
        "region": record.region,
        "instance_id": record.instance_id,
        "private_ip": record.private_ip,
        "config": machine_config(spec, record.metadata) if spec else {"metadata": record.metadata},
        "image_ref": image_ref(spec.runs.image if spec else None),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "events": events_of(runtime, record.id, MACHINE_EVENTS),
        "checks": [],
        "host_status": "ok",
    }


def machine_name(record: MachineRecord | None, machine_id: str) -> str:
    """The machine's name: the one it was created with, when its record keeps one, else
    its id (taxiway's fly.toml machines have no separate name)."""
    name = getattr(record, "name", None)
    return name if isinstance(name, str) and name else machine_id


def image_ref(image: str | None) -> dict[str, Any]:
    """``registry/repository:tag@digest`` taken apart as the ``ImageRef`` object; the
    process driver runs no image: all empty then."""
    ref: dict[str, Any] = {"registry": "", "repository": "", "tag": "", "digest": "", "labels": {}}
    if not image:
        return ref
    rest, _, digest = image.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, ref["tag"] = rest[:colon], rest[colon + 1 :]
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        ref["registry"], rest = first, remainder
    ref["repository"] = rest
    ref["digest"] = digest
    return ref


def machine_config(spec: MachineSpec, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """A group's `MachineSpec` as the platform's ``api.MachineConfig``; ``metadata``: the
    machine's own (its record's), else the spec's."""
    init = {
        key: value
        for key, value in (
            ("cmd", spec.init.cmd),
            ("entrypoint", spec.init.entrypoint),
            ("exec", spec.init.exec),
            ("swap_size_mb", spec.init.swap_size_mb),
        )
        if value is not None
    }
    guest = spec.guest
    config: dict[str, Any] = {
        "image": spec.runs.image or "",
        "init": init,
        "env": dict(spec.env),
        "guest": _without_none(
            {
                "cpu_kind": guest.cpu_kind,
                "cpus": guest.cpus,
                "memory_mb": guest.memory_mb,
                "gpu_kind": guest.gpu_kind,
                "gpus": guest.gpus,
                "kernel_args": guest.kernel_args,
                "host_dedication_id": guest.host_dedication_id,
            }
        ),
        "services": [_service(s) for s in spec.services],
        "restart": _without_none(
            {"policy": spec.restart.policy, "max_retries": spec.restart.max_retries}
        ),
        "stop_config": {"signal": spec.stop_config.signal, "timeout": spec.stop_config.timeout},
        "metadata": dict(metadata if metadata is not None else spec.metadata),
    }
    if spec.checks:
        config["checks"] = {c.name: _check(c) for c in spec.checks}
    if spec.mounts:
        config["mounts"] = [
            _without_none(
                {
                    "name": m.name,
                    "path": m.path,
                    "size_gb": math.ceil(m.size_gb),
                    "extend_threshold_percent": m.extend_threshold_percent,
                    "add_size_gb": math.ceil(m.add_size_gb) if m.add_size_gb else None,
                    "size_gb_limit": math.ceil(m.size_gb_limit) if m.size_gb_limit else None,
                }
            )
            for m in spec.mounts
        ]
    if spec.files:
        config["files"] = [
            _without_none(
                {"guest_path": f.guest_path, "raw_value": f.raw_value, "secret_name": f.secret_name}
            )
            for f in spec.files
        ]
    if spec.statics:
        config["statics"] = [
            _without_none(
                {
                    "guest_path": s.guest_path,
                    "url_prefix": s.url_prefix,
                    "tigris_bucket": s.tigris_bucket,
                    "index_document": s.index_document,
                }
            )
            for s in spec.statics
        ]
    if spec.metrics is not None:
        config["metrics"] = {
            "port": spec.metrics.port,
            "path": spec.metrics.path,
            "https": spec.metrics.https,
        }
    return config


def _service(service: ServiceSpec) -> dict[str, Any]:
    concurrency = service.concurrency
    shown: dict[str, Any] = {
        "protocol": service.protocol,
        "internal_port": service.internal_port,
        "ports": [
            _without_none(
                {
                    "port": p.port,
                    "start_port": p.start_port,
                    "end_port": p.end_port,
                    "handlers": list(p.handlers),
                    "force_https": p.force_https or None,
                    "tls_options": p.tls_options,
                    "http_options": p.http_options,
                    "proxy_proto_options": p.proxy_proto_options,
                }
            )
            for p in service.ports
        ],
        "concurrency": _without_none(
            {
                "type": concurrency.type,
                "soft_limit": concurrency.soft_limit,
                "hard_limit": concurrency.hard_limit,
            }
        ),
        # fly-go's MachineAutostop: false/true for off/stop, the string for suspend.
        "autostop": (
            service.autostop if service.autostop == "suspend" else service.autostop == "stop"
        ),
        "autostart": service.autostart,
        "min_machines_running": service.min_machines_running,
    }
    if service.checks:
        shown["checks"] = [_check(c) for c in service.checks]
    return shown


def _check(check: Check) -> dict[str, Any]:
    return _without_none(
        {
            "type": check.type,
            "port": check.port,
            "interval": check.interval,
            "timeout": check.timeout,
            "grace_period": check.grace_period,
            "method": check.method,
            "path": check.path,
            "protocol": check.protocol,
            "tls_skip_verify": check.tls_skip_verify,
            "tls_server_name": check.tls_server_name,
            "headers": (
                [{"name": k, "values": [v]} for k, v in check.headers.items()]
                if check.headers
                else None
            ),
        }
    )


def checks_of(machine: SupervisedMachine) -> list[dict[str, Any]]:
    """The machine's checks as ``CheckStatus`` objects (name, status, output, updated_at)."""
    if machine.checks is None:
        return []
    return [
        {
            "name": state.name,
            "status": state.status.value,
            "output": state.output,
            "updated_at": state.updated_at,
        }
        for state in machine.checks.states()
    ]


# -- events -------------------------------------------------------------------------------------

#: taxiway's stored event type → the platform's (type, source); the status is the
#: stored one. Types taxiway keeps for itself (``ports``) are not shown.
_EVENT_TYPES: dict[str, tuple[str, str]] = {
    "create": ("launch", "user"),
    "start": ("start", "user"),
    "started": ("start", "flyd"),
    "resume": ("start", "user"),
    "launch_failed": ("launch", "flyd"),
    "exit": ("exit", "flyd"),
    "stop": ("stop", "user"),
    "suspend": ("suspend", "user"),
    "update": ("update", "user"),
    "restart": ("restart", "user"),
    "destroy": ("destroy", "user"),
    "cordon": ("cordon", "user"),
    "uncordon": ("uncordon", "user"),
}


def events_of(runtime: AppRuntime, machine_id: str, limit: int | None = None) -> list[dict]:
    """The machine's events, newest first, as ``MachineEvent`` objects."""
    shown = []
    for record in runtime.store.events(runtime.app, machine_id=machine_id, limit=None):
        event = event_object(record)
        if event is not None:
            shown.append(event)
            if limit is not None and len(shown) >= limit:
                break
    return shown


def event_object(record: EventRecord) -> dict[str, Any] | None:
    """One stored event as the platform's ``MachineEvent``, None for taxiway's own.

    A run that ends is an ``exit`` event whose ``request.exit_event`` says how: the exit
    code, whether the kernel's OOM killer ended it, whether a stop asked for it
    (``requested_stop``) and whether the restart policy starts it again
    (``restarting``), as fly-go's `MachineExitEvent` reads it. taxiway records a stop's
    end as a ``stop`` event with the exit code: shown as the platform shows it, an
    ``exit`` with ``requested_stop``."""
    kind = _EVENT_TYPES.get(record.type)
    if kind is None:
        return None
    type_, source = kind
    status = record.status or ("created" if record.type == "create" else "")
    data = record.data or {}
    timestamp = _millis(record.created_at)
    event: dict[str, Any] = {
        "id": str(record.id),
        "type": type_,
        "status": status,
        "source": source,
        "timestamp": timestamp,
    }
    exit_code = data.get("exit_code")
    ended = record.type == "exit" or (record.type == "stop" and status == "stopped")
    if ended and isinstance(exit_code, int):
        event["type"], event["source"] = "exit", "flyd"
        event["request"] = {
            "exit_event": {
                "exit_code": exit_code,
                "guest_exit_code": exit_code,
                "oom_killed": bool(data.get("oom_killed")),
                "requested_stop": record.type == "stop",
                "restarting": bool(data.get("restarting")),
                "exited_at": record.created_at,
            }
        }
    return event


def _millis(stamp: str) -> int:
    """An ISO-8601 stamp (``…Z``) as milliseconds since the epoch (0 if unreadable)."""
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def _without_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}

"""Finding what a Machines API path names: the app (this daemon's only), a machine
(by its exact id, as on the platform). Unknown ones are 404s with a sentence."""

from __future__ import annotations

from taxiway.api.routing import HTTPError
from taxiway.runtime.app import AppRuntime
from taxiway.runtime.machine import SupervisedMachine


def check_app(runtime: AppRuntime, app_name: str) -> None:
    """404 unless ``app_name`` is the app this daemon runs."""
    if app_name != runtime.app:
        raise HTTPError(
            404,
            f"app {app_name!r} is not found here: this daemon runs {runtime.app} "
            "(each app's own `taxiway up` serves its API)",
        )


def live_machine(runtime: AppRuntime, app_name: str, machine_id: str) -> SupervisedMachine:
    """The app's machine ``machine_id``, while it exists (404 for unknown or destroyed)."""
    check_app(runtime, app_name)
    machine = runtime.machines.get(machine_id)
    if machine is not None and machine.state.value not in ("destroying", "destroyed"):
        return machine
    record = runtime.store.get_machine(machine_id)
    if record is not None and record.app == runtime.app and record.state == "destroyed":
        raise HTTPError(404, f"machine {machine_id} was destroyed")
    raise HTTPError(404, f"app {runtime.app} has no machine {machine_id}")

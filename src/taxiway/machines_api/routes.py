"""The Machines API's route table: every path the daemon answers under ``/v1``.

Paths and methods are the platform's OpenAPI document's (superfly/fly-openapi-sdk,
go/api/openapi.yaml); the handlers are in `app_routes`, `machine_routes`, `lifecycle`
(create, update, destroy) and `volumes`.
"""

from __future__ import annotations

from taxiway.api.routing import Router
from taxiway.machines_api.app_routes import AppRoutes
from taxiway.machines_api.changes import MachineChanges
from taxiway.machines_api.lifecycle import add_lifecycle_routes
from taxiway.machines_api.machine_routes import MachineRoutes
from taxiway.machines_api.volumes import add_volume_routes
from taxiway.runtime.app import AppRuntime


def build_router(runtime: AppRuntime, changes: MachineChanges) -> Router:
    router = Router()
    apps = AppRoutes(runtime)
    machines = MachineRoutes(runtime, changes)
    app = "/v1/apps/{app}"
    one = app + "/machines/{id}"

    router.add("GET", "/v1/apps", apps.list)
    router.add("POST", "/v1/apps", apps.create)
    router.add("GET", app, apps.show)
    router.add("DELETE", app, apps.delete)

    router.add("GET", app + "/machines", machines.list)
    router.add("GET", one, machines.show)
    router.add("GET", one + "/events", machines.events)
    router.add("GET", one + "/versions", machines.versions)
    router.add("GET", one + "/ps", machines.ps)
    router.add("GET", one + "/wait", machines.wait)
    router.add("POST", one + "/start", machines.start)
    router.add("POST", one + "/stop", machines.stop)
    router.add("POST", one + "/restart", machines.restart)
    router.add("POST", one + "/suspend", machines.suspend)
    router.add("POST", one + "/signal", machines.signal)
    router.add("POST", one + "/cordon", machines.cordon)
    router.add("POST", one + "/uncordon", machines.uncordon)
    router.add("POST", one + "/exec", machines.exec)
    router.add("POST", one + "/lease", machines.lease_create)
    router.add("GET", one + "/lease", machines.lease_show)
    router.add("DELETE", one + "/lease", machines.lease_release)
    router.add("GET", one + "/metadata", machines.metadata)
    router.add("POST", one + "/metadata/{key}", machines.metadata_set)
    router.add("DELETE", one + "/metadata/{key}", machines.metadata_delete)

    add_lifecycle_routes(router, runtime)  # POST …/machines, POST/DELETE …/machines/{id}
    add_volume_routes(router, runtime)  # …/volumes, …/volumes/{id}[/extend|/snapshots]
    return router

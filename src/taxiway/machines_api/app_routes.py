"""``/v1/apps``: the daemon's one app, in the platform's ``App`` shapes.

A daemon hosts exactly one app (the fly.toml it was started from), so:

- ``GET /v1/apps?org_slug=…`` lists that app (every local app is in the ``personal`` org;
  any ``org_slug`` lists it, none too).
- ``GET /v1/apps/{app}``: the app, or 404 for any other name.
- ``POST /v1/apps``: creating the daemon's own app answers 201, as if it had been made
  then (it exists already): a script that creates its app and then its machines runs
  unchanged. Any other name is 422 with a sentence saying how to run another app
  (its own `taxiway up`): one daemon can't host a second app.
- ``DELETE /v1/apps/{app}``: 409 for the daemon's app (its machines run; `taxiway down`
  stops them, and removing the ``.taxiway`` folder forgets the app), 404 for others.
  Deleting through the API would leave a daemon serving nothing.
"""

from __future__ import annotations

from taxiway.api.routing import Answer, HTTPError, Request, Result
from taxiway.machines_api.bodies import STRING, json_body
from taxiway.machines_api.lookup import check_app
from taxiway.machines_api.shapes import app_object
from taxiway.runtime.app import AppRuntime


class AppRoutes:
    def __init__(self, runtime: AppRuntime) -> None:
        self.runtime = runtime

    async def list(self, request: Request, params: dict[str, str]) -> Result:
        runtime = self.runtime
        return {
            "total_apps": 1,
            "apps": [
                {"id": runtime.app, "name": runtime.app, "machine_count": len(runtime.machines)}
            ],
        }

    async def show(self, request: Request, params: dict[str, str]) -> Result:
        check_app(self.runtime, params["app"])
        return app_object(self.runtime)

    async def create(self, request: Request, params: dict[str, str]) -> Result:
        body = json_body(
            request,
            {"app_name": STRING, "org_slug": STRING, "network": STRING, "app_role_id": STRING},
            what="an app create",
        )
        name = body.get("app_name")
        if not name:
            raise HTTPError(400, "an app create needs app_name")
        if name != self.runtime.app:
            raise HTTPError(
                422,
                f"this daemon runs app {self.runtime.app} and can't host {name!r}: "
                f"run `taxiway up` in {name}'s folder, and its daemon serves its API",
            )
        return Answer(201)

    async def delete(self, request: Request, params: dict[str, str]) -> Result:
        check_app(self.runtime, params["app"])
        raise HTTPError(
            409,
            f"app {self.runtime.app} is running in this daemon: stop it with `taxiway down` "
            "(removing its .taxiway folder then forgets it)",
        )

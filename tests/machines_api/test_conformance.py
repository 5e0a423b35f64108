"""Conformance to the platform's OpenAPI document (superfly/fly-openapi-sdk,
go/api/openapi.yaml, copied beside this file): schemathesis generates requests for every
operation taxiway serves, valid and invalid ones, and sends them to a live daemon. Every
answer must be documented (or one of the platform's error statuses, with the error
shape), match its schema, never be a 500, and the daemon must answer afterwards.

Left out here, with why:
- Machines_delete is aimed at a throwaway machine made for each case (the live machine
  must stay for the other cases).
- The lease operations' and exec's 200 bodies: the document is wrong about them compared
  with the platform. A lease answer is ``{"status": "success", "data": {nonce, …}}``
  (fly-go's `MachineLease`, which flyctl decodes), not the bare ``Lease``; exec answers
  ``{exit_code, stdout, stderr}`` (fly-go's `MachineExecResponse`), not a string.
  Their statuses and error bodies are still checked. A new lease is 201 (a refresh with
  the nonce 200): the document lists only 200 for the create.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from conftest import LiveApp, start_app
from taxiway.machines_api.bodies import duration_s

SPEC = Path(__file__).with_name("openapi.yaml")
#: Statuses the platform answers beyond those the document lists, each with its
#: ``ErrorResponse`` body (https://fly.io/docs/machines/api/working-with-machines-api/):
#: a bad request, a missing token, an unknown app or machine, a method the path doesn't
#: take, a wait that timed out, a lease held by someone else or an action the machine's
#: state refuses, a body over the limit, an app this daemon can't create.
PLATFORM_ERRORS = {400, 401, 404, 405, 408, 409, 413, 422}
#: Statuses an operation answers that the document misses (see the module docstring).
EXTRA_STATUSES = {"Machines_create_lease": {201}}
#: Operations whose 200 body the document gets wrong (see the module docstring).
WRONG_SUCCESS_SCHEMA = {"Machines_create_lease", "Machines_show_lease", "Machines_exec"}

#: A worker that ends on every signal it can catch, so a stop with whatever signal the
#: generator picks ends at once rather than after its timeout.
WORKER = """\
import signal, sys, time

def bye(signum, frame):
    sys.exit(3)

for sig in signal.valid_signals():
    if sig not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGCONT):
        try:
            signal.signal(sig, bye)
        except (OSError, ValueError):
            pass
print("worker up", flush=True)
while True:
    time.sleep(0.2)
"""

schema = schemathesis.openapi.from_path(SPEC)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("conformance")
    from cli_runner import run_taxiway as taxiway

    app = start_app(folder, "conformance", WORKER)
    app.machine_id = app.machine_ids()[0]  # type: ignore[attr-defined]
    try:
        yield app
    finally:
        taxiway(folder, "down")
        log = (folder / ".taxiway" / "daemon.log").read_text()
        assert "machines api | internal error" not in log, log


@schemathesis.check
def documented_or_platform_error(ctx, response, case) -> bool | None:
    """The status is one the document lists for the operation, or one of the platform's
    error statuses; every error answer is ``{"error": "<sentence>"}``."""
    documented = {str(code) for code in case.operation.definition.raw.get("responses", {})}
    status = response.status_code
    extra = EXTRA_STATUSES.get(case.operation.definition.raw.get("operationId"), set())
    if str(status) not in documented and status not in PLATFORM_ERRORS | extra:
        raise AssertionError(f"{status} is neither documented nor a platform error status")
    if status >= 400:
        body = response.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), body
        assert body["error"] and "Traceback" not in body["error"]
    return None


def aim_at_the_live_app(case, live: LiveApp) -> None:
    """Most cases name the live app and machine (else they all would be 404s); cases
    whose generated app name has a length divisible by 4 keep it, for the 404 path. A
    destroy is aimed at a throwaway machine."""
    params = case.path_parameters or {}
    if "app_name" in params and len(str(params["app_name"])) % 4:
        params["app_name"] = live.name
        if "machine_id" in params:
            params["machine_id"] = live.machine_id
            if case.operation.definition.raw.get("operationId") == "Machines_delete":
                params["machine_id"] = _throwaway(live)
    case.path_parameters = params


def _throwaway(live: LiveApp) -> str:
    """A stopped machine of the app's own image, made through the API to be destroyed."""
    image = live.api.get(f"/v1/apps/{live.name}/machines/{live.machine_id}").json()
    made = live.api.post(
        f"/v1/apps/{live.name}/machines",
        {
            "config": {"image": image["config"]["image"], "init": {"cmd": ["true"]}},
            "skip_launch": True,
        },
    )
    assert made.status == 200, made.body
    return made.json()["id"]


def keep_it_short_and_harmless(case) -> None:
    """Bound what a generated case can make the daemon do: waits, stop timeouts and
    leases of at most a couple of seconds, and exec only ever runs ``echo``."""
    query = case.query if case.query is not None else {}
    if case.operation.definition.raw.get("operationId") == "Machines_wait":
        timeout = str(query.get("timeout", "")).strip()
        if not timeout or (timeout.lstrip("+").isdigit() and int(timeout) > 1):
            query["timeout"] = 1  # the default (and an empty value) is 60 s
        case.query = query
    for holder, key in ((query, "timeout"), (case.body, "timeout")):
        if isinstance(holder, dict) and isinstance(holder.get(key), str | int):
            try:
                if duration_s(holder[key], key) > 2:
                    holder[key] = "2s"
            except Exception:
                pass
    body = case.body
    if isinstance(body, dict):
        if isinstance(body.get("ttl"), int) and body["ttl"] > 2:
            body["ttl"] = 2
        if isinstance(body.get("command"), list):
            body["command"] = ["echo", *body["command"]]
        if isinstance(body.get("cmd"), str):
            body["cmd"] = "echo " + shlex.quote(body["cmd"])


#: Every operation of the document. One test walks them all rather than one pytest item
#: each: pytest-xdist's file-grouped runs (`make test`) silently drop the items
#: schemathesis' `parametrize` makes.
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


def test_the_api_conforms_to_the_platforms_document(live: LiveApp) -> None:
    failures = []
    for operation in OPERATIONS:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def conforms(case) -> None:
            _check(case, live)

        try:
            conforms()
        except Exception as exc:  # every operation is tried; all failures are shown
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert len(OPERATIONS) == 34  # the document's operations, all tried


def _check(case, live: LiveApp) -> None:
    aim_at_the_live_app(case, live)
    keep_it_short_and_harmless(case)
    response = case.call(
        base_url=live.url + "/v1",
        headers={"Authorization": f"Bearer {live.token}"},
        timeout=30,
    )
    checks = [not_a_server_error, documented_or_platform_error, content_type_conformance]
    operation_id = case.operation.definition.raw.get("operationId")
    if not (operation_id in WRONG_SUCCESS_SCHEMA and response.status_code < 300):
        checks.append(response_schema_conformance)
    case.validate_response(response, checks=checks)
    if operation_id == "Machines_create_lease" and response.status_code == 201:
        # let the next cases act on the machine instead of answering 409 for 30 s
        nonce = response.json()["data"]["nonce"]
        released = live.api.delete(
            f"/v1/apps/{live.name}/machines/{live.machine_id}/lease",
            headers={"fly-machine-lease-nonce": nonce},
        )
        assert released.status == 200, released.body


def test_the_daemon_answers_after_the_generated_requests(live: LiveApp) -> None:
    reply = live.api.get(f"/v1/apps/{live.name}/machines/{live.machine_id}")
    assert reply.status == 200 and reply.json()["id"] == live.machine_id

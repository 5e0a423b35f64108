"""The Machines API against a live daemon (`taxiway up -d`, process driver), over real TCP:
auth, error shapes, actions seen in `taxiway status --json`, wait, leases, events,
metadata, cordon, signals and exec."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from cli_runner import run_taxiway as taxiway
from conftest import LiveApp


def one_machine(live: LiveApp) -> str:
    (machine_id,) = live.machine_ids()
    return machine_id


def machine_path(live: LiveApp, suffix: str = "") -> str:
    return f"/v1/apps/{live.name}/machines/{one_machine(live)}{suffix}"


def assert_error(reply, status: int) -> str:
    """The platform's error shape: the status, and a JSON object with one sentence."""
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in body["error"]
    return body["error"]


def ensure_started(live: LiveApp) -> None:
    reply = live.api.post(machine_path(live, "/start"))
    assert reply.status == 200, reply.body
    assert live.api.get(machine_path(live, "/wait?state=started&timeout=30")).status == 200


# -- the token ------------------------------------------------------------------------------


def test_every_request_needs_the_token(live: LiveApp) -> None:
    path = f"/v1/apps/{live.name}/machines"
    assert "Bearer" in assert_error(live.api.get(path, auth=""), 401)
    assert_error(live.api.get(path, auth="Bearer not-the-token"), 401)
    assert_error(live.api.get(path, auth=f"Basic {live.token}"), 401)
    assert_error(live.api.get("/v1/no/such/path", auth="Bearer wrong"), 401)  # before routing
    assert live.api.get(path).status == 200
    assert live.api.get(path, auth=f"FlyV1 {live.token}").status == 200  # flyctl's scheme


def test_the_token_file_is_private_and_the_cli_prints_it(live: LiveApp) -> None:
    token_file = live.folder / ".taxiway" / "api.token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert token_file.read_text().strip() == live.token
    printed = taxiway(live.folder, "api", "token", "--json")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == {"token": live.token}


def test_api_token_makes_one_without_a_daemon(tmp_path: Path) -> None:
    (tmp_path / "fly.toml").write_text('app = "tokenonly"\n')
    first = taxiway(tmp_path, "api", "token")
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.strip()) >= 32
    assert taxiway(tmp_path, "api", "token").stdout == first.stdout  # made once, then kept
    assert stat.S_IMODE(os.stat(tmp_path / ".taxiway" / "api.token").st_mode) == 0o600


def test_status_json_names_the_api_url(live: LiveApp) -> None:
    url = live.status()["api"]["url"]
    assert url.startswith("http://127.0.0.1:") and url == live.url
    assert f"machines api {url}" in taxiway(live.folder, "status").stdout


# -- error shapes ---------------------------------------------------------------------------


def test_client_mistakes_are_400s_with_one_sentence(live: LiveApp) -> None:
    stop = machine_path(live, "/stop")
    assert "not valid JSON" in assert_error(live.api.post(stop, raw=b'{"signal": '), 400)
    assert "timeout" in assert_error(live.api.post(stop, {"timeout": True}), 400)
    assert "timout" in assert_error(live.api.post(stop, {"timout": "1s"}), 400)
    assert_error(live.api.post(stop, [1, 2]), 400)
    assert_error(live.api.post(stop, {"signal": "SIGNOPE"}), 400)
    assert_error(live.api.post(machine_path(live, "/signal"), {"signal": None}), 400)
    assert_error(live.api.post(machine_path(live, "/exec"), {"command": "ls"}), 400)
    assert_error(live.api.get(machine_path(live, "/wait?state=sleeping")), 400)
    assert_error(live.api.get(machine_path(live, "/wait?timeout=soon")), 400)
    assert_error(live.api.post(machine_path(live, "/lease"), {"ttl": "long"}), 400)
    assert live.api.get(machine_path(live)).json()["state"] == "started"  # nothing happened


def test_unknown_app_machine_and_path_are_404s(live: LiveApp) -> None:
    assert "other" in assert_error(live.api.get("/v1/apps/other/machines"), 404)
    assert_error(live.api.get(f"/v1/apps/{live.name}/machines/0000000000dead"), 404)
    assert_error(live.api.post(f"/v1/apps/{live.name}/machines/0000000000dead/stop"), 404)
    assert_error(live.api.get("/v1/nothing/here"), 404)
    assert_error(live.api.request("PUT", f"/v1/apps/{live.name}/machines"), 405)


def test_a_body_over_the_limit_is_413_and_the_daemon_answers_on(live: LiveApp) -> None:
    huge = b'{"signal": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    assert "limit" in assert_error(live.api.post(machine_path(live, "/stop"), raw=huge), 413)
    assert live.api.get(machine_path(live)).json()["state"] == "started"


def test_apps_routes_answer_for_the_daemons_app(live: LiveApp) -> None:
    listed = live.api.get("/v1/apps?org_slug=personal").json()
    assert listed["total_apps"] == 1 and listed["apps"][0]["name"] == live.name
    shown = live.api.get(f"/v1/apps/{live.name}").json()
    assert shown["name"] == live.name and shown["organization"]["slug"] == "personal"
    assert live.api.post("/v1/apps", {"app_name": live.name, "org_slug": "personal"}).status == 201
    assert "taxiway up" in assert_error(live.api.post("/v1/apps", {"app_name": "another"}), 422)
    assert "taxiway down" in assert_error(live.api.delete(f"/v1/apps/{live.name}"), 409)


# -- actions --------------------------------------------------------------------------------


def test_stop_and_start_show_in_status_and_events(live: LiveApp) -> None:
    machine_id = one_machine(live)
    stopped = live.api.post(machine_path(live, "/stop"), {"signal": "SIGTERM", "timeout": "5s"})
    assert stopped.status == 200, stopped.body
    waited = live.api.get(machine_path(live, "/wait?state=stopped&timeout=30"))
    assert (waited.status, waited.json()) == (200, {"ok": True})
    (shown,) = live.status()["machines"]
    assert (shown["id"], shown["state"], shown["exit_code"]) == (machine_id, "stopped", 3)

    events = live.api.get(machine_path(live, "/events")).json()
    assert events[0]["type"] == "exit" and events[0]["status"] == "stopped"
    exit_event = events[0]["request"]["exit_event"]
    assert exit_event["exit_code"] == 3 and exit_event["requested_stop"] is True
    assert exit_event["oom_killed"] is False
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps, reverse=True)  # newest first, in milliseconds
    assert stamps[0] > 1_600_000_000_000

    started = live.api.post(machine_path(live, "/start"))
    assert started.status == 200 and started.json()["previous_state"] == "stopped"
    assert live.api.get(machine_path(live, "/wait?timeout=30")).status == 200
    assert live.status()["machines"][0]["state"] == "started"


def test_a_stop_as_fly_go_sends_it_is_understood(live: LiveApp) -> None:
    """fly-go's StopMachineInput: the machine's id, and a zero timeout meaning the default."""
    body = {"id": one_machine(live), "signal": "", "timeout": "0s"}
    assert live.api.post(machine_path(live, "/stop"), body).status == 200
    assert live.api.get(machine_path(live, "/wait?state=stopped&timeout=30")).status == 200
    assert live.status()["machines"][0]["exit_code"] == 3  # SIGINT reached it, no SIGKILL
    other = {"id": "0000000000dead"}
    assert "names machine" in assert_error(live.api.post(machine_path(live, "/stop"), other), 400)
    ensure_started(live)


def test_wait_times_out_with_408(live: LiveApp) -> None:
    reply = live.api.get(machine_path(live, "/wait?state=stopped&timeout=1"))
    assert "stopped" in assert_error(reply, 408)
    assert live.api.get(machine_path(live, "/wait?state=started&timeout=1")).status == 200


def test_restart_gives_a_new_run(live: LiveApp) -> None:
    before = live.status()["machines"][0]["pid"]
    assert live.api.post(machine_path(live, "/restart?timeout=5s&signal=SIGTERM")).status == 200
    assert live.api.get(machine_path(live, "/wait?timeout=30")).status == 200
    assert live.status()["machines"][0]["pid"] not in (None, before)


def test_suspend_then_start_resumes(live: LiveApp) -> None:
    assert live.api.post(machine_path(live, "/suspend")).status == 200
    assert live.api.get(machine_path(live, "/wait?state=suspended&timeout=10")).status == 200
    ensure_started(live)


def test_a_signal_reaches_the_machines_process(live: LiveApp) -> None:
    marker = live.folder / "usr1-received"
    marker.unlink(missing_ok=True)
    assert live.api.post(machine_path(live, "/signal"), {"signal": "SIGUSR1"}).status == 200
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    assert live.api.get(machine_path(live)).json()["state"] == "started"  # still running


def test_signal_9_kills_and_the_restart_policy_starts_it_again(live: LiveApp) -> None:
    assert live.api.post(machine_path(live, "/signal"), {"signal": 9}).status == 200
    deadline = time.monotonic() + 30
    exits: list[dict] = []
    while not exits and time.monotonic() < deadline:
        events = live.api.get(machine_path(live, "/events")).json()
        exits = [
            e
            for e in events
            if e["type"] == "exit" and not e["request"]["exit_event"]["requested_stop"]
        ]
        time.sleep(0.1)
    assert exits, "no exit event after SIGKILL"
    assert exits[0]["request"]["exit_event"]["restarting"] is True  # on-failure restarts it
    assert live.api.get(machine_path(live, "/wait?timeout=30")).status == 200


# -- leases ---------------------------------------------------------------------------------


def test_a_lease_keeps_others_off_the_machine(live: LiveApp) -> None:
    lease_path = machine_path(live, "/lease")
    taken = live.api.post(lease_path, {"ttl": 60, "description": "test deploy"})
    assert taken.status == 201, taken.body
    lease = taken.json()
    assert lease["status"] == "success"
    nonce = lease["data"]["nonce"]
    assert lease["data"]["description"] == "test deploy"
    assert lease["data"]["expires_at"] > time.time()

    assert "leased" in assert_error(live.api.post(lease_path, {"ttl": 10}), 409)
    assert_error(live.api.post(machine_path(live, "/stop")), 409)
    assert_error(live.api.post(machine_path(live, "/cordon")), 409)
    assert_error(
        live.api.post(machine_path(live, "/stop"), headers={"fly-machine-lease-nonce": "bad"}), 409
    )
    shown = live.api.get(lease_path).json()
    assert shown["data"]["description"] == "test deploy" and "nonce" not in shown["data"]

    with_nonce = {"fly-machine-lease-nonce": nonce}
    refreshed = live.api.post(lease_path, {"ttl": 120}, headers=with_nonce)
    assert refreshed.status == 200 and refreshed.json()["data"]["nonce"] == nonce
    assert live.api.post(machine_path(live, "/cordon"), headers=with_nonce).status == 200
    assert live.api.post(machine_path(live, "/uncordon"), headers=with_nonce).status == 200

    assert_error(live.api.delete(lease_path), 409)  # releasing needs the nonce too
    assert live.api.delete(lease_path, headers=with_nonce).status == 200
    assert_error(live.api.get(lease_path), 404)
    assert live.api.post(machine_path(live, "/cordon")).status == 200  # free again
    assert live.api.post(machine_path(live, "/uncordon")).status == 200


def test_a_lease_expires_after_its_ttl(live: LiveApp) -> None:
    assert live.api.post(machine_path(live, "/lease"), {"ttl": 1}).status == 201
    deadline = time.monotonic() + 10
    while live.api.get(machine_path(live, "/lease")).status == 200:
        assert time.monotonic() < deadline, "the lease outlived its ttl"
        time.sleep(0.2)
    assert live.api.post(machine_path(live, "/lease"), {"ttl": 1}).status == 201
    time.sleep(1.1)
    assert live.api.post(machine_path(live, "/cordon")).status == 200
    assert live.api.post(machine_path(live, "/uncordon")).status == 200


# -- metadata, cordon, exec -----------------------------------------------------------------


def test_metadata_round_trip_and_list_filter(live: LiveApp) -> None:
    key_path = machine_path(live, "/metadata/role")
    set_ = live.api.post(key_path, {"value": "primary"})
    assert set_.status == 204 and set_.body == b""
    metadata = live.api.get(machine_path(live, "/metadata")).json()
    assert metadata["role"] == "primary" and metadata["fly_process_group"] == "worker"
    assert live.api.get(machine_path(live)).json()["config"]["metadata"]["role"] == "primary"
    machines = f"/v1/apps/{live.name}/machines"
    assert len(live.api.get(machines + "?metadata.role=primary").json()) == 1
    assert live.api.get(machines + "?metadata.role=replica").json() == []
    assert_error(live.api.post(key_path, {"value": 3}), 400)
    fixed = machine_path(live, "/metadata/fly_process_group")
    assert_error(live.api.post(fixed, {"value": "x"}), 400)

    assert live.api.delete(key_path).status == 204
    assert "role" not in live.api.get(machine_path(live, "/metadata")).json()


def test_cordon_shows_on_the_machine(live: LiveApp) -> None:
    assert live.api.post(machine_path(live, "/cordon")).status == 200
    assert live.api.get(machine_path(live)).json()["cordoned"] is True
    assert live.api.post(machine_path(live, "/uncordon")).status == 200
    assert "cordoned" not in live.api.get(machine_path(live)).json()


def test_exec_runs_in_the_machine(live: LiveApp) -> None:
    ran = live.api.post(machine_path(live, "/exec"), {"command": ["sh", "-c", "echo hi; exit 4"]})
    assert ran.status == 200, ran.body
    assert ran.json() == {"exit_code": 4, "stdout": "hi\n", "stderr": ""}
    split = live.api.post(machine_path(live, "/exec"), {"cmd": "echo 'two words'", "timeout": 10})
    assert split.json()["stdout"] == "two words\n"


def test_machine_object_has_the_platforms_fields(live: LiveApp) -> None:
    machine = live.api.get(machine_path(live)).json()
    assert {
        "id",
        "name",
        "state",
        "region",
        "instance_id",
        "private_ip",
        "config",
        "image_ref",
        "created_at",
        "updated_at",
        "events",
        "checks",
        "host_status",
    } <= set(machine)
    assert machine["private_ip"].startswith("fdaa:") and machine["host_status"] == "ok"
    assert machine["config"]["stop_config"] == {"signal": "SIGINT", "timeout": "5s"}
    assert machine["config"]["metadata"]["fly_process_group"] == "worker"
    versions = live.api.get(machine_path(live, "/versions")).json()
    assert versions[0]["version"] == machine["instance_id"]


def test_ps_lists_the_machines_processes(live: LiveApp) -> None:
    listed = live.api.get(machine_path(live, "/ps?sort_by=rss&order=desc"))
    assert listed.status == 200, listed.body
    processes = listed.json()
    assert any("worker.py" in p["command"] for p in processes)
    main_pid = live.status()["machines"][0]["pid"]
    assert main_pid in [p["pid"] for p in processes]
    assert [p["rss"] for p in processes] == sorted((p["rss"] for p in processes), reverse=True)
    assert all(p["rss"] > 0 and p["directory"] for p in processes)
    assert_error(live.api.get(machine_path(live, "/ps?sort_by=colour")), 400)

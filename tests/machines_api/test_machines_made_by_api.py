"""Machines made, updated and destroyed through the Machines API, on a real runtime (the
process driver; the docker driver for another image), over a real socket."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from harness import Api, copy_jobapp, make_runtime

from engine_support import image_problem_or_none
from taxiway.runtime.app import AppRuntime

TEST_LABEL = "machines-api"


def run(folder: Path, state: Path, body: Callable[[AppRuntime, Api], Awaitable[Any]]) -> Any:
    """Up the app, serve the routes, run ``body``, and always `down` the app."""

    async def main() -> Any:
        runtime = make_runtime(folder, state)
        try:
            await runtime.up()
            async with Api(runtime).served() as api:
                return await body(runtime, api)
        finally:
            await runtime.down()
            runtime.store.close()

    return asyncio.run(main())


def own_image(runtime: AppRuntime) -> str:
    """What the app's machines get as FLY_IMAGE_REF."""
    machine = next(iter(runtime.machines.values()))
    return machine.launch_spec.env["FLY_IMAGE_REF"]


def sleeper(runtime: AppRuntime, **extra: Any) -> dict[str, Any]:
    return {
        "config": {
            "image": own_image(runtime),
            "init": {"cmd": ["python3", "idle.py"]},
            **extra,
        }
    }


async def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


# -- a job runner ----------------------------------------------------------------------------


def test_a_job_runner_makes_waits_for_reads_and_destroys_a_machine_per_job(
    tmp_path: Path,
) -> None:
    folder = copy_jobapp(tmp_path)
    results = tmp_path / "results.json"

    async def body(runtime: AppRuntime, api: Api) -> None:
        status, runner = await api.call(
            "POST",
            "",
            {
                "config": {
                    "image": own_image(runtime),
                    "init": {"cmd": ["python3", "runner.py"]},
                    "env": {
                        "MACHINES_API_URL": api.url,
                        "FLY_API_TOKEN": api.token,
                        "RESULTS_FILE": str(results),
                    },
                    "restart": {"policy": "no"},
                    "metadata": {"role": "runner"},
                },
                "name": "runner",
            },
        )
        assert status == 200, runner
        assert runner["name"] == "runner" and runner["state"] == "started"
        await until(lambda: results.exists(), timeout=90)
        await until(lambda: runtime.machines[runner["id"]].state.value == "stopped")
        assert runtime.machines[runner["id"]].info.exit_code == 0

    run(folder, tmp_path / "state", body)
    done = json.loads(results.read_text())
    assert [(r["job"], r.get("exit_code"), r.get("destroyed")) for r in done] == [
        (1, 3, 200),
        (2, 6, 200),
        (3, 9, 200),
    ], done
    assert len({r["machine"] for r in done}) == 3


# -- create ----------------------------------------------------------------------------------


def test_a_wrong_request_is_refused_with_its_key_path_and_makes_nothing(tmp_path: Path) -> None:
    folder = copy_jobapp(tmp_path)

    async def body(runtime: AppRuntime, api: Api) -> None:
        before = len(runtime.store.list_machines(runtime.app, include_destroyed=True))
        wrong = [
            ({"config": {"init": {"cmd": ["x"]}}}, "config.image is required"),
            (
                sleeper(runtime, guest={"memory_mb": "512"}),
                "config.guest.memory_mb must be an integer",
            ),
            (sleeper(runtime, env={"A": 1}), "config.env.A must be a string"),
            (sleeper(runtime, restart={"policy": "sometimes"}), "config.restart.policy must be"),
            (sleeper(runtime, enviroment={"A": "1"}), "config.enviroment is not a key"),
            ({"config": {"image": "x"}, "skip_launch": "yes"}, "skip_launch must be true or false"),
            (sleeper(runtime, mounts=[{"volume": "vol_1", "path": "/data"}]), "config.mounts"),
        ]
        for request, sentence in wrong:
            status, answer = await api.call("POST", "", request)
            assert status == 400, answer
            assert answer["error"].startswith(sentence), answer
        status, answer = await api.call("POST", "", None)
        assert status == 400
        after = len(runtime.store.list_machines(runtime.app, include_destroyed=True))
        assert after == before

    run(folder, tmp_path / "state", body)


def test_an_image_the_engine_cannot_give_is_refused_and_makes_nothing(tmp_path: Path) -> None:
    folder = copy_jobapp(tmp_path)

    async def body(runtime: AppRuntime, api: Api) -> None:
        before = len(runtime.store.list_machines(runtime.app, include_destroyed=True))
        image = "registry.invalid/taxiway-test/no-such-image:1"
        status, answer = await api.call(
            "POST", "", {"config": {"image": image, "init": {"cmd": ["true"]}}}
        )
        assert status == 422, answer
        assert answer["error"].startswith(f"no Docker engine to run image {image}: ") or answer[
            "error"
        ].startswith(f"image {image} is not on the Docker engine"), answer
        after = len(runtime.store.list_machines(runtime.app, include_destroyed=True))
        assert after == before
        assert len(runtime.machines) == 1

    run(folder, tmp_path / "state", body)


def test_skip_launch_leaves_the_machine_created(tmp_path: Path) -> None:
    folder = copy_jobapp(tmp_path)

    async def body(runtime: AppRuntime, api: Api) -> None:
        status, made = await api.call("POST", "", {**sleeper(runtime), "skip_launch": True})
        assert status == 200, made
        assert made["state"] == "created"
        await asyncio.sleep(0.3)
        assert runtime.machines[made["id"]].state.value == "created"
        assert runtime.machines[made["id"]].process is None

    run(folder, tmp_path / "state", body)


def test_lease_ttl_gives_a_nonce_that_guards_the_machine(tmp_path: Path) -> None:
    folder = copy_jobapp(tmp_path)

    async def body(runtime: AppRuntime, api: Api) -> None:
        status, made = await api.call("POST", "", {**sleeper(runtime), "lease_ttl": 60})
        assert status == 200, made
        assert len(made["nonce"]) >= 12
        status, answer = await api.call("DELETE", f"/{made['id']}?force=true")
        assert status == 409, answer  # this client has no way to send the nonce yet

    run(folder, tmp_path / "state", body)


# -- update ----------------------------------------------------------------------------------


def test_an_update_changes_the_env_and_bumps_the_instance_id(tmp_path: Path) -> None:
    folder = copy_jobapp(tmp_path)
    seen = tmp_path / "seen"
    seen.mkdir()
    program = (
        "import os, pathlib, time; "
        f"pathlib.Path({str(seen)!r}, os.environ['FLY_MACHINE_VERSION'])"
        ".write_text(os.environ['COLOUR']); time.sleep(300)"
    )

    def config(colour: str) -> dict[str, Any]:
        return {
            "image": own_image_holder[0],
            "init": {"exec": ["python3", "-c", program]},
            "env": {"COLOUR": colour},
            "stop_config": {"signal": "SIGKILL"},
        }

    own_image_holder: list[str] = []

    async def body(runtime: AppRuntime, api: Api) -> None:
        own_image_holder.append(own_image(runtime))
        status, made = await api.call("POST", "", {"config": config("red")})
        assert status == 200, made
        first = made["instance_id"]
        await until(lambda: (seen / first).exists())
        assert (seen / first).read_text() == "red"
        status, stale = await api.call(
            "POST", f"/{made['id']}", {"config": config("blue"), "current_version": "0" * 26}
        )
        assert status == 412, stale
        status, updated = await api.call(
            "POST", f"/{made['id']}", {"config": config("blue"), "current_version": first}
        )
        assert status == 200, updated
        second = updated["instance_id"]
        assert second != first and updated["state"] == "started"
        assert updated["config"]["env"] == {"COLOUR": "blue"}
        await until(lambda: (seen / second).exists())
        assert (seen / second).read_text() == "blue"
        record = runtime.store.get_machine(made["id"])
        assert record.instance_id == second
        assert record.api["config"]["env"] == {"COLOUR": "blue"}

    run(folder, tmp_path / "state", body)


# -- destroy ---------------------------------------------------------------------------------


def test_destroying_a_started_machine_needs_force(tmp_path: Path) -> None:
    folder = copy_jobapp(tmp_path)

    async def body(runtime: AppRuntime, api: Api) -> None:
        status, made = await api.call("POST", "", sleeper(runtime))
        assert status == 200, made
        status, refused = await api.call("DELETE", f"/{made['id']}")
        assert status == 412, refused
        assert "stop it first" in refused["error"]
        assert runtime.machines[made["id"]].state.value == "started"
        status, _ = await api.call("DELETE", f"/{made['id']}?force=true")
        assert status == 200
        assert made["id"] not in runtime.machines
        assert runtime.store.get_machine(made["id"]).state == "destroyed"
        assert made["id"] not in {m.id for m in runtime.store.list_machines(runtime.app)}
        status, _ = await api.call("DELETE", f"/{made['id']}")
        assert status == 404
        # a suspended machine is destroyed without force, as on the platform
        status, other = await api.call("POST", "", sleeper(runtime))
        assert status == 200, other
        await runtime.machines[other["id"]].suspend()
        status, answer = await api.call("DELETE", f"/{other['id']}")
        assert status == 200, answer
        assert other["id"] not in runtime.machines

    run(folder, tmp_path / "state", body)


def test_auto_destroy_destroys_a_machine_when_it_exits(tmp_path: Path) -> None:
    folder = copy_jobapp(tmp_path)

    async def body(runtime: AppRuntime, api: Api) -> None:
        status, made = await api.call(
            "POST",
            "",
            {
                "config": {
                    "image": own_image(runtime),
                    "init": {"cmd": ["python3", "job.py", "1"]},
                    "restart": {"policy": "no"},
                    "auto_destroy": True,
                }
            },
        )
        assert status == 200, made
        await until(lambda: made["id"] not in runtime.machines)
        assert runtime.store.get_machine(made["id"]).state == "destroyed"

    run(folder, tmp_path / "state", body)


# -- unmanaged machines: deploys, scale, status, a restarted daemon --------------------------


def test_a_deploy_leaves_an_unmanaged_machine_running_and_untouched(tmp_path: Path) -> None:
    from taxiway.config.loader import load_config
    from taxiway.deploy.deployer import Deployer

    folder = copy_jobapp(tmp_path)

    async def body(runtime: AppRuntime, api: Api) -> None:
        (app_machine,) = runtime.machines.values()
        app_version = app_machine.info.version
        status, made = await api.call("POST", "", sleeper(runtime))
        assert status == 200, made
        unmanaged = runtime.machines[made["id"]]
        pid, version = unmanaged.info.pid, unmanaged.info.version
        # one made through the API in the config's group joins the group
        status, joined = await api.call(
            "POST", "", sleeper(runtime, metadata={"fly_process_group": "app"})
        )
        assert status == 200, joined
        member = runtime.machines[joined["id"]]
        assert runtime.store.counts(runtime.app) == {"app": 2}
        assert not runtime.unmanaged(member) and runtime.unmanaged(unmanaged)

        text = (folder / "fly.toml").read_text()
        (folder / "fly.toml").write_text(text + '\n[env]\nDEPLOYED = "2"\n')
        lines: list[str] = []
        release = await Deployer(runtime).deploy(
            load_config(folder / "fly.toml"), "rolling", 30.0, True, lines.append
        )
        assert release.status == "complete", lines
        assert app_machine.info.version != app_version  # the app's machine was updated
        assert member.launch_spec.env["DEPLOYED"] == "2"  # and so was the API-made member
        assert member.id not in runtime.api_machines
        assert runtime.store.get_machine(member.id).api is None

        assert runtime.machines[made["id"]] is unmanaged
        assert unmanaged.state.value == "started"
        assert (unmanaged.info.pid, unmanaged.info.version) == (pid, version)
        assert "DEPLOYED" not in unmanaged.launch_spec.env
        assert not any(made["id"] in line for line in lines)

        await runtime.scale({"app": 1})
        assert sum(m.info.group == "app" for m in runtime.machines.values()) == 1
        assert runtime.machines[made["id"]] is unmanaged and unmanaged.state.value == "started"
        shown = {m["id"]: m["group"] for m in runtime.status()["machines"]}
        assert shown[made["id"]] == ""

    run(folder, tmp_path / "state", body)


def test_a_launch_that_fails_leaves_a_failed_machine_with_its_event(tmp_path: Path) -> None:
    folder = copy_jobapp(tmp_path)

    async def body(runtime: AppRuntime, api: Api) -> None:
        status, made = await api.call(
            "POST",
            "",
            {"config": {"image": own_image(runtime), "init": {"exec": ["no-such-program-xyz"]}}},
        )
        assert status == 200, made
        assert made["state"] == "failed"
        assert made["events"][0]["type"] == "launch" and made["events"][0]["status"] == "failed"
        status, _ = await api.call("DELETE", f"/{made['id']}")
        assert status == 200
        assert made["id"] not in runtime.machines

    run(folder, tmp_path / "state", body)


def test_a_restarted_daemon_takes_unmanaged_machines_back(tmp_path: Path) -> None:
    folder = copy_jobapp(tmp_path)
    state = tmp_path / "state"

    async def first(runtime: AppRuntime, api: Api) -> tuple[str, str]:
        status, running = await api.call(
            "POST", "", sleeper(runtime, metadata={"fly_process_group": "worker"})
        )
        assert status == 200, running
        status, job = await api.call(
            "POST",
            "",
            {
                "config": {
                    "image": own_image(runtime),
                    "init": {"cmd": ["python3", "job.py", "2"]},
                    "restart": {"policy": "no"},
                }
            },
        )
        assert status == 200, job
        await until(lambda: runtime.machines[job["id"]].state.value == "stopped")
        return running["id"], job["id"]

    running, job = run(folder, state, first)

    async def second(runtime: AppRuntime, api: Api) -> None:
        assert runtime.machines[running].state.value == "started"
        assert runtime.machines[running].info.group == "worker"
        assert runtime.machines[job].state.value == "stopped"
        shown = {m["id"]: m["group"] for m in runtime.status()["machines"]}
        assert shown[running] == "worker" and shown[job] == ""
        assert sum(m.info.group == "app" for m in runtime.machines.values()) == 1

    run(folder, state, second)


# -- another image: the docker driver -----------------------------------------------------------

BASE_IMAGE = "debian:bookworm-slim"


def test_another_image_runs_on_the_docker_driver_and_down_cleans_up(tmp_path: Path) -> None:
    problem = image_problem_or_none(BASE_IMAGE)
    if problem is not None:
        pytest.skip(problem)
    from taxiway.image.engine import client
    from taxiway.image.labels import scope_filter

    folder = copy_jobapp(tmp_path)
    scopes: list[str] = []

    async def body(runtime: AppRuntime, api: Api) -> None:
        scopes.append(runtime.scope)
        status, made = await api.call(
            "POST",
            "",
            {
                "config": {
                    "image": BASE_IMAGE,
                    "init": {"cmd": ["sh", "-c", "echo in a container; exit 5"]},
                    "restart": {"policy": "no"},
                    "metadata": {"taxiway.test": TEST_LABEL},
                }
            },
        )
        assert status == 200, made
        machine = runtime.machines[made["id"]]
        assert machine.driver.name == "docker"
        await until(lambda: machine.state.value == "stopped")
        assert machine.info.exit_code == 5
        assert runtime.driver.name == "process"
        engine = client()
        assert engine.api.containers(all=True, filters=scope_filter(runtime.scope))
        # updated to the app's own image, it leaves its container for the app's driver
        status, updated = await api.call(
            "POST",
            f"/{made['id']}",
            {
                "config": {
                    "image": own_image(runtime),
                    "init": {"cmd": ["python3", "job.py", "1"]},
                    "restart": {"policy": "no"},
                }
            },
        )
        assert status == 200, updated
        assert machine.driver is runtime.driver
        assert engine.api.containers(all=True, filters=scope_filter(runtime.scope)) == []
        assert updated["state"] == "stopped"  # an update leaves a stopped machine stopped
        await machine.start()
        await until(lambda: machine.state.value == "stopped" and machine.info.exit_code == 3)

    run(folder, tmp_path / "state", body)
    engine = client()
    left = engine.api.containers(all=True, filters=scope_filter(scopes[0]))
    assert left == []
    assert engine.api.networks(filters=scope_filter(scopes[0])) == []


def test_the_job_app_files_are_stdlib_only() -> None:
    """The runner a real app would ship: nothing beyond the standard library."""
    source = (Path(__file__).parent / "jobapp" / "runner.py").read_text()
    imports = {line.split()[1] for line in source.splitlines() if line.startswith("import ")}
    assert imports <= {"json", "os", "sys", "urllib.error", "urllib.request"}
    assert os.sep  # the runner runs in the app's folder (the process driver's image)


def test_a_machine_whose_image_is_gone_is_kept_and_said_at_the_next_up(tmp_path: Path) -> None:
    problem = image_problem_or_none(BASE_IMAGE)
    if problem is not None:
        pytest.skip(problem)
    from taxiway.image.engine import client

    folder = copy_jobapp(tmp_path)
    state = tmp_path / "state"
    engine = client()
    tag = f"taxiway-test-{TEST_LABEL}/gone:{os.urandom(4).hex()}"
    engine.api.tag(BASE_IMAGE, tag)
    try:

        async def first(runtime: AppRuntime, api: Api) -> str:
            status, made = await api.call(
                "POST",
                "",
                {
                    "config": {
                        "image": tag,
                        "init": {"cmd": ["sleep", "300"]},
                        "stop_config": {"signal": "SIGKILL"},
                    }
                },
            )
            assert status == 200, made
            assert made["state"] == "started"
            return made["id"]

        machine_id = run(folder, state, first)
    finally:
        engine.api.remove_image(tag)

    async def second(runtime: AppRuntime, api: Api) -> None:
        assert machine_id not in runtime.machines
        (notice,) = [n for n in runtime.notices if machine_id in n]
        assert tag in notice
        record = runtime.store.get_machine(machine_id)
        assert record.state == "stopped" and record.api["resume"] is True

    run(folder, state, second)

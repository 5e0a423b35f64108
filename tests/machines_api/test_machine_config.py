"""The Machines API config checked key by key, and what a machine of it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxiway.machines_api.machine_config import (
    ConfigError,
    is_app_image,
    machine_spec,
    parse_request,
)
from taxiway.plan.dockerfile import ImageConfig
from taxiway.runtime.leftovers import reap
from taxiway.state.records import MachineRecord
from taxiway.state.store import Store

FULL = {
    "config": {
        "image": "registry.fly.io/jobs:deployment-1",
        "init": {"cmd": ["python3", "job.py", "1"]},
        "env": {"A": "1"},
        "guest": {"cpu_kind": "shared", "cpus": 2, "memory_mb": 512},
        "restart": {"policy": "on-failure", "max_retries": 3},
        "stop_config": {"signal": "SIGTERM", "timeout": 10_000_000_000},
        "metadata": {"fly_process_group": "worker"},
        "services": [
            {
                "protocol": "tcp",
                "internal_port": 8080,
                "autostop": True,
                "ports": [{"port": 443, "handlers": ["tls", "http"]}],
                "concurrency": {"type": "requests", "soft_limit": 5},
            }
        ],
        "files": [{"guest_path": "/etc/x", "raw_value": "aGk="}],
        "auto_destroy": True,
        "dns": {"skip_registration": True},
        "checks": {"alive": {"type": "tcp", "port": 8080}},
    },
    "name": "job-1",
    "skip_launch": False,
    "lease_ttl": 30,
}


def test_a_full_request_becomes_the_spec_it_describes() -> None:
    checked = parse_request(FULL)
    assert checked.name == "job-1" and checked.lease_ttl == 30
    image = ImageConfig(entrypoint=["/entry"], cmd=["ignored"], workdir="/app", env={"B": "2"})
    spec = machine_spec(checked.config, image=image)
    assert spec.group == "worker"
    assert spec.runs.argv == ["/entry", "python3", "job.py", "1"]
    assert spec.runs.workdir == "/app" and spec.image_env == {"B": "2"}
    assert spec.env == {"A": "1"}
    assert (spec.guest.cpus, spec.guest.memory_mb) == (2, 512)
    assert (spec.restart.policy, spec.restart.max_retries) == ("on-failure", 3)
    assert (spec.stop_config.signal, spec.stop_config.timeout) == ("SIGTERM", "10s")
    (service,) = spec.services
    assert (service.internal_port, service.autostop, service.concurrency.soft_limit) == (
        8080,
        "stop",
        5,
    )
    assert spec.files[0].raw_value == "aGk="


def test_defaults_are_the_platforms() -> None:
    checked = parse_request({"config": {"image": "x", "init": {"exec": ["/bin/true"]}}})
    spec = machine_spec(checked.config, image=ImageConfig())
    assert (spec.restart.policy, spec.restart.max_retries) == ("on-failure", 10)
    assert (spec.guest.cpus, spec.guest.memory_mb) == (1, 256)
    assert (spec.stop_config.signal, spec.stop_config.timeout) == ("SIGINT", "5s")
    assert spec.group == ""


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        ({"guest": {"memory_mb": True}}, "config.guest.memory_mb must be an integer"),
        ({"guest": {"cpus": -1}}, "config.guest.cpus must not be negative"),
        ({"init": {"cmd": "python3 job.py"}}, "config.init.cmd must be a list"),
        ({"init": {"cmd": ["a", 1]}}, "config.init.cmd[1] must be a string"),
        ({"services": [{"ports": []}]}, "config.services[0].internal_port is required"),
        ({"services": [{"internal_port": 70000}]}, "config.services[0].internal_port must be"),
        ({"stop_config": {"timeout": "soon"}}, "config.stop_config.timeout must be a duration"),
        ({"files": [{"guest_path": "/x"}]}, "config.files[0] needs one of raw_value"),
        ({"size": "huge-cpu-99x"}, "config.size must be a machine size"),
        ({"metadata": {"a": 1}}, "config.metadata.a must be a string"),
        ({"containers": [{"name": "x"}]}, "config.containers is not supported"),
    ],
)
def test_a_wrong_key_is_named_with_its_path(change: dict, sentence: str) -> None:
    body = {"config": {"image": "x", "init": {"exec": ["/bin/true"]}, **change}}
    with pytest.raises(ConfigError) as caught:
        parse_request(body)
    assert str(caught.value).startswith(sentence)
    assert caught.value.status == 400


def test_update_takes_current_version_and_create_does_not() -> None:
    body = {"config": {"image": "x"}, "current_version": "v"}
    assert parse_request(body, update=True).current_version == "v"
    with pytest.raises(ConfigError, match="current_version is not a key"):
        parse_request(body)


def test_empty_unknown_keys_are_let_through() -> None:
    """Clients send fields of newer platform versions empty; those are not typos."""
    checked = parse_request({"config": {"image": "x", "volumes": [], "newer": None}})
    assert checked.config == {"image": "x"}


def test_an_image_without_a_command_needs_one_in_the_config() -> None:
    with pytest.raises(ConfigError, match=r"config\.init\.cmd"):
        machine_spec({"image": "scratchy"}, image=ImageConfig())


def test_the_apps_own_image_is_known_by_its_names() -> None:
    own = {"taxiway/jobs-1234:v3"}
    assert is_app_image("registry.fly.io/jobs:deployment-01ABC", "jobs", own)
    assert is_app_image("registry.fly.io/jobs", "jobs", own)
    assert is_app_image("taxiway/jobs-1234:v3", "jobs", own)
    assert not is_app_image("registry.fly.io/jobsx:deployment-1", "jobs", own)
    assert not is_app_image("python:3.12-slim", "jobs", own)


def test_a_dead_daemons_running_api_machine_is_noted_to_start_again(tmp_path: Path) -> None:
    """`kill -9` of the daemon: the reaper marks its machines stopped; an API machine
    that ran is noted so that the next `up` starts it again."""
    with Store.open(tmp_path / "state") as store:
        store.ensure_app("jobs", tmp_path / "fly.toml")
        for machine_id, state in (("0" * 13 + "1", "started"), ("0" * 13 + "2", "stopped")):
            store.add_machine(
                MachineRecord(
                    id=machine_id,
                    app="jobs",
                    group="",
                    state=state,
                    region="local",
                    instance_id="01M8Y7M1TR315DSYVXFW1CDBPQ",
                    private_ip="fdaa::2",
                    api={"config": {"image": "x"}},
                )
            )
        reap(store, "jobs", tmp_path / "state")
        ran, ended = store.list_machines("jobs")
        assert ran.state == ended.state == "stopped"
        assert ran.api == {"config": {"image": "x"}, "resume": True}
        assert ended.api == {"config": {"image": "x"}}

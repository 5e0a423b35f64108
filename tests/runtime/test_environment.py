"""A machine's environment: [env] < secrets < the platform's runtime variables."""

from __future__ import annotations

from taxiway.runtime.environment import RuntimeVars, machine_env, private_ip, region_for


def runtime(**overrides: object) -> RuntimeVars:
    values: dict = {
        "app": "hello",
        "machine_id": "d8d4017a0d1438",
        "group": "web",
        "region": "ams",
        "private_ip": private_ip(7, 1),
        "image_ref": "registry.fly.io/hello:deployment-01K0C2RJDPYWESCYT00YJXZM9A",
        "version": "01K0C2RJDPYWESCYT00YJXZM9A",
        "memory_mb": 512,
        "primary_region": "ams",
    }
    values.update(overrides)
    return RuntimeVars(**values)


def test_layers_win_in_the_platforms_order() -> None:
    env = machine_env(
        {"A": "env", "B": "env", "PRIMARY_REGION": "xxx", "FLY_PROCESS_GROUP": "web"},
        {"B": "secret", "FLY_APP_NAME": "spoofed"},
        runtime(),
        extra={"PORT": "8080"},
        host={"PATH": "/usr/bin", "SECRET_HOST_THING": "no"},
    )
    assert env["A"] == "env"
    assert env["B"] == "secret"  # secrets win over [env]
    assert env["FLY_APP_NAME"] == "hello"  # the platform's variables win over both
    assert env["PRIMARY_REGION"] == "ams"
    assert env["PATH"] == "/usr/bin"
    assert "SECRET_HOST_THING" not in env
    assert env["PORT"] == "8080"


def test_runtime_variables_have_the_platforms_formats() -> None:
    env = runtime().as_env()
    assert env["FLY_ALLOC_ID"] == env["FLY_MACHINE_ID"] == "d8d4017a0d1438"
    assert env["FLY_VM_MEMORY_MB"] == "512"
    assert env["FLY_PRIVATE_IP"].startswith("fdaa:")
    assert len(env["FLY_MACHINE_VERSION"]) == 26
    assert set(env) >= {
        "FLY_APP_NAME",
        "FLY_MACHINE_ID",
        "FLY_ALLOC_ID",
        "FLY_REGION",
        "FLY_PROCESS_GROUP",
        "FLY_PRIVATE_IP",
        "FLY_IMAGE_REF",
        "FLY_MACHINE_VERSION",
        "FLY_VM_MEMORY_MB",
        "PRIMARY_REGION",
    }


def test_region_is_primary_region_or_local() -> None:
    assert region_for("ams") == "ams"
    assert region_for(None) == "local"


def test_private_addresses_are_unique_per_machine() -> None:
    assert len({private_ip(3, i) for i in range(500)}) == 500


def test_the_image_env_is_below_env_and_takes_base_image_values_from_the_host() -> None:
    env = machine_env(
        {"NODE_ENV": "from-env", "FLY_PROCESS_GROUP": "web"},
        {"TOKEN": "secret"},
        runtime(),
        image={
            "NODE_ENV": "production",
            "PYTHONUNBUFFERED": "1",
            "TOKEN": "image",
            "PATH": "/app/bin:${PATH}",
            "MISSING": "x${NOT_ON_THE_HOST}y",
            "FLY_REGION": "image",
        },
        host={"PATH": "/usr/bin", "NOT_ON_THE_HOST": "no"},
    )
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["NODE_ENV"] == "from-env"  # [env] wins over the image
    assert env["TOKEN"] == "secret"
    assert env["PATH"] == "/app/bin:/usr/bin"
    assert env["MISSING"] == "xy"  # only the host variables a machine gets stand in
    assert env["FLY_REGION"] == "ams"

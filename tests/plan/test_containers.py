"""Multi-container machines in the plan: a [build.compose] file or a machine_config
becomes the containers each machine runs, as flyctl's `internal/containerconfig`
turns them into a machine config (https://fly.io/docs/machines/guides-examples/multi-container-machines/);
what can't be read is one error naming the file and key, in `config validate` and at
plan time."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path

import pytest

from taxiway.config.diagnostics import Severity
from taxiway.config.loader import load_config
from taxiway.plan.containers import ContainerConfigError, Dependency, start_order
from taxiway.plan.dockerfile import ImageConfig
from taxiway.plan.machine import plan_machines

FLY_TOML = """\
app = "pod"
[build.compose]
[http_service]
  internal_port = 8080
"""

COMPOSE = """\
services:
  web:
    build: .
    environment:
      GREETING: hi
      WORKERS: 2
    command: ["python3", "web.py"]
  nginx:
    image: nginx:stable
    volumes:
      - ./nginx.conf:/etc/nginx/conf.d/default.conf:ro
    depends_on:
      web:
        condition: service_healthy
    healthcheck:
      test: ["CMD", "nginx", "-t"]
      retries: 4
  migrate:
    image: busybox
    entrypoint: /bin/migrate
    user: "1000"
    depends_on: [web]
"""

IMAGE = ImageConfig(entrypoint=["/entry.sh"], cmd=["serve"], ref="taxiway/pod:v1")


def app(tmp_path: Path, fly_toml: str = FLY_TOML, files: dict[str, str] | None = None) -> Path:
    """fly.toml and ``files`` (name: text) in ``tmp_path``."""
    (tmp_path / "fly.toml").write_text(textwrap.dedent(fly_toml))
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    return tmp_path / "fly.toml"


def plan(path: Path, image: ImageConfig = IMAGE):
    loaded = load_config(path)
    return plan_machines(loaded.config, base_dir=path.parent, image=image)


def problems(path: Path, severity: Severity) -> list[str]:
    return [d.message for d in load_config(path).diagnostics if d.severity is severity]


# -- compose ---------------------------------------------------------------------------


def test_each_compose_service_becomes_a_container_and_the_built_one_gets_the_image(
    tmp_path: Path,
) -> None:
    path = app(tmp_path, files={"compose.yaml": COMPOSE, "nginx.conf": "server {}\n"})
    spec = plan(path)["app"]
    web, nginx, migrate = spec.containers
    assert [c.name for c in spec.containers] == ["web", "nginx", "migrate"]  # file order
    assert (web.built, web.image) == (True, "taxiway/pod:v1")
    # The compose command replaces the image's CMD after its ENTRYPOINT, like fly.toml's.
    assert web.argv == ["/entry.sh", "python3", "web.py"] == spec.runs.argv
    assert web.env == {"GREETING": "hi", "WORKERS": "2"}
    assert (nginx.built, nginx.image, nginx.argv, nginx.cmd) == (False, "nginx:stable", None, None)
    assert nginx.depends_on == [Dependency(name="web", condition="healthy")]
    assert nginx.healthchecks[0].exec == ["nginx", "-t"]  # CMD left out
    assert nginx.healthchecks[0].failure_threshold == 4
    (conf,) = nginx.files
    assert conf.guest_path == "/etc/nginx/conf.d/default.conf"
    assert base64.b64decode(conf.raw_value or "") == b"server {}\n"
    assert migrate.entrypoint == ["/bin/migrate"]  # a string is one element
    assert migrate.user == "1000"
    assert migrate.depends_on == [Dependency(name="web", condition="started")]
    assert problems(path, Severity.ERROR) == problems(path, Severity.WARNING) == []


def test_the_compose_file_is_found_in_flyctls_order_or_named(tmp_path: Path) -> None:
    one = "services:\n  a:\n    build: .\n"
    two = "services:\n  b:\n    build: .\n"
    path = app(tmp_path, files={"docker-compose.yml": one, "compose.yml": two})
    assert [c.name for c in plan(path)["app"].containers] == ["b"]
    named = FLY_TOML.replace("[build.compose]", '[build.compose]\n  file = "docker-compose.yml"')
    path = app(tmp_path, named)
    assert [c.name for c in plan(path)["app"].containers] == ["a"]


def test_without_containers_a_machine_has_none(tmp_path: Path) -> None:
    path = app(tmp_path, 'app = "one"\n')
    assert plan(path)["app"].containers == []


def test_what_the_platform_leaves_out_is_a_warning(tmp_path: Path) -> None:
    compose = """\
    services:
      web:
        build: .
        ports: ["8080:8080"]
        restart: always
        volumes: ["data:/var/lib/data"]
        healthcheck:
          test: curl -f http://localhost:8080
    volumes:
      data: {}
    """
    path = app(tmp_path, files={"compose.yaml": textwrap.dedent(compose)})
    warnings = problems(path, Severity.WARNING)
    assert any("sets ports and restart" in w for w in warnings)
    assert any("data:/var/lib/data, which is ignored" in w and "[mounts]" in w for w in warnings)
    assert any("healthcheck.test runs" in w for w in warnings)
    assert problems(path, Severity.ERROR) == []


@pytest.mark.parametrize(
    ("compose", "expected"),
    [
        (
            "services:\n  a:\n    build: .\n  b:\n    build: ./b\n",
            "compose.yaml: only one service may have build (it gets the app's image), but a "
            "and b do",
        ),
        (
            "services:\n  a:\n    build: .\n    environment:\n      - A=1\n",
            "compose.yaml: services.a.environment is a list; write it as a map (NAME: value), "
            "the only form the platform reads",
        ),
        (
            "services:\n  a:\n    build: .\n  b:\n    command: [x]\n",
            "compose.yaml: services.b needs an image (only the service with build gets the "
            "app's image)",
        ),
        (
            "services:\n  a:\n    build: .\n    depends_on: [db]\n",
            "compose.yaml: services 'a' depends on 'db', which is not one of its services",
        ),
        (
            "services:\n  a:\n    build: .\n  b:\n    image: x\n    depends_on: [c]\n"
            "  c:\n    image: y\n    depends_on: [b]\n",
            "compose.yaml: the depends_on of the services make a cycle, so none of them can "
            "start first",
        ),
        ("services: {}\n", "compose.yaml defines no services"),
    ],
)
def test_compose_errors_name_the_file_and_key(tmp_path: Path, compose: str, expected: str) -> None:
    path = app(tmp_path, files={"compose.yaml": compose})
    assert problems(path, Severity.ERROR) == [expected]
    with pytest.raises(ContainerConfigError, match="^" + expected.replace("(", r"\(")[:40]):
        plan(path)


def test_a_missing_compose_file_is_a_warning_and_the_docker_build_refuses(
    tmp_path: Path,
) -> None:
    """fly.toml is valid without its compose file (flyctl reads it only to deploy, and
    the corpus has such files): validation warns, the plan has no containers, and the
    docker driver's build stops with the sentence."""
    from taxiway.image.for_release import build_release

    path = app(tmp_path)
    (warning,) = problems(path, Severity.WARNING)
    assert warning.startswith("[build.compose] finds no compose file next to fly.toml")
    assert warning.endswith("the docker driver needs it to run the machine")
    named = FLY_TOML.replace("[build.compose]", '[build.compose]\n  file = "pod.yaml"')
    path = app(tmp_path, named)
    assert problems(path, Severity.ERROR) == []
    assert all(spec.containers == [] for spec in plan(path).values())
    with pytest.raises(ContainerConfigError, match=r"^build\.compose\.file names pod\.yaml"):
        build_release(load_config(path), scope="s", app="a", progress=print)


# -- machine_config --------------------------------------------------------------------

MACHINE_CONFIG = {
    "containers": [
        {
            "name": "proxy",
            "image": "nginx:stable",
            "depends_on": [{"name": "app", "condition": "started"}],
            "files": [{"guest_path": "/etc/x.conf", "local_path": "x.conf"}],
            "restart": {"policy": "always"},
            "stop": {"signal": "SIGQUIT", "timeout": "3s"},
        },
        {"name": "app", "cmd": ["serve", "--fast"], "env": {"MODE": "pod"}},
    ]
}


def test_inline_machine_config_gives_the_app_container_the_image(tmp_path: Path) -> None:
    (tmp_path / "x.conf").write_text("x")
    toml = f"app = \"pod\"\nmachine_config = '{json.dumps(MACHINE_CONFIG)}'\n"
    spec = plan(app(tmp_path, toml))["app"]
    proxy, main = spec.containers
    assert (main.name, main.built, main.image) == ("app", True, "taxiway/pod:v1")
    assert main.argv == ["/entry.sh", "serve", "--fast"] == spec.runs.argv
    assert main.env == {"MODE": "pod"}
    assert (proxy.built, proxy.image) == (False, "nginx:stable")
    assert base64.b64decode(proxy.files[0].raw_value or "") == b"x"
    assert proxy.restart is not None and proxy.restart.policy == "always"
    assert (proxy.stop_signal, proxy.stop_timeout) == ("SIGQUIT", "3s")
    assert [c.name for c in start_order(spec.containers)] == ["app", "proxy"]


def test_a_machine_config_file_and_container_choose_the_built_one(tmp_path: Path) -> None:
    config = {"containers": [{"name": "one", "image": "a"}, {"name": "two"}]}
    (tmp_path / "machine.json").write_text(json.dumps(config))
    toml = 'app = "pod"\ncontainer = "two"\n[experimental]\n  machine_config = "machine.json"\n'
    spec = plan(app(tmp_path, toml))["app"]
    assert [(c.name, c.built) for c in spec.containers] == [("one", False), ("two", True)]
    # Without `container` and without one named app, the first gets the image; the
    # second then has none.
    path = app(tmp_path, toml.replace('container = "two"\n', ""))
    assert problems(path, Severity.ERROR) == [
        "machine.json: container 'two' needs an image (only 'one' gets the app's image)"
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("missing.json", "machine_config names missing.json, which can't be read next to fly.toml"),
        ("nope.txt", "machine_config must be inline JSON (starting with {) or a file ending in "
         ".json, not 'nope.txt'"),
        ('{"containers": [{"name": 3}]}', "machine_config is not a machine config: expected "
         "`str`, got `int` - at `$.containers[0].name`"),
    ],
)
def test_machine_config_errors(tmp_path: Path, value: str, expected: str) -> None:
    path = app(tmp_path, f"app = \"pod\"\nmachine_config = '{value}'\n")
    assert problems(path, Severity.ERROR) == [expected]
    with pytest.raises(ContainerConfigError):
        plan(path)


def test_container_must_name_one_of_the_machine_configs(tmp_path: Path) -> None:
    config = json.dumps({"containers": [{"name": "app"}]})
    path = app(tmp_path, f"app = \"pod\"\ncontainer = \"web\"\nmachine_config = '{config}'\n")
    assert problems(path, Severity.ERROR) == [
        "fly.toml container = 'web', but machine_config has no container by that name (it "
        "has app)"
    ]

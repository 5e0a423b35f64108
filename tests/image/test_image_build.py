"""Building the app's image on a real engine: what reaches the build, what is read back,
what the user is told when it fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from image_apps import BASE_IMAGE, Progress, write_app

from taxiway.image.build import BuildError, build_image, image_config_of, image_repository
from taxiway.image.engine import client
from taxiway.image.labels import APP, SCOPE
from taxiway.image.rootfs import copy_out
from taxiway.plan.dockerfile import ImageConfig

APP_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
ARG GREETING=hello
ENV APP_GREETING=$GREETING MODE="two words"
WORKDIR /srv/app
COPY . .
RUN echo "$GREETING" > /srv/app/greeting.txt
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat greeting.txt"]
"""

FLY_TOML = """\
app = "image-test"

[build.args]
  GREETING = "from-build-args"
"""


def files_in(image_id: str, folder: str, tmp_path: Path) -> set[str]:
    dest = copy_out(image_id, [folder], tmp_path / "copy")
    root = dest / folder.lstrip("/")
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_build_args_env_ignore_and_config_from_the_engine(scope: str, tmp_path: Path) -> None:
    loaded = write_app(
        tmp_path / "app",
        FLY_TOML,
        {
            "Dockerfile": APP_DOCKERFILE,
            ".dockerignore": "# comment\nsecret.txt\n",
            "keep.txt": "kept\n",
            "secret.txt": "must not reach the image\n",
        },
    )
    progress = Progress()
    built = build_image(loaded, scope=scope, app="image-test", progress=progress)

    assert built.id.startswith("sha256:") and len(built.id) == 71
    assert built.ref == built.id
    assert not built.cached
    assert built.config.entrypoint == ["/bin/sh", "-c"]
    assert built.config.cmd == ["cat greeting.txt"]
    assert built.config.workdir == "/srv/app"
    env = built.config.env
    assert "PATH" in env  # the base image's, which only the engine knows
    assert list(env)[-2:] == ["APP_GREETING", "MODE"]
    assert env["APP_GREETING"] == "from-build-args"
    assert env["MODE"] == "two words"

    # Docker says "Step 1/4 : FROM …", Podman "STEP 1/4: FROM …".
    assert any(line.upper().startswith("STEP 1/") for line in progress.lines)
    assert not any(line.lstrip().startswith("{") for line in progress.lines)
    assert not any("Running in" in line for line in progress.lines)

    attrs = client().api.inspect_image(built.id)
    labels = attrs["Config"]["Labels"]
    assert labels[SCOPE] == scope and labels[APP] == "image-test"
    assert attrs.get("RepoTags") in (None, [])  # tagging is tag_release's job

    content = files_in(built.id, "/srv/app", tmp_path)
    assert {"keep.txt", "greeting.txt", "Dockerfile", "fly.toml"} <= content
    assert "secret.txt" not in content
    greeting = (tmp_path / "copy" / "srv/app/greeting.txt").read_text()
    assert greeting == "from-build-args\n"

    again = Progress()
    second = build_image(loaded, scope=scope, app="image-test", progress=again)
    assert second.cached
    assert second.id == built.id
    assert any("Using cache" in line for line in again.lines)


def test_the_state_folder_never_reaches_the_image(scope: str, tmp_path: Path) -> None:
    """.taxiway holds the secrets' database and changes at every run: it is never sent,
    whatever .dockerignore says, so a second build is all cache even after a run."""
    loaded = write_app(
        tmp_path / "app",
        'app = "image-test"\n',
        {
            "Dockerfile": f"FROM {BASE_IMAGE}\nWORKDIR /srv\nCOPY . .\n",
            ".dockerignore": "!.taxiway\n",
            ".taxiway/taxiway.db": "secrets\n",
        },
    )
    built = build_image(loaded, scope=scope, app="image-test", progress=Progress())
    assert ".taxiway" not in files_in(built.id, "/srv", tmp_path)
    (tmp_path / "app" / ".taxiway" / "daemon.log").write_text("a run happened\n")
    again = build_image(loaded, scope=scope, app="image-test", progress=Progress())
    assert again.cached and again.id == built.id


def test_a_custom_ignorefile_anywhere_replaces_dockerignore(scope: str, tmp_path: Path) -> None:
    (tmp_path / "ignores").mkdir()
    (tmp_path / "ignores" / "custom.ignore").write_text("other.txt\n")
    loaded = write_app(
        tmp_path / "app",
        'app = "image-test"\n[build]\n  ignorefile = "../ignores/custom.ignore"\n',
        {
            "Dockerfile": f"FROM {BASE_IMAGE}\nWORKDIR /srv\nCOPY . .\n",
            ".dockerignore": "secret.txt\n",
            "secret.txt": "the custom ignorefile doesn't exclude me\n",
            "other.txt": "excluded\n",
        },
    )
    built = build_image(loaded, scope=scope, app="image-test", progress=Progress())
    content = files_in(built.id, "/srv", tmp_path)
    assert "other.txt" not in content
    assert {"secret.txt", ".dockerignore", "Dockerfile"} <= content


def test_a_dockerfile_outside_the_context_and_a_target_stage(scope: str, tmp_path: Path) -> None:
    dockerfile = f"""\
FROM {BASE_IMAGE} AS base
RUN echo base > /stage
CMD ["base"]

FROM base AS final
RUN echo final > /stage
CMD ["final"]
"""
    loaded = write_app(
        tmp_path / "app",
        'app = "image-test"\n[build]\n  dockerfile = "../docker/Dockerfile.multi"\n'
        '  build-target = "base"\n',
        {"../docker/Dockerfile.multi": dockerfile},
    )
    built = build_image(loaded, scope=scope, app="image-test", progress=Progress())
    assert built.config.cmd == ["base"]
    copy_out(built.id, ["/stage"], tmp_path / "copy")
    assert (tmp_path / "copy" / "stage").read_text() == "base\n"
    attrs = client().api.inspect_image(built.id)
    assert attrs["Config"]["Labels"][SCOPE] == scope  # the target stage carries the labels


def test_a_failing_step_names_the_step_and_keeps_the_tail(scope: str, tmp_path: Path) -> None:
    marker = f"first-line-{scope}"
    loaded = write_app(
        tmp_path / "app",
        'app = "image-test"\n',
        {
            "Dockerfile": f"FROM {BASE_IMAGE}\n"
            f"RUN echo {marker} && echo second-line\n"
            "RUN echo about-to-fail && exit 3\n"
        },
    )
    try:
        with pytest.raises(BuildError) as failed:
            build_image(loaded, scope=scope, app="image-test", progress=Progress())
    finally:
        remove_cache_of(marker)
    message = str(failed.value)
    assert message.startswith("building ")
    assert "Dockerfile failed at step 3/" in message
    # Docker: "… returned a non-zero code: 3"; Podman: "… while running runtime: exit status 3".
    assert "returned a non-zero code: 3" in message or "exit status 3" in message
    assert "\n" not in message
    assert "about-to-fail" in failed.value.tail
    assert marker in failed.value.tail
    assert len(failed.value.tail) <= 20


def remove_cache_of(marker: str) -> None:
    """The step a failed build committed stays as build cache, without labels: found by
    its command, which only this test's build has."""
    engine = client()
    for image in engine.api.images(all=True, filters={"dangling": True}):
        attrs = engine.api.inspect_image(image["Id"])
        if marker in " ".join((attrs.get("ContainerConfig") or {}).get("Cmd") or []):
            engine.api.remove_image(image["Id"])


def test_a_missing_dockerfile_is_named_with_its_key(tmp_path: Path) -> None:
    loaded = write_app(
        tmp_path / "app", 'app = "x"\n[build]\n  dockerfile = "deploy/Dockerfile.prod"\n', {}
    )
    with pytest.raises(BuildError, match=r"\[build\] dockerfile names .*Dockerfile\.prod"):
        build_image(loaded, scope="t-none", app="x", progress=Progress())

    bare = write_app(tmp_path / "bare", 'app = "x"\n', {})
    with pytest.raises(BuildError, match=r"no Dockerfile at .*Dockerfile; add one"):
        build_image(bare, scope="t-none", app="x", progress=Progress())


def test_buildpacks_are_refused_with_the_way_out(tmp_path: Path) -> None:
    loaded = write_app(
        tmp_path / "app",
        'app = "x"\n[build]\n  builder = "paketobuildpacks/builder:base"\n'
        '  buildpacks = ["gcr.io/paketo-buildpacks/nodejs"]\n',
        {"Dockerfile": "FROM scratch\n"},
    )
    with pytest.raises(BuildError, match=r"buildpacks.*add a Dockerfile"):
        build_image(loaded, scope="t-none", app="x", progress=Progress())


def test_a_missing_ignorefile_is_named(tmp_path: Path) -> None:
    loaded = write_app(
        tmp_path / "app",
        'app = "x"\n[build]\n  ignorefile = "nope.ignore"\n',
        {"Dockerfile": "FROM scratch\n"},
    )
    with pytest.raises(BuildError, match=r"\[build\] ignorefile names .*nope\.ignore"):
        build_image(loaded, scope="t-none", app="x", progress=Progress())


def test_build_image_uses_the_local_image(scope: str, tmp_path: Path) -> None:
    loaded = write_app(tmp_path / "app", f'app = "x"\n[build]\n  image = "{BASE_IMAGE}"\n', {})
    built = build_image(loaded, scope=scope, app="x", progress=Progress())
    assert built.id == client().images.get(BASE_IMAGE).id
    assert built.ref == BASE_IMAGE
    assert built.config.cmd == ["bash"]
    assert not built.cached


def test_an_image_that_cannot_be_pulled_is_one_sentence(engine_ready: None, tmp_path: Path) -> None:
    name = "registry.invalid/taxiway/nothing:v0"
    loaded = write_app(tmp_path / "app", f'app = "x"\n[build]\n  image = "{name}"\n', {})
    with pytest.raises(BuildError) as failed:
        build_image(loaded, scope="t-none", app="x", progress=Progress())
    message = str(failed.value)
    assert message.startswith(f"[build] image {name} is not on the Docker engine and pulling")
    assert "\n" not in message


def test_image_config_of_an_inspect() -> None:
    attrs = {
        "Config": {
            "Entrypoint": None,
            "Cmd": ["python", "-m", "app"],
            "WorkingDir": "",
            "Env": ["PATH=/usr/bin", "EQ=a=b", "EMPTY="],
        }
    }
    assert image_config_of(attrs) == ImageConfig(
        entrypoint=None,
        cmd=["python", "-m", "app"],
        workdir=None,
        env={"PATH": "/usr/bin", "EQ": "a=b", "EMPTY": ""},
    )
    assert image_config_of({}) == ImageConfig()


def test_image_repository_is_a_name_the_engine_accepts() -> None:
    assert image_repository("myapp-1a2b3c4d") == "taxiway/myapp-1a2b3c4d"
    assert image_repository("My_App.-x-1a2b3c4d") == "taxiway/my_app-x-1a2b3c4d"
    assert image_repository("_.weird__..name-00") == "taxiway/weird_name-00"

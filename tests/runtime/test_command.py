"""Which argv a machine runs: plan first, then the Dockerfile, else a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxiway.config.loader import load_config
from taxiway.plan.dockerfile import image_config, read_dockerfile
from taxiway.plan.machine import plan_machines
from taxiway.runtime.command import CommandError, resolve_argv


def plan(tmp_path: Path, toml: str) -> tuple[dict, object]:
    (tmp_path / "fly.toml").write_text(toml)
    loaded = load_config(tmp_path / "fly.toml")
    return plan_machines(loaded.config, base_dir=tmp_path), image_config(loaded.config, tmp_path)


def test_process_command_wins_and_keeps_the_entrypoint(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text('FROM python\nENTRYPOINT ["tini", "--"]\nCMD ["x"]\n')
    specs, image = plan(tmp_path, '[processes]\nweb = "python app.py --port 8080"\n')
    assert resolve_argv(specs["web"], image) == ["tini", "--", "python", "app.py", "--port", "8080"]


def test_experimental_exec_replaces_everything(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text('FROM python\nENTRYPOINT ["tini"]\nCMD ["x"]\n')
    specs, image = plan(tmp_path, '[experimental]\nexec = ["/bin/run", "it"]\n')
    assert resolve_argv(specs["app"], image) == ["/bin/run", "it"]


def test_dockerfile_cmd_is_used_when_fly_toml_has_none(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        'FROM python:3.12 AS build\nCMD ["build"]\n\nFROM python:3.12-slim\n'
        "WORKDIR /app\nWORKDIR src\n# comment\nCMD python \\\n  app.py\n"
    )
    specs, image = plan(tmp_path, 'app = "a"\n')
    assert resolve_argv(specs["app"], image) == ["/bin/sh", "-c", "python    app.py"]
    assert image.workdir == "/app/src"


def test_build_target_and_a_named_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.web").write_text(
        'FROM a AS base\nCMD ["base"]\nFROM base AS test\nFROM b AS prod\nCMD ["prod"]\n'
    )
    specs, image = plan(tmp_path, '[build]\ndockerfile = "Dockerfile.web"\nbuild-target = "test"\n')
    assert resolve_argv(specs["app"], image) == ["base"]  # inherited from the stage it's FROM


def test_new_entrypoint_resets_an_inherited_cmd(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text('FROM a AS one\nCMD ["c"]\nFROM one\nENTRYPOINT ["e"]\n')
    image = read_dockerfile(path)
    assert (image.entrypoint, image.cmd) == (["e"], None)


def test_nothing_to_run_says_what_to_add(tmp_path: Path) -> None:
    specs, image = plan(tmp_path, '[processes]\nworker = ""\n')
    with pytest.raises(CommandError) as info:
        resolve_argv(specs["worker"], image)
    assert "process group 'worker' has no command: add one under [processes]" in str(info.value)

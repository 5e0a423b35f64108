"""Which argv a machine runs: fly.toml first, then the Dockerfile, else a clear error; the
plan carries it (`MachineSpec.runs`), so every driver starts the same thing."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxiway.config.loader import load_config
from taxiway.plan.command import CommandError, oneoff_argv
from taxiway.plan.dockerfile import image_config, read_dockerfile
from taxiway.plan.machine import plan_machines


def plan(tmp_path: Path, toml: str) -> tuple[dict, object]:
    (tmp_path / "fly.toml").write_text(toml)
    loaded = load_config(tmp_path / "fly.toml")
    return plan_machines(loaded.config, base_dir=tmp_path), image_config(loaded.config, tmp_path)


def argv(specs: dict, group: str) -> list[str]:
    return specs[group].runs.argv


def test_process_command_wins_and_keeps_the_entrypoint(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text('FROM python\nENTRYPOINT ["tini", "--"]\nCMD ["x"]\n')
    specs, _image = plan(tmp_path, '[processes]\nweb = "python app.py --port 8080"\n')
    assert argv(specs, "web") == ["tini", "--", "python", "app.py", "--port", "8080"]


def test_experimental_exec_replaces_everything(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text('FROM python\nENTRYPOINT ["tini"]\nCMD ["x"]\n')
    specs, _image = plan(tmp_path, '[experimental]\nexec = ["/bin/run", "it"]\n')
    assert argv(specs, "app") == ["/bin/run", "it"]


def test_dockerfile_cmd_is_used_when_fly_toml_has_none(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        'FROM python:3.12 AS build\nCMD ["build"]\n\nFROM python:3.12-slim\n'
        "WORKDIR /app\nWORKDIR src\n# comment\nCMD python \\\n  app.py\n"
    )
    specs, image = plan(tmp_path, 'app = "a"\n')
    assert argv(specs, "app") == ["/bin/sh", "-c", "python    app.py"]
    assert image.workdir == "/app/src"


def test_build_target_and_a_named_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.web").write_text(
        'FROM a AS base\nCMD ["base"]\nFROM base AS test\nFROM b AS prod\nCMD ["prod"]\n'
    )
    specs, _image = plan(
        tmp_path, '[build]\ndockerfile = "Dockerfile.web"\nbuild-target = "test"\n'
    )
    assert argv(specs, "app") == ["base"]  # inherited from the stage it's FROM


def test_new_entrypoint_resets_an_inherited_cmd(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text('FROM a AS one\nCMD ["c"]\nFROM one\nENTRYPOINT ["e"]\n')
    image = read_dockerfile(path)
    assert (image.entrypoint, image.cmd) == (["e"], None)


def test_nothing_to_run_is_an_empty_argv_and_up_says_what_to_add(tmp_path: Path) -> None:
    from cli_runner import run_taxiway

    specs, _ = plan(tmp_path, 'app = "nothing"\n[processes]\nworker = ""\n')
    assert argv(specs, "worker") == []
    up = run_taxiway(tmp_path, "up", "-d")
    assert up.returncode == 1
    assert "process group 'worker' has no command: add one under [processes]" in up.stderr
    run_taxiway(tmp_path, "down")


def test_the_plan_says_what_one_off_machines_run_after(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text('FROM python\nENTRYPOINT ["tini", "--"]\nWORKDIR /srv\n')
    specs, _ = plan(tmp_path, '[build]\nimage = "ghcr.io/me/app:1"\n[processes]\nweb = "run"\n')
    runs = specs["web"].runs
    assert (runs.entrypoint, runs.workdir, runs.image) == (
        ["tini", "--"],
        "/srv",
        "ghcr.io/me/app:1",
    )
    assert oneoff_argv("manage.py migrate", runs.entrypoint, "release command") == [
        "tini",
        "--",
        "manage.py",
        "migrate",
    ]
    with pytest.raises(CommandError, match="can't shell split the release command"):
        oneoff_argv("echo 'unclosed", runs.entrypoint, "release command")


def test_config_machines_prints_the_real_command(tmp_path: Path) -> None:
    """The image's ENTRYPOINT before the group's command, as the machines will run it."""
    import json

    from cli_runner import run_taxiway

    (tmp_path / "Dockerfile").write_text('FROM python\nWORKDIR /app\nENTRYPOINT ["tini", "--"]\n')
    plan(tmp_path, 'app = "shown"\n[processes]\nweb = "gunicorn app:wsgi"\n')
    text = run_taxiway(tmp_path, "config", "machines")
    assert "  command   tini -- gunicorn app:wsgi (in /app)\n" in text.stdout
    shown = json.loads(run_taxiway(tmp_path, "config", "machines", "--json").stdout)
    assert shown["web"]["runs"]["argv"] == ["tini", "--", "gunicorn", "app:wsgi"]

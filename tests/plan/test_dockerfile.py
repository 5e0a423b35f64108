"""The image's ENV, read from the Dockerfile as docker builds it, and put in the plan."""

from __future__ import annotations

from pathlib import Path

from taxiway.config.loader import load_config
from taxiway.plan.dockerfile import read_dockerfile
from taxiway.plan.machine import plan_machines


def env_of(tmp_path: Path, dockerfile: str, target: str | None = None) -> dict[str, str]:
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile)
    return read_dockerfile(path, target).env


def test_pairs_quotes_and_the_legacy_form(tmp_path: Path) -> None:
    env = env_of(
        tmp_path,
        "FROM python:3.12-slim\n"
        'ENV PYTHONUNBUFFERED=1 GREETING="hello world" ESCAPED=a\\ b\n'
        "ENV NODE_ENV production\n"
        "ENV LEGACY   two  words kept\n"
        "ENV SINGLE='$HOME stays' EMPTY=\n",
    )
    assert env == {
        "PYTHONUNBUFFERED": "1",
        "GREETING": "hello world",
        "ESCAPED": "a b",
        "NODE_ENV": "production",
        "LEGACY": "two  words kept",
        "SINGLE": "$HOME stays",
        "EMPTY": "",
    }


def test_references_to_earlier_env_and_arg_values_with_defaults(tmp_path: Path) -> None:
    env = env_of(
        tmp_path,
        "ARG PYTHON_VERSION=3.12\n"
        "FROM python:${PYTHON_VERSION}\n"
        "ARG PYTHON_VERSION\n"
        "ARG APP_HOME=/srv/app\n"
        "ENV HOME_DIR=$APP_HOME LOGS=${APP_HOME}/logs VERSION=py${PYTHON_VERSION}\n"
        "ENV MODE=${MODE:-development} FLAG=${APP_HOME:+on} OFF=${NOPE:+on}\n"
        "ENV abc=hello\n"
        "ENV abc=bye def=$abc\n",
    )
    assert env == {
        "HOME_DIR": "/srv/app",
        "LOGS": "/srv/app/logs",
        "VERSION": "py3.12",
        "MODE": "development",
        "FLAG": "on",
        "OFF": "",
        "abc": "bye",
        "def": "hello",  # a reference reads the value from before its instruction
    }
    assert "APP_HOME" not in env  # an ARG is not part of the image's environment


def test_continuations_and_comments_inside_them(tmp_path: Path) -> None:
    env = env_of(
        tmp_path,
        "FROM node:20\nENV A=1 \\\n    # a comment inside\n    B=2 \\\n    C=3\nCMD node x\n",
    )
    assert env == {"A": "1", "B": "2", "C": "3"}


def test_only_the_built_stage_and_what_it_inherits(tmp_path: Path) -> None:
    dockerfile = (
        "FROM python:3.12 AS base\nENV SHARED=1\n"
        "FROM base AS build\nENV BUILD_ONLY=1\n"
        "FROM golang AS tools\nENV GOPATH=/go\n"
        "FROM base AS runtime\nENV RUNTIME=1 SHARED=2\n"
    )
    assert env_of(tmp_path, dockerfile) == {"SHARED": "2", "RUNTIME": "1"}
    assert env_of(tmp_path, dockerfile, "build") == {"SHARED": "1", "BUILD_ONLY": "1"}


def test_a_variable_of_the_base_image_is_left_for_the_runtime(tmp_path: Path) -> None:
    env = env_of(tmp_path, 'FROM python\nENV PATH="/app/.venv/bin:$PATH" LD=${LD_LIBRARY_PATH}\n')
    assert env == {"PATH": "/app/.venv/bin:${PATH}", "LD": "${LD_LIBRARY_PATH}"}


def test_the_plan_carries_the_image_env_of_every_group(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM python\nENV PYTHONUNBUFFERED=1\n")
    (tmp_path / "fly.toml").write_text(
        'app = "a"\n[env]\nLOG = "x"\n[processes]\nweb = "w"\nworker = "k"\n'
    )
    loaded = load_config(tmp_path / "fly.toml")
    specs = plan_machines(loaded.config, base_dir=tmp_path)
    for spec in specs.values():
        assert spec.image_env == {"PYTHONUNBUFFERED": "1"}
        assert spec.env["LOG"] == "x" and "PYTHONUNBUFFERED" not in spec.env

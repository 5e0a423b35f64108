"""Finding the engine and the sentences said when it is missing; labels and filters."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import docker.errors
import pytest
import requests.exceptions

from taxiway.image import engine
from taxiway.image.engine import EngineError, engine_error, engine_problem
from taxiway.image.labels import labels, scope_filter


def test_a_missing_socket_is_said_without_importing_the_sdk(tmp_path: Path) -> None:
    address = f"unix://{tmp_path}/docker.sock"
    code = (
        "import sys\n"
        "from taxiway.image.engine import engine_problem\n"
        "print(engine_problem())\n"
        "print('docker' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DOCKER_HOST": address},
        capture_output=True,
        text=True,
        check=True,
    )
    problem, imported = done.stdout.splitlines()
    assert problem == f"no Docker engine answers at {address} (there is no {tmp_path}/docker.sock)"
    assert imported == "False"


def test_a_socket_nobody_listens_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "dead.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))  # bound, never listening: connections are refused
    try:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        monkeypatch.setattr(engine, "_cached", None)
        assert engine_problem() == f"no Docker engine answers at unix://{path} (connection refused)"
        with pytest.raises(EngineError) as missing:
            engine.client()
        message = str(missing.value)
        assert message.startswith(f"no Docker engine answers at unix://{path}")
        assert message.endswith("or point DOCKER_HOST at one")
        assert "`bash .ci/engine`" in message
    finally:
        listener.close()


def test_engine_errors_are_one_sentence_naming_what() -> None:
    class Response:
        status_code = 409
        reason = "Conflict"
        url = "http+docker://localhost/v1.41/images/x"

    refused = docker.errors.APIError(
        "409 Client Error", response=Response(), explanation="conflict: image is in use\nmore"
    )
    assert str(engine_error(refused, "image taxiway/x:v3")) == (
        "the Docker engine refused image taxiway/x:v3: conflict: image is in use"
    )
    missing = docker.errors.ImageNotFound("404", explanation="No such image: taxiway/x:v3")
    assert str(engine_error(missing, "image taxiway/x:v3")) == (
        "image taxiway/x:v3 does not exist on the Docker engine (No such image: taxiway/x:v3)"
    )
    lost = requests.exceptions.ConnectionError(ConnectionRefusedError(111, "Connection refused"))
    said = str(engine_error(lost, "image taxiway/x:v3"))
    assert "while working on image taxiway/x:v3 (connection refused)" in said
    assert "\n" not in said
    already = EngineError("as it was")
    assert engine_error(already, "anything") is already


def test_labels_and_the_scope_filter() -> None:
    assert labels("app-1a2b3c4d", "app", machine="m1", group="web", release=3, other=None) == {
        "taxiway.scope": "app-1a2b3c4d",
        "taxiway.app": "app",
        "taxiway.machine": "m1",
        "taxiway.group": "web",
        "taxiway.release": "3",
    }
    assert labels("s", "a", test="image")["taxiway.test"] == "image"
    assert scope_filter("app-1a2b3c4d") == {"label": ["taxiway.scope=app-1a2b3c4d"]}

"""`taxiway console` in a container of the release's image, as the platform runs
`fly console` in a throwaway machine of the app's image
(https://fly.io/docs/flyctl/console/).

An interactive terminal is what the docker CLI does best (raw mode, resizes, the
escape sequence), so the console runs `docker run --rm -it` rather than attaching
through the SDK; it joins the app's network, so the machines are reachable by their
private addresses. The environment goes in a 0600 file, never on the command line,
where every user of the host could read the secrets in `ps`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

from taxiway.image.engine import EngineError
from taxiway.image.labels import labels
from taxiway.runtime.drivers.engine_scope import network_name


def run_console(
    *, image: str, argv: list[str], env: dict[str, str], scope: str, app: str, machine_id: str
) -> int:
    """Run ``argv`` in a fresh container of ``image`` on the app's network, attached to
    this terminal; its exit code."""
    docker = shutil.which("docker")
    if docker is None:
        raise EngineError(
            "taxiway console runs the app's image with the docker command, which is not "
            "installed; install Docker's CLI (Debian: docker.io)"
        )
    fd, env_file = tempfile.mkstemp(prefix="taxiway-console-", suffix=".env")
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp made it 0600
            for key, value in env.items():
                if "\n" not in value:
                    out.write(f"{key}={value}\n")
        command = [docker, "run", "--rm", "-i", "--init"]
        if sys.stdin.isatty() and sys.stdout.isatty():
            command.append("-t")
        for key, value in labels(scope, app, machine=machine_id, group="fly_app_console").items():
            command += ["--label", f"{key}={value}"]
        network = network_name(scope)
        if _network_exists(docker, network):
            command += ["--network", network, "--add-host", "host.taxiway.internal:host-gateway"]
        command += ["--hostname", machine_id, "--env-file", env_file]
        command += ["--entrypoint", argv[0], image, *argv[1:]]
        return subprocess.run(command, check=False).returncode
    finally:
        with contextlib.suppress(OSError):
            os.unlink(env_file)


def _network_exists(docker: str, network: str) -> bool:
    """Whether the app's network is there (a running app): else the console runs on the
    engine's default network, and can't reach machines by their private addresses."""
    done = subprocess.run(
        [docker, "network", "inspect", network], capture_output=True, check=False
    )
    return done.returncode == 0

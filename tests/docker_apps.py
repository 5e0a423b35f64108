"""What the end-to-end tests of the docker driver do to an app as a user would: its
status, its edge's address, HTTP through the edge (plain, or over the edge's https with
the app's local CA, as a browser that trusts it follows ``force_https``), and cleaning up
what the engine keeps for it (the images are labelled ``taxiway.scope=<scope>``).
Shared by tests/cli/test_docker_up.py and tests/cli/test_real_apps.py."""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

from cli_runner import run_taxiway as taxiway

#: The environment that picks the docker driver (tests pin `process` by default).
DOCKER = {"TAXIWAY_DRIVER": "docker"}


def scope_of(folder: Path) -> str:
    """The scope of the app in ``folder``: what its containers, network and images are
    labelled with in the engine."""
    from taxiway.config.loader import load_config
    from taxiway.config.names import app_name_for
    from taxiway.runtime.scope import scope_for

    loaded = load_config(folder / "fly.toml")
    return scope_for(app_name_for(folder / "fly.toml", loaded.config.app), folder / ".taxiway")


def remove_images(folder: Path) -> None:
    """Remove every image taxiway built for the app in ``folder`` (by its scope label)."""
    import docker

    client = docker.from_env()
    for image in client.images.list(filters={"label": f"taxiway.scope={scope_of(folder)}"}):
        for tag in image.tags:
            client.images.remove(tag, force=True)


def containers(folder: Path) -> list[Any]:
    """The engine's containers of the app in ``folder``, running or not."""
    import docker

    client = docker.from_env()
    return client.containers.list(all=True, filters={"label": f"taxiway.scope={scope_of(folder)}"})


def status(folder: Path) -> dict[str, Any]:
    """`taxiway status --json` of the app in ``folder``."""
    result = taxiway(folder, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def edge_url(folder: Path, port: int = 80) -> str:
    """The edge's URL for the app's public ``port`` (80: plain http; 443: https), with
    the address it really got (a port this host won't give is mapped)."""
    edge = next(b for b in status(folder)["edge"] if b["port"] == port)
    return f"{'https' if port == 443 else 'http'}://{edge['address']}"


def ca_context(folder: Path) -> ssl.SSLContext:
    """A TLS context that trusts only the app's local CA (`taxiway certs`), as a user's
    browser does once they trusted it."""
    ca_cert = json.loads(taxiway(folder, "certs", "--json").stdout)["ca_cert"]
    return ssl.create_default_context(cafile=ca_cert)


def get(
    url: str,
    want: str | None = None,
    timeout: float = 30,
    *,
    context: ssl.SSLContext | None = None,
) -> str:
    """The body of ``url`` once it answers (and contains ``want``, when given), retrying
    until ``timeout``; redirects are followed (to https with ``context``)."""
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        try:
            with opener.open(url, timeout=5) as response:
                body = response.read().decode()
            if want is None or want in body:
                return body
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} answered {body!r}, not {want!r}")

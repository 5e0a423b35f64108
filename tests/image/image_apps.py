"""Helpers for the image tests: app folders, progress collection, cleaning up a scope."""

from __future__ import annotations

import contextlib
from pathlib import Path

from taxiway.config.loader import LoadedConfig, load_config

BASE_IMAGE = "debian:bookworm-slim"
#: On everything these tests create directly (not through taxiway's own labels).
TEST_LABEL = {"taxiway.test": "image"}


def remove_scope(scope: str) -> None:
    import docker.errors

    from taxiway.image.build import image_repository
    from taxiway.image.engine import client
    from taxiway.image.labels import scope_filter

    engine = client()
    for container in engine.containers.list(all=True, filters=scope_filter(scope)):
        container.remove(force=True)
    for image in engine.api.images(name=image_repository(scope)):
        for tag in image.get("RepoTags") or []:
            if tag.startswith(image_repository(scope) + ":"):
                with contextlib.suppress(docker.errors.APIError):
                    engine.api.remove_image(tag)
    for image in engine.api.images(filters=scope_filter(scope)):
        with contextlib.suppress(docker.errors.NotFound):
            engine.api.remove_image(image["Id"], force=True)


def write_app(folder: Path, fly_toml: str, files: dict[str, str]) -> LoadedConfig:
    """An app folder with ``fly.toml`` and ``files`` (paths relative to it), loaded."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fly.toml").write_text(fly_toml)
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return load_config(folder / "fly.toml")


class Progress:
    """Collects what a build reports, line by line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

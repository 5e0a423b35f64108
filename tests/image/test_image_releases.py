"""Release tags per state folder, and pruning that removes only this folder's images."""

from __future__ import annotations

import contextlib
import io
import secrets
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest
from image_apps import BASE_IMAGE, TEST_LABEL, Progress, remove_scope, write_app

from taxiway.image.build import (
    BuiltImage,
    build_image,
    image_repository,
    prune_images,
    release_image,
    tag_release,
)
from taxiway.image.engine import client


def build_variant(scope: str, folder: Path, marker: str) -> BuiltImage:
    """A distinct image of ``scope`` (``marker`` changes its content)."""
    loaded = write_app(
        folder,
        'app = "image-test"\n',
        {"Dockerfile": f'FROM {BASE_IMAGE}\nRUN echo {marker} > /marker\nCMD ["{marker}"]\n'},
    )
    return build_image(loaded, scope=scope, app="image-test", progress=Progress())


def exists(ref: str) -> bool:
    try:
        client().api.inspect_image(ref)
    except docker.errors.NotFound:
        return False
    return True


@pytest.fixture
def other_scope(engine_ready: None) -> Iterator[str]:
    value = f"t-{secrets.token_hex(4)}"
    yield value
    remove_scope(value)


@pytest.fixture
def unlabelled_image(engine_ready: None) -> Iterator[str]:
    """An image built without taxiway's labels (only the tests' own)."""
    engine = client()
    dockerfile = io.BytesIO(f"FROM {BASE_IMAGE}\nRUN echo {secrets.token_hex(4)} > /x\n".encode())
    image, _ = engine.images.build(fileobj=dockerfile, labels=TEST_LABEL, rm=True)
    yield image.id
    with contextlib.suppress(docker.errors.NotFound):
        engine.api.remove_image(image.id, force=True)


def test_tag_release_and_release_image(scope: str, tmp_path: Path) -> None:
    built = build_variant(scope, tmp_path / "a", "one")
    tag = tag_release(built.id, scope, 1)
    assert tag == f"{image_repository(scope)}:v1"
    found = release_image(scope, 1)
    assert found is not None
    assert found.id == built.id and found.ref == tag and found.config == built.config
    assert release_image(scope, 2) is None

    again = build_variant(scope, tmp_path / "a", "one")
    assert again.cached  # lands on an id a release tag already has


def test_prune_removes_only_this_folders_images(
    scope: str, other_scope: str, unlabelled_image: str, tmp_path: Path
) -> None:
    engine = client()
    repository = image_repository(scope)
    first = build_variant(scope, tmp_path / "a", "first")
    tag_release(first.id, scope, 1)
    tag_release(first.id, scope, 6)  # unchanged in a later release: two tags, one image
    kept = build_variant(scope, tmp_path / "a", "kept")
    tag_release(kept.id, scope, 2)
    in_use = build_variant(scope, tmp_path / "a", "in-use")
    tag_release(in_use.id, scope, 3)
    untagged = build_variant(scope, tmp_path / "a", "never-tagged")
    # The base image tagged as a release (as `[build] image` is): ours is only the tag.
    base_id = engine.images.get(BASE_IMAGE).id
    tag_release(base_id, scope, 4)
    # An image taxiway didn't build, whose only tag is a release tag: never deleted.
    tag_release(unlabelled_image, scope, 5)
    # Another state folder's release of the same app.
    theirs = build_variant(other_scope, tmp_path / "b", "first")
    tag_release(theirs.id, other_scope, 1)

    container = engine.containers.create(
        f"{repository}:v3", labels={**TEST_LABEL, "taxiway.scope": scope}
    )
    try:
        removed = prune_images(scope, keep=[2])
    finally:
        container.remove(force=True)

    assert f"{repository}:v1" in removed and f"{repository}:v6" in removed
    assert removed.count(first.id) == 1
    assert untagged.id in removed
    assert f"{repository}:v4" in removed and base_id not in removed
    assert not exists(first.id) and not exists(untagged.id)
    assert not exists(f"{repository}:v1") and not exists(f"{repository}:v4")
    assert exists(f"{repository}:v2") and exists(kept.id)
    assert exists(in_use.id)  # a container uses it: the engine refused, not an error
    assert exists(BASE_IMAGE)
    assert exists(unlabelled_image) and exists(f"{repository}:v5")
    assert exists(theirs.id) and exists(f"{image_repository(other_scope)}:v1")

    # What the container held back goes once it is gone.
    assert f"{repository}:v3" in prune_images(scope, keep=[2])
    assert not exists(in_use.id)

"""A release's image, with the docker driver: built (or taken from an earlier release)
once, tagged with the release, and turned into what the plan needs to say what every
machine runs (`taxiway.plan.dockerfile.ImageConfig`: entrypoint, cmd, workdir and env as
the engine reports them, the tag to run, and where its statics were copied out).

On the platform a deploy builds the image and a rollback runs an earlier release's image
again (https://fly.io/docs/launch/deploy/); taxiway keeps each release's image under the
tag ``taxiway/<scope>:v<version>`` (`taxiway.image.build.tag_release`) for that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

import msgspec

from taxiway.config.loader import LoadedConfig
from taxiway.image.build import (
    BuiltImage,
    build_image,
    prune_images,
    release_image,
    tag_release,
)
from taxiway.image.engine import EngineError
from taxiway.plan.dockerfile import ImageConfig

#: Under the state folder: each image's statics, copied out once per image.
IMAGES_DIR = "images"
#: Releases whose images are kept besides the running one, for rollbacks.
KEPT_RELEASES = 5


def statics_guest_paths(loaded: LoadedConfig, workdir: str | None) -> list[str]:
    """The absolute guest paths of the app's [[statics]] (relative ones are under the
    image's WORKDIR, as the platform resolves them)."""
    paths = []
    for static in loaded.config.statics or ():
        if static.guest_path:
            path = PurePosixPath(workdir or "/") / static.guest_path
            paths.append(str(path))
    return paths


def plan_image(
    built: BuiltImage, tag: str, loaded: LoadedConfig, state_dir: Path
) -> ImageConfig:
    """What the plan needs of ``built``, run as ``tag``: its settings, the tag, and its
    statics copied out to the state folder (once per image)."""
    rootfs = None
    guest_paths = statics_guest_paths(loaded, built.config.workdir)
    if guest_paths:
        from taxiway.image.rootfs import copy_out

        digest = built.id.removeprefix("sha256:")[:16]
        rootfs = str(copy_out(built.id, guest_paths, state_dir / IMAGES_DIR / digest))
    return msgspec.structs.replace(built.config, ref=tag, rootfs=rootfs)


def build_release(
    loaded: LoadedConfig, *, scope: str, app: str, progress: Callable[[str], None]
) -> BuiltImage:
    """Build (or take) the app's image for a new release, saying when nothing changed.
    A compose file or machine_config that can't be read stops it first (ContainerConfigError):
    the containers it describes are what the release runs."""
    from taxiway.plan.containers import read_containers

    read_containers(loaded.config, loaded.base_dir)
    built = build_image(loaded, scope=scope, app=app, progress=progress)
    if built.cached:
        progress("image unchanged")
    return built


def adopt(
    built: BuiltImage, *, scope: str, version: int, loaded: LoadedConfig, state_dir: Path
) -> ImageConfig:
    """Tag ``built`` as release ``version``'s image and return its plan settings."""
    tag = tag_release(built.id, scope, version)
    return plan_image(built, tag, loaded, state_dir)


def stored(
    *, scope: str, version: int, loaded: LoadedConfig, state_dir: Path
) -> tuple[BuiltImage, ImageConfig]:
    """Release ``version``'s image as it was tagged, or EngineError when it is gone."""
    built = release_image(scope, version)
    if built is None:
        raise EngineError(
            f"release v{version}'s image (taxiway/{scope}:v{version}) is no longer in the "
            "engine; deploy again to build it"
        )
    return built, plan_image(built, f"taxiway/{scope}:v{version}", loaded, state_dir)


def carry_over(image: ImageConfig | None, *, scope: str, version: int) -> None:
    """Tag the running image (``image``, as the plan has it) for release ``version`` too:
    a release that changes no code (new secrets) runs the same image, and a rollback to
    it or a console in it finds it by that tag. An engine that can't be asked leaves it
    to the next `up`, which tags the latest release's image."""
    if image is None or image.ref is None:
        return
    with contextlib.suppress(EngineError):
        tag_release(image.ref, scope, version)


def keep_versions(current: int, versions: Iterable[int]) -> set[int]:
    """The releases whose images stay: the running one and the last few before it."""
    older = sorted((v for v in versions if v <= current), reverse=True)
    return {current, *older[: KEPT_RELEASES + 1]}


def prune(scope: str, current: int, versions: Iterable[int]) -> list[str]:
    """Remove the release images no rollback will need (`keep_versions`); what went. An
    engine that can't be asked leaves them for the next time."""
    try:
        return prune_images(scope, keep_versions(current, versions))
    except EngineError:
        return []

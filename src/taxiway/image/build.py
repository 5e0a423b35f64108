"""The app's image: built from its Dockerfile, or ``[build] image`` as it is, and tagged
per release.

What is built follows the platform's `fly deploy`
(https://fly.io/docs/reference/configuration/#the-build-section): ``[build] image``
runs a prebuilt image; otherwise the Dockerfile (``[build] dockerfile``, relative to
fly.toml's folder, else ./Dockerfile) is built with the fly.toml's folder as the
context, ``[build.args]`` as build arguments, ``build-target`` as the stage, and
``ignorefile`` (else the context's .dockerignore) deciding what the context leaves out.
Buildpacks need a builder service this host doesn't run, so they are refused with the
way out (a Dockerfile).

How a machine starts (entrypoint, cmd, workdir, env) is read back from the engine's
image, not the Dockerfile: the engine knows what the base image contributed.
"""

from __future__ import annotations

import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from taxiway.errors import TaxiwayError
from taxiway.image.engine import client, engine_error, explanation, is_podman
from taxiway.image.labels import SCOPE, labels, scope_filter
from taxiway.plan.dockerfile import ImageConfig

if TYPE_CHECKING:
    import docker

    from taxiway.config.loader import LoadedConfig

#: How many lines of a failed build's output `BuildError.tail` keeps.
TAIL_LINES = 20


class BuildError(TaxiwayError):
    """The image couldn't be built or obtained. ``tail`` holds the build's last output
    lines (empty when nothing was built), for the caller to print under the sentence."""

    def __init__(self, message: str, tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.tail: list[str] = list(tail or [])


class BuiltImage(msgspec.Struct, frozen=True):
    """An image ready to create machines from."""

    #: The engine's full image id, ``sha256:…``.
    id: str
    #: What a container is created from: the id, or a tag naming it.
    ref: str
    #: How a machine starts, from the engine's inspect of the image.
    config: ImageConfig
    #: True when nothing was rebuilt (every step came from the engine's cache, or the
    #: image is one this state folder already had): a caller says "image unchanged".
    cached: bool


def image_repository(scope: str) -> str:
    """``taxiway/<scope>``, spelt as the engine allows a repository name (lowercase,
    separators only between letters and digits). Tags are per state folder, not per app:
    the scope's hash keeps two checkouts of one app apart."""
    name = re.sub(r"[^a-z0-9._-]+", "-", scope.lower())
    name = re.sub(r"[._-]*-[._-]*", "-", name)  # a run of separators becomes one dash
    name = re.sub(r"[._]{2,}", "_", name).strip("._-")
    return f"taxiway/{name or 'app'}"


def image_config_of(attrs: dict[str, Any]) -> ImageConfig:
    """Entrypoint, cmd, workdir and env (in order) from an image's inspect attrs."""
    config = attrs.get("Config") or {}
    env: dict[str, str] = {}
    for item in config.get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    return ImageConfig(
        entrypoint=_argv(config.get("Entrypoint")),
        cmd=_argv(config.get("Cmd")),
        workdir=config.get("WorkingDir") or None,
        env=env,
    )


def _argv(value: object) -> list[str] | None:
    if isinstance(value, str):  # very old engines gave a shell string
        return ["/bin/sh", "-c", value]
    if isinstance(value, list) and value:
        return [str(v) for v in value]
    return None


def build_image(
    loaded: LoadedConfig, *, scope: str, app: str, progress: Callable[[str], None]
) -> BuiltImage:
    """The app's image for a deploy, built or pulled; its output goes to ``progress``
    one readable line at a time. The image is not tagged: `tag_release` does that once
    the release has a number."""
    build = loaded.config.build
    if build is not None and build.image:
        return _prebuilt(build.image, scope, progress)
    dockerfile = _dockerfile(loaded)
    return _build(loaded, dockerfile, scope=scope, app=app, progress=progress)


def tag_release(image_id: str, scope: str, version: int) -> str:
    """Tag the image ``taxiway/<scope>:v<version>`` and return that tag.

    Tags are per state folder (its scope), not per app name: two checkouts of one app
    deploy their own releases and never overwrite each other's images."""
    repository = image_repository(scope)
    tag = f"v{version}"
    try:
        client().api.tag(image_id, repository, tag, force=True)
    except Exception as exc:
        raise engine_error(exc, f"image {_short(image_id)} (tagging {repository}:{tag})") from exc
    return f"{repository}:{tag}"


def release_image(scope: str, version: int) -> BuiltImage | None:
    """The image tagged for release ``version`` of this state folder, or None."""
    import docker.errors

    ref = f"{image_repository(scope)}:v{version}"
    try:
        attrs = client().api.inspect_image(ref)
    except docker.errors.NotFound:
        return None
    except Exception as exc:
        raise engine_error(exc, f"image {ref}") from exc
    return BuiltImage(id=attrs["Id"], ref=ref, config=image_config_of(attrs), cached=True)


def prune_images(scope: str, keep: Iterable[int]) -> list[str]:
    """Remove this state folder's release tags not in ``keep``, then its images that have
    no tag left; returns the tags and image ids removed.

    Only images carrying this scope's label are ever deleted: a ``[build] image`` tagged
    for a release loses our tag but stays, as does another folder's image. An image a
    container still uses stays too (the engine refuses; that is not an error). Call it
    after tagging the release being deployed: an untagged image of this scope counts as
    garbage."""
    import docker.errors

    engine = client()
    repository = image_repository(scope)
    keep_tags = {f"{repository}:v{n}" for n in keep}
    removed: list[str] = []
    try:
        listed = engine.api.images(name=repository)
    except Exception as exc:
        raise engine_error(exc, f"the images of {repository}") from exc
    for listed_image in listed:
        try:  # the listing filtered by name shows only the matching tags: we need all
            image = engine.api.inspect_image(listed_image["Id"])
        except docker.errors.NotFound:
            continue
        except Exception as exc:
            raise engine_error(exc, f"image {_short(listed_image['Id'])}") from exc
        tags = [short_tag(t) for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
        ours = ((image.get("Config") or {}).get("Labels") or {}).get(SCOPE) == scope
        for tag in list(tags):  # `tags` keeps what is still on the image
            if not re.fullmatch(re.escape(repository) + r":v\d+", tag) or tag in keep_tags:
                continue
            if len(tags) == 1 and not ours:
                continue  # untagging would delete an image that isn't this folder's
            try:
                answer = engine.api.remove_image(tag)
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    continue  # a container still uses it
                raise engine_error(exc, f"image {tag}") from exc
            tags.remove(tag)
            removed.append(tag)
            removed.extend(_deleted(answer, image["Id"]))
    try:
        dangling = engine.api.images(filters={**scope_filter(scope), "dangling": True})
    except Exception as exc:
        raise engine_error(exc, f"the untagged images of {repository}") from exc
    for image in dangling:
        if (image.get("Labels") or {}).get(SCOPE) != scope:
            continue
        try:
            answer = engine.api.remove_image(image["Id"])
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                continue
            raise engine_error(exc, f"image {_short(image['Id'])}") from exc
        removed.extend(_deleted(answer, image["Id"]))
    return removed


#: Podman names every image in full: a tag made through its Docker API is stored as
#: ``docker.io/taxiway/x:v1``, an image loaded from ``docker save`` as ``localhost/x``.
_FULL_NAME = re.compile(r"^(docker\.io/library/|docker\.io/|localhost/)")


def short_tag(tag: str) -> str:
    """``tag`` as Docker spells it (``taxiway/x:v1``), whichever engine listed it: taxiway
    compares and removes its release tags by that name, which both engines accept."""
    return _FULL_NAME.sub("", tag)


def _deleted(answer: object, image_id: str) -> list[str]:
    """``[image_id]`` when the engine's answer to a removal says it deleted that image
    (not just a tag; the untagged parents it also prunes are build cache, not listed)."""
    entries = answer if isinstance(answer, list) else []
    # Docker says "sha256:<hex>", Podman the bare hex.
    gone = {_hex(str(e.get("Deleted"))) for e in entries if isinstance(e, dict)}
    return [image_id] if _hex(image_id) in gone else []


def _hex(image_id: str) -> str:
    return image_id.removeprefix("sha256:")


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _scope_image_ids(engine: docker.DockerClient, scope: str) -> set[str]:
    """The ids this state folder's release tags point at: a build landing on one of
    them changed nothing."""
    try:
        return {i["Id"] for i in engine.api.images(name=image_repository(scope))}
    except Exception as exc:
        raise engine_error(exc, f"the images of {image_repository(scope)}") from exc


# ---------------------------------------------------------------- [build] image


def _prebuilt(name: str, scope: str, progress: Callable[[str], None]) -> BuiltImage:
    """The engine's copy of ``name``, pulled first when it has none."""
    import docker.errors

    engine = client()
    previous = _scope_image_ids(engine, scope)
    try:
        attrs = engine.api.inspect_image(name)
    except docker.errors.NotFound:
        _pull(engine, name, progress)
        try:
            attrs = engine.api.inspect_image(name)
        except Exception as exc:
            raise engine_error(exc, f"image {name}") from exc
    except Exception as exc:
        raise engine_error(exc, f"image {name}") from exc
    return BuiltImage(
        id=attrs["Id"], ref=name, config=image_config_of(attrs), cached=attrs["Id"] in previous
    )


def _pull(engine: docker.DockerClient, name: str, progress: Callable[[str], None]) -> None:
    import docker.errors
    import requests.exceptions

    progress(f"pulling {name}")

    def failed(reason: str) -> BuildError:
        return BuildError(
            f"[build] image {name} is not on the Docker engine and pulling it failed: {reason}"
        )

    try:
        for chunk in engine.api.pull(name, stream=True, decode=True):
            if "error" in chunk:
                raise failed(_first_line(str(chunk["error"])))
            line = _pull_line(chunk)
            if line:
                progress(line)
    except docker.errors.APIError as exc:
        raise failed(explanation(exc)) from exc
    except requests.exceptions.RequestException as exc:
        raise engine_error(exc, f"image {name}") from exc


def _pull_line(chunk: dict[str, Any]) -> str | None:
    """A pull's few lines worth reading: not its per-layer download counters."""
    status = str(chunk.get("status") or "")
    layer = chunk.get("id")
    if not status:
        return None
    if not layer:
        return status
    if status in ("Pull complete", "Already exists"):
        return f"{layer}: {status}"
    return None


# ---------------------------------------------------------------- the Dockerfile


def _dockerfile(loaded: LoadedConfig) -> Path:
    """The Dockerfile to build, or BuildError saying why there is none to build."""
    build = loaded.config.build
    named = build.dockerfile if build is not None else None
    if named:
        if "://" in named:
            raise BuildError(
                f"[build] dockerfile is a URL ({named}); taxiway builds a local file: "
                "download it next to fly.toml and name that file"
            )
        path = loaded.base_dir / named
        if not path.is_file():
            raise BuildError(
                f"[build] dockerfile names {_shown(path)}, which does not exist; "
                "fix the path (it is relative to fly.toml's folder)"
            )
        return path
    if build is not None and (build.builder or build.buildpacks):
        raise BuildError(
            "[build] builder/buildpacks need Fly's buildpack builders, which taxiway doesn't "
            "run; add a Dockerfile (or set [build] image to a prebuilt image)"
        )
    path = loaded.base_dir / "Dockerfile"
    if build is not None and build.builtin and not path.is_file():
        raise BuildError(
            f"[build] builtin ({build.builtin}) is not supported by taxiway; add a Dockerfile "
            "(or set [build] image to a prebuilt image)"
        )
    if not path.is_file():
        raise BuildError(
            f"there is no Dockerfile at {_shown(path)}; add one, or set [build] dockerfile "
            "or [build] image in fly.toml"
        )
    return path


def _shown(path: Path) -> str:
    """The path as the user would type it: relative to the current folder when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _ignore_patterns(loaded: LoadedConfig, context: Path) -> list[str]:
    """``[build] ignorefile`` (relative to fly.toml's folder; it may live anywhere), else
    the context's .dockerignore: the patterns docker reads, comments and blanks dropped."""
    build = loaded.config.build
    if build is not None and build.ignorefile:
        path = loaded.base_dir / build.ignorefile
        if not path.is_file():
            raise BuildError(
                f"[build] ignorefile names {_shown(path)}, which does not exist; "
                "fix the path (it is relative to fly.toml's folder)"
            )
    else:
        path = context / ".dockerignore"
        if not path.is_file():
            return []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise BuildError(f"cannot read {_shown(path)}: {exc.strerror or exc}") from exc
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


#: Never in a build context: taxiway's state folder (its database holds the app's
#: secrets; its logs and volumes change all the time and would defeat the cache).
ALWAYS_IGNORED = (".taxiway",)


#: Podman's build (buildah) applies the context's own ignore file again, preferring
#: .containerignore to .dockerignore; Docker's ignores both (the client filters).
PODMAN_IGNORE_FILE = ".containerignore"


def _context_tar(
    context: Path, dockerfile: Path, patterns: list[str], *, custom_ignore: bool = False
) -> tuple[Any, str]:
    """The build context as a tar in a temporary file (never whole in memory), and the
    Dockerfile's name inside it. A Dockerfile outside the context is added under a
    random name, as `docker build -f ../x` does; the Dockerfile is always sent, even
    when an ignore pattern matches it, as docker does.

    With ``custom_ignore`` (``[build] ignorefile``) on Podman, a .containerignore holding
    those patterns (and itself) is added, else buildah would apply the context's
    .dockerignore on top of them."""
    from docker.utils import build as build_utils

    try:
        inside = dockerfile.resolve().relative_to(context.resolve()).as_posix()
    except ValueError:
        inside = None
    try:
        if inside is not None:
            extra: tuple[str, str | None] = (inside, None)
        else:
            extra = (
                f".dockerfile.{secrets.token_hex(10)}",
                dockerfile.read_text("utf-8", "replace"),
            )
        tar = build_utils.tar(
            str(context), exclude=[*patterns, *ALWAYS_IGNORED], dockerfile=extra
        )
        if custom_ignore and is_podman():
            _add_podman_ignore(tar, [*patterns, *ALWAYS_IGNORED, PODMAN_IGNORE_FILE])
        return tar, extra[0]
    except OSError as exc:
        raise BuildError(
            f"cannot pack the build context {_shown(context)}: {exc.strerror or exc}"
        ) from exc


def _add_podman_ignore(tar_file: Any, patterns: list[str]) -> None:
    """Append (or replace) the context's .containerignore with ``patterns``."""
    import io
    import tarfile

    tar_file.seek(0)
    with tarfile.open(fileobj=tar_file, mode="a") as tar:
        data = "".join(f"{p}\n" for p in patterns).encode()
        info = tarfile.TarInfo(PODMAN_IGNORE_FILE)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    tar_file.seek(0)


def _build(
    loaded: LoadedConfig,
    dockerfile: Path,
    *,
    scope: str,
    app: str,
    progress: Callable[[str], None],
) -> BuiltImage:
    import docker.errors
    import requests.exceptions

    build = loaded.config.build
    context = loaded.base_dir
    patterns = _ignore_patterns(loaded, context)
    engine = client()
    previous = _scope_image_ids(engine, scope)
    custom_ignore = build is not None and bool(build.ignorefile)
    tar, name = _context_tar(context, dockerfile, patterns, custom_ignore=custom_ignore)
    log = _BuildLog(progress)
    shown = _shown(dockerfile)
    try:
        chunks = engine.api.build(
            fileobj=tar,
            custom_context=True,
            dockerfile=name,
            buildargs=dict(build.args or {}) if build is not None else {},
            target=build.build_target if build is not None else None,
            labels=_build_labels(scope, app),
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        for chunk in _chunks(chunks):
            if "error" in chunk:
                log.flush()
                reason = _first_line(str(chunk["error"]))
                where = f" at step {log.step}" if log.step else ""
                if log.base_image is not None:
                    reason = (
                        f"its base image {log.base_image} is not in the engine and could not "
                        f"be pulled ({reason})"
                    )
                raise BuildError(f"building {shown} failed{where}: {reason}", log.tail)
            log.feed(chunk)
        log.flush()
    except docker.errors.APIError as exc:
        raise BuildError(f"building {shown} failed: {explanation(exc)}", log.tail) from exc
    except requests.exceptions.RequestException as exc:
        raise engine_error(exc, f"the build of {shown}") from exc
    finally:
        tar.close()
    image_id = log.image_id
    if image_id is None:
        raise BuildError(f"building {shown} ended without an image", log.tail)
    try:
        attrs = engine.api.inspect_image(image_id)
    except Exception as exc:
        raise engine_error(exc, f"image {_short(image_id)} built from {shown}") from exc
    full_id = attrs["Id"]
    return BuiltImage(
        id=full_id,
        ref=full_id,
        config=image_config_of(attrs),
        cached=full_id in previous or log.all_cached,
    )


def _build_labels(scope: str, app: str) -> dict[str, str] | list[str]:
    """The build's labels. Podman turns each into a LABEL step, in the order it reads them:
    from a JSON object that order is random (a Go map), and a build whose LABEL steps came
    out in another order misses the cache. Podman also takes a list of ``key=value``, which
    keeps the order; Docker takes only the object."""
    wanted = labels(scope, app)
    if is_podman():
        return [f"{key}={value}" for key, value in wanted.items()]
    return wanted


def _chunks(stream: Iterator[Any]) -> Iterator[dict[str, Any]]:
    for chunk in stream:
        if isinstance(chunk, dict):
            yield chunk


# Docker's legacy builder says "Step 2/5 : RUN …" and " ---> Using cache"; Podman's
# compatible API (buildah) says "STEP 2/5: RUN …" and "--> Using cache <id>".
_STEP = re.compile(r"^STEP (\d+/\d+) ?: (\S+)", re.IGNORECASE)
_RESULT = re.compile(r"^\s*-+> ")
_CACHE = re.compile(r"^\s*-+> Using cache\b")
# Noise: Docker's " ---> Running in …", " ---> <id>", "Removing intermediate container …";
# Podman's "--> <id>" after each step, "COMMIT" and the bare image id at the end.
_NOISE = re.compile(
    r"^( ---> (Running in |[0-9a-f]{12}$)|Removing intermediate container "
    r"|--> [0-9a-f]{11,}$|COMMIT$|[0-9a-f]{64}$)"
)


class _BuildLog:
    """Turns the engine's build stream into lines for ``progress``, and keeps what the
    result needs: the current step, the last lines, the image id, whether all was cached."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self._progress = progress
        self._partial = ""
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.step: str | None = None
        self.image_id: str | None = None
        #: Per step: None until its first " ---> " line, then whether that said cache.
        self._step_cached: bool | None = None
        self._step_is_from = False
        #: The image a FROM step names, while that step runs (None: another step).
        self.base_image: str | None = None
        self._rebuilt = False
        self._steps = 0

    @property
    def all_cached(self) -> bool:
        return self._steps > 0 and not self._rebuilt

    def feed(self, chunk: dict[str, Any]) -> None:
        aux = chunk.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
            self.image_id = aux["ID"]  # one per finished stage: the last is the image
        if isinstance(chunk.get("stream"), str):
            self._partial += chunk["stream"]
            *lines, self._partial = self._partial.split("\n")
            for line in lines:
                self._line(line)
        elif chunk.get("status"):
            line = _pull_line(chunk)  # the engine pulling a FROM image
            if line:
                self._line(line)

    def flush(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = ""

    def _line(self, raw: str) -> None:
        line = raw.rstrip()
        if not line.strip():
            return
        step = _STEP.match(line)
        if step:
            self.step = step.group(1)
            self._steps += 1
            self._step_is_from = step.group(2).upper() == "FROM"
            words = [w for w in line[step.end() :].split() if not w.startswith("--")]
            self.base_image = words[0] if self._step_is_from and words else None
            self._step_cached = None
        elif _RESULT.match(line) and self._step_cached is None:
            self._step_cached = bool(_CACHE.match(line))
            if not self._step_cached and not self._step_is_from:
                self._rebuilt = True
        found = re.match(r"^Successfully built ([0-9a-f]{12,})$", line)
        if found and self.image_id is None:
            self.image_id = found.group(1)
        if not _NOISE.match(line) and not line.startswith("Successfully built "):
            self.tail.append(line)
            self._progress(line)


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0].rstrip(".") if stripped else "no reason given"

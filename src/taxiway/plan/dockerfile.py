"""What the app's image would say about starting a machine, read from its Dockerfile.

Without an image, taxiway reads the Dockerfile (`[build] dockerfile`, else
./Dockerfile) as docker builds it: the stage that would be built (``build_target``,
else the last), with what it inherits ``FROM`` an earlier stage of the same file. Its
ENTRYPOINT, CMD and WORKDIR decide what a machine runs (`taxiway.plan.command`);
its ENV is the environment the image gives every machine, below ``[env]``.

ENV is read as docker reads it: ``ENV a=b c="d e"`` and the legacy ``ENV key value``,
quotes and backslashes, ``$VAR``/``${VAR}``/``${VAR:-default}``/``${VAR:+alt}``
references to earlier ENV and ARG values (ARG defaults, as a build without
``--build-arg`` has them). A variable the Dockerfile doesn't define comes from the base
image, which isn't here: the reference is kept as ``${VAR}``, and the runtime fills it
from the host's own value of that variable, the host standing in for the base image
(``ENV PATH=/app/bin:$PATH`` keeps the host's PATH after /app/bin).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec

from taxiway.config.model import AppConfig


class ImageConfig(msgspec.Struct, frozen=True):
    """The parts of the built stage that decide how a machine starts."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    workdir: str | None = None
    #: The stage's ENV, in order; ``${VAR}`` where the base image would supply VAR.
    env: dict[str, str] = msgspec.field(default_factory=dict)
    #: For a built image (the docker driver): what a container is created from (its
    #: release's tag), and the host folder its statics were copied out to (None: the
    #: Dockerfile was only read, and the app's folder stands in for the image).
    ref: str | None = None
    rootfs: str | None = None


class _Stage(msgspec.Struct):
    name: str | None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    workdir: str | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)
    #: ARG values declared in this stage (not part of the image's environment).
    args: dict[str, str] = msgspec.field(default_factory=dict)

    def inherited(self, name: str | None) -> _Stage:
        """A stage built FROM this one: its settings and ENV, not its ARGs."""
        return _Stage(name, self.entrypoint, self.cmd, self.workdir, dict(self.env))


_INSTRUCTION = re.compile(r"^\s*([A-Za-z]+)\s+(.*)$")


def read_dockerfile(path: Path, target: str | None = None) -> ImageConfig:
    """ENTRYPOINT, CMD, WORKDIR and ENV of the last stage (or of ``target``)."""
    stages: list[_Stage] = []
    global_args: dict[str, str] = {}
    for instruction, args in _instructions(path.read_text(encoding="utf-8", errors="replace")):
        if instruction == "FROM":
            stages.append(_from(args, stages))
            continue
        if instruction == "ARG":
            _declare_args(args, stages[-1] if stages else None, global_args)
            continue
        if not stages:
            continue
        stage = stages[-1]
        if instruction in ("ENTRYPOINT", "CMD"):
            setattr(stage, instruction.lower(), _exec_form(args))
            if instruction == "ENTRYPOINT":
                stage.cmd = None  # docker resets an inherited CMD with a new ENTRYPOINT
        elif instruction == "WORKDIR":
            previous = stage.workdir or "/"
            workdir = _words(args, _known(stage))[0] if args.strip() else ""
            stage.workdir = str(Path(previous) / workdir)
        elif instruction == "ENV":
            stage.env.update(_env_pairs(args, _known(stage)))
    if not stages:
        return ImageConfig()
    chosen = stages[-1]
    if target:
        chosen = next((s for s in stages if s.name == target.lower()), chosen)
    return ImageConfig(
        entrypoint=chosen.entrypoint, cmd=chosen.cmd, workdir=chosen.workdir, env=chosen.env
    )


def _from(args: str, stages: list[_Stage]) -> _Stage:
    parts = [p for p in args.split() if not p.startswith("--")]  # --platform=…
    name = parts[2].lower() if len(parts) >= 3 and parts[1].lower() == "as" else None
    base = next((s for s in stages if parts and s.name == parts[0].lower()), None)
    return base.inherited(name) if base else _Stage(name)


def _declare_args(args: str, stage: _Stage | None, global_args: dict[str, str]) -> None:
    """``ARG NAME[=default] …``: before the first FROM a global default; in a stage a
    variable for what follows (a bare name takes the global default, if any)."""
    known = _known(stage) if stage is not None else dict(global_args)
    for word in _words(args, known):
        name, has_default, default = word.partition("=")
        if stage is None:
            global_args[name] = default
        elif has_default:
            stage.args[name] = default
        elif name in global_args:
            stage.args[name] = global_args[name]


def _known(stage: _Stage) -> dict[str, str]:
    """The variables an instruction of ``stage`` can refer to: ENV wins over ARG."""
    return {**stage.args, **stage.env}


def _env_pairs(args: str, known: dict[str, str]) -> dict[str, str]:
    """``a=b c="d e"``, or the legacy ``key value with spaces``; every reference reads
    the values from before this instruction, as docker does."""
    parts = args.split(None, 1)
    if parts and "=" not in parts[0]:  # legacy form: one variable, the rest its value
        rest = parts[1] if len(parts) > 1 else ""
        return {parts[0]: "".join(_words(rest, known, split=False))}
    pairs = {}
    for word in _words(args, known):
        key, _, value = word.partition("=")
        if key:
            pairs[key] = value
    return pairs


def _words(text: str, known: dict[str, str], *, split: bool = True) -> list[str]:
    """Split as docker's shell-word lexer does: whitespace separates words (unless not
    ``split``: one word, spaces kept); single quotes keep everything; double quotes keep
    spaces and expand references; a backslash keeps the next character."""
    words: list[str] = []
    word: list[str] = []
    in_word = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace() and split:
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            i += 1
            continue
        in_word = True
        if ch == "\\" and i + 1 < len(text):
            word.append(text[i + 1])
            i += 2
        elif ch == "'":
            end = text.find("'", i + 1)
            end = len(text) if end < 0 else end
            word.append(text[i + 1 : end])
            i = end + 1
        elif ch == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in '"\\$':
                    word.append(text[i + 1])
                    i += 2
                elif text[i] == "$":
                    expanded, i = _reference(text, i, known)
                    word.append(expanded)
                else:
                    word.append(text[i])
                    i += 1
            i += 1
        elif ch == "$":
            expanded, i = _reference(text, i, known)
            word.append(expanded)
        else:
            word.append(ch)
            i += 1
    if in_word:
        words.append("".join(word))
    return words


_BARE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}")


def _reference(text: str, at: int, known: dict[str, str]) -> tuple[str, int]:
    """Expand the reference starting at ``text[at]`` ("$"); returns it and where it ends."""
    m = _BRACED.match(text, at) or _BARE.match(text, at)
    if m is None:
        return "$", at + 1
    name = m.group(1)
    op = m.group(2) if m.re is _BRACED else None
    word = (m.group(3) or "") if m.re is _BRACED else ""
    if op in (":-", "-"):
        value = known.get(name) if op == "-" else known.get(name) or None
        return (value if value is not None else " ".join(_words(word, known))), m.end()
    if op in (":+", "+"):
        present = name in known if op == "+" else bool(known.get(name))
        return (" ".join(_words(word, known)) if present else ""), m.end()
    if name in known:
        return known[name], m.end()
    return "${" + name + "}", m.end()  # the base image's: the runtime fills it in


def _instructions(text: str) -> list[tuple[str, str]]:
    """Logical instructions: comments dropped, backslash continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue  # comments and blank lines may sit inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        m = _INSTRUCTION.match(pending)
        if m:
            out.append((m.group(1).upper(), m.group(2).strip()))
        pending = ""
    return out


def _exec_form(args: str) -> list[str]:
    """``["a", "b"]`` as is; the shell form becomes ``/bin/sh -c "…"`` like docker's."""
    if args.startswith("["):
        try:
            value = json.loads(args)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", args]


def dockerfile_path(config: AppConfig, base_dir: Path) -> Path | None:
    name = config.build.dockerfile if config.build and config.build.dockerfile else "Dockerfile"
    if "://" in name:
        return None
    path = base_dir / name
    return path if path.is_file() else None


def has_image(config: AppConfig, base_dir: Path) -> bool:
    """Whether the app has an image the platform would run: a Dockerfile, a prebuilt
    `[build] image`, or `[build.compose]`."""
    build = config.build
    if build is not None and (build.image or build.compose is not None):
        return True
    return dockerfile_path(config, base_dir) is not None


def image_config(config: AppConfig, base_dir: Path) -> ImageConfig:
    """The image's start settings, from the Dockerfile if there is one."""
    path = dockerfile_path(config, base_dir)
    if path is None:
        return ImageConfig()
    target = config.build.build_target if config.build else None
    try:
        return read_dockerfile(path, target)
    except OSError:
        return ImageConfig()  # unreadable: as if there were none

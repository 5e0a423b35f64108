"""Names taxiway derives where fly.toml leaves them out."""

from __future__ import annotations

import re
from pathlib import Path

#: A volume's name as the platform makes one: lowercase letters, digits and underscores,
#: at most 30 (the docs allow alphanumerics and underscores, e.g.
#: https://fly.io/docs/rails/advanced-guides/sqlite3/; the API refuses capitals and
#: names over 30 characters).
_VOLUME_NAME = re.compile(r"[a-z0-9_]{1,30}")


def volume_name_problem(name: str) -> str | None:
    """Why ``name`` is not a volume name the platform makes (a sentence), or None."""
    if _VOLUME_NAME.fullmatch(name):
        return None
    return (
        f"{name!r} is not a volume name: use lowercase letters, digits and underscores, "
        "at most 30 characters (e.g. app_data)"
    )


def volume_name_for(destination: str) -> str:
    """A volume name for a mount written without ``source`` (flyctl would send an empty one).

    ``/data`` → ``data``; the name is what `taxiway volumes` and the state store use.
    """
    tail = destination.rstrip("/").rsplit("/", 1)[-1]
    cleaned = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in tail).lower()
    return cleaned or "data"


def app_name_for(config_path: Path, app: str | None) -> str:
    """The app's name: ``app`` from fly.toml, else the folder fly.toml is in (like `fly launch`)."""
    if app:
        return app
    folder = config_path.resolve().parent.name.lower()
    cleaned = "".join(ch if ch.isalnum() else "-" for ch in folder).strip("-")
    return cleaned or "app"


#: The prefix of the variables the platform sets in every machine.
PLATFORM_ENV_PREFIX = "FLY_"


def platform_prefix_warning(what: str) -> str:
    """The warning for an ``[env]`` name or a secret starting with FLY_.

    The reference (https://fly.io/docs/reference/configuration/#the-env-variables-section)
    says such names are not allowed, yet the platform accepts them (production apps deploy
    with ``FLY_API_HOSTNAME`` in ``[env]``); on a machine the platform's own values are set
    last, so they win where a name collides.
    """
    return (
        f"{what}: the reference says env variable names cannot begin with FLY_ (as this could "
        "clash with the runtime environment); the platform accepts it, and a FLY_ variable "
        "the platform sets itself keeps the platform's value"
    )

"""Finding the Docker engine, and saying in one sentence when it isn't there or refuses.

The SDK is imported lazily: `taxiway config validate` and every command that never
touches an image must not pay for it. DOCKER_HOST is honoured (the SDK reads it), so a
Podman socket (`podman system service`) stands in for dockerd.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from taxiway.errors import TaxiwayError

if TYPE_CHECKING:
    import docker

#: Where the SDK and the docker CLI look when DOCKER_HOST is unset.
DEFAULT_ADDRESS = "unix:///var/run/docker.sock"

#: The API version the engine probe speaks: any engine of the last decade has it.
PROBE_API_VERSION = "1.24"

#: What to do when there is no engine, said at the end of every such error.
START_ONE = (
    "start Docker's engine (dockerd, or `bash .ci/engine` in a taxiway checkout) "
    "or point DOCKER_HOST at one"
)


class EngineError(TaxiwayError):
    """The Docker engine is missing, unreachable, or refused a request."""


def engine_address() -> str:
    """The engine's address as the SDK will use it (DOCKER_HOST, else the default socket)."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_ADDRESS


def _missing_socket(address: str) -> str | None:
    """A unix socket that doesn't exist: said without importing the SDK (~100 ms) or
    waiting for a connection that can't succeed."""
    if not address.startswith("unix://"):
        return None
    path = address[len("unix://") :]
    if os.path.exists(path):
        return None
    return f"no Docker engine answers at {address} (there is no {path})"


def engine_problem(timeout: float = 1.0) -> str | None:
    """None when an engine answers a ping, else a short phrase saying what is missing."""
    address = engine_address()
    missing = _missing_socket(address)
    if missing:
        return missing
    try:
        import docker
    except ImportError:
        return "the docker Python package is not installed (pip install 'docker>=7')"
    try:
        # A fixed, old API version: the SDK then skips asking the engine for its own
        # (`/version`, which Podman's service takes ~0.5 s to answer, over a second on a
        # busy host); a ping means the same at any version.
        probe = docker.from_env(timeout=timeout, version=PROBE_API_VERSION)
    except Exception as exc:
        return f"no Docker engine answers at {address} ({_reason(exc)})"
    try:
        probe.ping()
    except Exception as exc:
        return f"no Docker engine answers at {address} ({_reason(exc)})"
    finally:
        probe.close()
    return None


_cached: tuple[int, docker.DockerClient] | None = None
_cache_lock = threading.Lock()


def client() -> docker.DockerClient:
    """One client per process (a forked daemon makes its own: connections aren't shared
    across fork), or EngineError saying what is missing and how to start an engine."""
    global _cached
    with _cache_lock:
        if _cached is not None and _cached[0] == os.getpid():
            return _cached[1]
        address = engine_address()
        missing = _missing_socket(address)
        if missing:
            raise EngineError(f"{missing}; {START_ONE}")
        try:
            import docker
        except ImportError as exc:
            raise EngineError(
                "the docker Python package is not installed; run pip install 'docker>=7'"
            ) from exc
        try:
            # No read timeout on builds and pulls (the SDK passes none for those); 120 s for
            # everything else, as a stuck engine must not hang taxiway forever.
            made = docker.from_env(timeout=120)
        except Exception as exc:
            raise EngineError(
                f"no Docker engine answers at {address} ({_reason(exc)}); {START_ONE}"
            ) from exc
        _cached = (os.getpid(), made)
        return made


_podman: dict[int, bool] = {}


def is_podman() -> bool:
    """Whether the engine is Podman's Docker-compatible service (asked once per client):
    the few places where it behaves differently from dockerd check this."""
    made = client()
    if id(made) not in _podman:
        try:
            components = made.version().get("Components") or []
        except Exception as exc:
            raise engine_error(exc, "the engine's version") from exc
        _podman[id(made)] = any("podman" in str(c.get("Name", "")).lower() for c in components)
    return _podman[id(made)]


def engine_error(exc: Exception, what: str) -> EngineError:
    """One sentence for a docker SDK or requests exception about ``what`` (e.g. "image
    taxiway/x:v3"): what the engine said, without its HTTP plumbing."""
    if isinstance(exc, EngineError):
        return exc
    import docker.errors
    import requests.exceptions

    address = engine_address()
    if isinstance(exc, docker.errors.NotFound):
        return EngineError(f"{what} does not exist on the Docker engine ({explanation(exc)})")
    if isinstance(exc, docker.errors.APIError):
        return EngineError(f"the Docker engine refused {what}: {explanation(exc)}")
    if isinstance(exc, requests.exceptions.Timeout):
        return EngineError(f"the Docker engine at {address} did not answer in time about {what}")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return EngineError(
            f"lost the Docker engine at {address} while working on {what} ({_reason(exc)}); "
            "is it still running?"
        )
    return EngineError(f"{what}: {_reason(exc)}")


def explanation(exc: Exception) -> str:
    """The engine's own words from an APIError (its first line), else the exception's."""
    said = getattr(exc, "explanation", None)
    if isinstance(said, bytes):
        said = said.decode("utf-8", "replace")
    text = said if isinstance(said, str) and said.strip() else str(exc)
    return _one_line(text)


def _reason(exc: BaseException) -> str:
    """The innermost OS-level reason (``connection refused``, ``permission denied``) when
    there is one: the SDK wraps it in layers of adapter messages."""
    queue: list[object] = [exc]
    seen: set[int] = set()
    while queue:
        current = queue.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror.lower()
        queue.extend(current.args)
        queue.extend((current.__cause__, current.__context__))
    return _one_line(str(exc))


def _one_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no reason given"
    return line.rstrip(".")

"""Requests, routes and the errors routes raise: the API's vocabulary, free of HTTP parsing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from taxiway.errors import TaxiwayError


class Request:
    def __init__(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        #: The request's headers, names in lower case (a repeated header: its last value).
        self.headers = headers or {}

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except (ValueError, RecursionError):
            raise TaxiwayError("the request body is not JSON") from None


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Text:
    """A route's answer that is not JSON (``/metrics``): the body and its type."""

    def __init__(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type


class Answer:
    """A route's answer with another status than 200 (201, 204, 408…): ``body`` is
    JSON data, or None for no body."""

    def __init__(self, status: int, body: object = None) -> None:
        self.status = status
        self.body = body


#: A route answers with JSON data, with `Text`, or with an async iterator of NDJSON
#: lines (a stream).
Result = Any | AsyncIterator[bytes]
Handler = Callable[[Request, dict[str, str]], Awaitable[Result]]


#: One segment of a route: a literal, or a named parameter with its allowed values (any
#: non-empty segment when None).
Segment = str | tuple[str, frozenset[str] | None]


class Router:
    """Routes by path segments: ``/v1/apps/{app}/machines/{id}/{action:start|stop}``.

    Segment matching instead of regular expressions: the daemon builds its routes while
    `taxiway up -d` waits, and compiling them cost more than every match will."""

    #: Deploys of the app (`taxiway.deploy.deployer.Deployer`), once one was asked for:
    #: the daemon stops them first.
    deployer: Any = None

    def __init__(self) -> None:
        self._routes: list[tuple[str, tuple[Segment, ...], Handler]] = []
        #: Given to the deployer when it is made: called with (release version, line)
        #: for each deploy progress line (`taxiway.dashboard` shows the steps).
        self.deploy_watchers: list[Callable[[int, str], None]] = []
        #: The web dashboard's start-up (`taxiway.dashboard.server`), once one was asked for.
        self.dashboard: Awaitable[Any] | None = None

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        segments: list[Segment] = []
        for part in pattern.split("/"):
            if part.startswith("{") and part.endswith("}"):
                name, _, allowed = part[1:-1].partition(":")
                segments.append((name, frozenset(allowed.split("|")) if allowed else None))
            else:
                segments.append(part)
        self._routes.append((method, tuple(segments), handler))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        parts = path.split("/")
        allowed = False
        for route_method, segments, handler in self._routes:
            params = _match(segments, parts)
            if params is not None:
                if route_method == method:
                    return handler, params
                allowed = True
        if allowed:
            raise HTTPError(405, f"{method} is not allowed on {path}")
        raise HTTPError(404, f"no such endpoint: {path}")


def _match(segments: tuple[Segment, ...], parts: list[str]) -> dict[str, str] | None:
    if len(segments) != len(parts):
        return None
    params: dict[str, str] = {}
    for segment, part in zip(segments, parts, strict=True):
        if isinstance(segment, str):
            if segment != part:
                return None
        else:
            name, values = segment
            if not part or (values is not None and part not in values):
                return None
            params[name] = part
    return params

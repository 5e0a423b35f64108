"""The API's router: segment patterns, parameters, 404 and 405 answers."""

from __future__ import annotations

import pytest

from taxiway.api.routing import HTTPError, Request, Result, Router


async def _machine(request: Request, params: dict[str, str]) -> Result:
    return params


async def _act(request: Request, params: dict[str, str]) -> Result:
    return params


@pytest.fixture
def router() -> Router:
    r = Router()
    r.add("GET", "/v1/apps/{app}/machines/{id}", _machine)
    r.add("POST", "/v1/apps/{app}/machines/{id}/{action:start|stop}", _act)
    return r


def test_parameters_are_named_segments(router: Router) -> None:
    handler, params = router.match("GET", "/v1/apps/web/machines/0123456789abcd")
    assert handler is _machine
    assert params == {"app": "web", "id": "0123456789abcd"}


def test_a_parameter_with_choices_takes_only_those(router: Router) -> None:
    assert router.match("POST", "/v1/apps/a/machines/m/stop") == (
        _act,
        {"app": "a", "id": "m", "action": "stop"},
    )
    with pytest.raises(HTTPError) as raised:
        router.match("POST", "/v1/apps/a/machines/m/explode")
    assert raised.value.status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/v1/apps/a/machines",  # too short
        "/v1/apps/a/machines/m/start/now",  # too long
        "/v1/apps//machines/m",  # an empty segment is no parameter
        "/v2/apps/a/machines/m",  # a literal differs
    ],
)
def test_paths_that_do_not_fit_are_404(router: Router, path: str) -> None:
    with pytest.raises(HTTPError) as raised:
        router.match("GET", path)
    assert raised.value.status == 404
    assert path in str(raised.value)


def test_a_known_path_with_another_method_is_405(router: Router) -> None:
    with pytest.raises(HTTPError) as raised:
        router.match("DELETE", "/v1/apps/a/machines/m")
    assert raised.value.status == 405
    assert "DELETE is not allowed" in str(raised.value)

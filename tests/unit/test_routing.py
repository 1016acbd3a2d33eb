"""Route lookup on the raw path: first template of the request's method wins; 405 vs 404 when none does."""

from __future__ import annotations

from starlette.responses import Response

from hangar.gateway.routing import Route, RouteTable


async def _handler(*_: object) -> Response:
    return Response()


TABLE = RouteTable(
    [
        Route("GET", "/runtimes/{id}/", _handler, name="Get"),
        Route("POST", "/runtimes/{arn}/invocations", _handler, name="Invoke"),
        Route("POST", "/runtimes/{rest+}", _handler, name="Greedy"),
        Route("DELETE", "/runtimes/{id}/", _handler, name="Delete"),
    ]
)


def test_first_route_of_the_method_wins_and_captures_are_decoded() -> None:
    match, known = TABLE.resolve("POST", "/runtimes/arn%3Aaws%2Fx/invocations")
    assert known and match is not None
    assert match.route.name == "Invoke" and match.params == {"arn": "arn:aws/x"}
    match, _ = TABLE.resolve("POST", "/runtimes/a/b/c")
    assert match is not None and match.route.name == "Greedy" and match.params == {"rest": "a/b/c"}


def test_head_uses_get_and_other_methods_tell_405_from_404() -> None:
    match, _ = TABLE.resolve("HEAD", "/runtimes/r1/")
    assert match is not None and match.route.name == "Get"
    assert TABLE.resolve("PUT", "/runtimes/r1/") == (None, True)  # path known: 405
    assert TABLE.resolve("GET", "/nowhere") == (None, False)  # 404


def test_a_remembered_match_is_the_same_and_each_caller_gets_its_own_params() -> None:
    table = RouteTable(TABLE.routes)
    first, _ = table.resolve("POST", "/runtimes/arn%3Ax/invocations")
    assert first is not None
    first.params["arn"] = "changed by a handler"
    for _ in range(2):
        again, known = table.resolve("POST", "/runtimes/arn%3Ax/invocations")
        assert known and again is not None
        assert again.route.name == "Invoke" and again.params == {"arn": "arn:x"}
    assert table.resolve("DELETE", "/runtimes/arn%3Ax/invocations") == (None, True)  # cached per method

"""/v1/openapi.json: every route with a summary, the signature scheme, the problem types."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from hub.errors import ALL_PROBLEMS
from tests.hub.conftest import RunningHub
from tests.hub.test_refusals import http_session, send

_http = pytest.fixture(http_session, name="http")

PUBLIC = {"/healthz", "/readyz", "/metrics", "/v1/openapi.json"}

#: The operations of this API version; the document may grow, never lose one.
OPERATIONS = {
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("get", "/v1/agencies"),
    ("post", "/v1/agencies"),
    ("get", "/v1/agencies/{agency}"),
    ("post", "/v1/agencies/{agency}/status"),
    ("post", "/v1/agencies/{agency}/cards"),
    ("get", "/v1/cards/{key_id}"),
    ("get", "/v1/channels"),
    ("post", "/v1/channels"),
    ("get", "/v1/channels/{channel}"),
    ("put", "/v1/channels/{channel}/members/{agency}"),
    ("get", "/v1/channels/{channel}/notes"),
    ("post", "/v1/channels/{channel}/notes"),
    ("post", "/v1/channels/{channel}/reads"),
    ("get", "/v1/channels/{channel}/notes/{message_id}/receipts"),
    ("get", "/v1/subscribe"),
}


@pytest.fixture
async def document(hub: RunningHub, http: aiohttp.ClientSession) -> dict[str, Any]:
    """The document, fetched without any signature (it is public)."""
    answer = await send(http, hub.base_url + "/v1/openapi.json", "GET", {}, b"")
    assert answer.status == 200 and answer.content_type == "application/json"
    value = json.loads(answer.body)
    assert isinstance(value, dict)
    return value


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }


async def test_it_is_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "siko-hub" and document["info"]["version"]


async def test_every_operation_of_the_api_is_listed(document: dict[str, Any]) -> None:
    assert OPERATIONS <= operations(document).keys()


async def test_every_route_of_the_hub_is_listed_and_nothing_else(
    hub: RunningHub, document: dict[str, Any]
) -> None:

    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in hub.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    assert operations(document).keys() == routes


async def test_every_operation_has_a_summary_and_answers_problems(
    document: dict[str, Any],
) -> None:
    for key, operation in operations(document).items():
        summary = operation["summary"]
        assert isinstance(summary, str) and len(summary) > 3 and "\n" not in summary, key
        assert operation["responses"]["default"] == {"$ref": "#/components/responses/Problem"}
    problem = document["components"]["responses"]["Problem"]
    assert "application/problem+json" in problem["content"]


async def test_signed_operations_name_the_signature_scheme_and_public_ones_do_not(
    document: dict[str, Any],
) -> None:
    for (method, path), operation in operations(document).items():
        if path in PUBLIC:
            assert "security" not in operation, (method, path)
        else:
            assert operation["security"] == [{"httpSignature": []}], (method, path)
    scheme = document["components"]["securitySchemes"]["httpSignature"]
    assert "9421" in scheme["description"] and "Content-Digest" in scheme["description"]


async def test_every_problem_type_is_listed_with_status_and_title(
    document: dict[str, Any],
) -> None:
    listed = {p["type"]: p for p in document["components"]["x-problem-types"]}
    assert listed.keys() == {cls.problem_type() for cls in ALL_PROBLEMS}
    assert len(listed) == len(ALL_PROBLEMS)
    for cls in ALL_PROBLEMS:
        entry = listed[cls.problem_type()]
        assert entry == {
            "type": f"urn:siko:problem:{cls.slug}",
            "status": cls.status,
            "title": cls.title,
        }
    for slug in (
        "unauthenticated", "replayed-request", "stale-request", "agency-suspended", "forbidden",
        "not-member", "sender-mismatch", "bad-envelope-signature", "recipients-mismatch",
        "above-ceiling", "too-large", "malformed-envelope", "bad-request", "not-found",
        "conflict", "roster-changed", "idempotency-conflict", "unavailable", "shutting-down",
    ):  # fmt: skip
        assert f"urn:siko:problem:{slug}" in listed

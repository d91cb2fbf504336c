"""/v1/openapi.json: an OpenAPI 3.1 description of the hub's API, built from its routes.

Each operation's summary is its handler's docstring, so the document cannot drift from
the code; the problem types are listed with their status and title.
"""

from __future__ import annotations

import inspect
from typing import Any

from aiohttp import web

from hub.errors import ALL_PROBLEMS

routes = web.RouteTableDef()

PUBLIC = {"/healthz", "/readyz", "/metrics", "/v1/openapi.json"}


def document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of ``app``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD":
            continue
        path = resource.canonical
        summary = (inspect.getdoc(route.handler) or "").split("\n")[0]
        operation: dict[str, Any] = {
            "summary": summary,
            "responses": {"default": {"$ref": "#/components/responses/Problem"}},
        }
        if path not in PUBLIC:
            operation["security"] = [{"httpSignature": []}]
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "siko-hub", "version": "1"},
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "httpSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Signature",
                    "description": "RFC 9421 signature with Ed25519 and RFC 9530 "
                    "Content-Digest; see docs/PROTOCOL.md",
                }
            },
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {"application/problem+json": {}},
                }
            },
            "x-problem-types": [
                {"type": p.problem_type(), "status": p.status, "title": p.title}
                for p in ALL_PROBLEMS
            ],
        },
    }


@routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """This document."""
    return web.json_response(document(request.app))

"""The OpenAPI document and the API page: served, complete, self-contained."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator

# The OpenAPI Initiative's schema of 3.1 documents, as schemathesis ships it.
from schemathesis.specs.openapi.definitions import OPENAPI_31

from app.errors import PreconditionFailed
from app.web.openapi import build, error_codes, openapi_path
from app.web.routes import ROUTES
from tests.conftest import Caller

METHODS = {"get", "post", "patch", "put", "delete"}


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def _routed(api: TestClient) -> set[tuple[str, str]]:
    """Every method and path the server's router answers, HEAD aside."""
    routes = {
        (route.method, openapi_path(route.resource.canonical))
        for route in api.app.router.routes()
        if route.resource is not None
    }
    heads = {(m, p) for m, p in routes if m == "HEAD"}
    assert {("GET", p) for _, p in heads} <= routes, "a HEAD route without GET"
    return routes - heads


async def _document(api: TestClient) -> dict[str, Any]:
    response = await api.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    document: dict[str, Any] = await response.json()
    return document


async def test_document_and_router_name_the_same_routes(api: TestClient) -> None:
    document = await _document(api)

    assert _operations(document) == _routed(api)


async def test_served_document_is_the_one_built_from_the_route_table(
    api: TestClient,
) -> None:
    # The fuzz tests generate their requests from the built one.
    assert await _document(api) == build(ROUTES)


async def test_document_is_openapi_3_1_with_every_reference_resolved(
    api: TestClient,
) -> None:
    document = await _document(api)
    text = str(document)

    assert document["openapi"].startswith("3.1")
    for ref in set(re.findall(r"'\$ref': '#/([^']+)'", text)):
        node: Any = document
        for step in ref.split("/"):
            assert step in node, f"unresolved #/{ref}"
            node = node[step]


async def test_document_is_valid_against_the_openapi_3_1_schema(
    api: TestClient,
) -> None:
    document = await _document(api)

    errors = list(Draft202012Validator(OPENAPI_31).iter_errors(document))

    assert not errors, [error.message for error in errors[:5]]


async def test_document_is_public_with_auth_on(auth_api: TestClient) -> None:
    assert (await auth_api.get("/openapi.json")).status == 200
    assert (await auth_api.get("/docs")).status == 200


async def test_private_operations_need_the_bearer_token(api: TestClient) -> None:
    document = await _document(api)

    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert document["security"] == [{"bearerAuth": []}]
    login = document["paths"]["/auth"]["post"]
    assert login["security"] == []
    assert "401" in document["paths"]["/model/{id}"]["get"]["responses"]


async def test_every_error_answer_is_the_envelope(api: TestClient) -> None:
    document = await _document(api)
    responses = document["components"]["responses"]

    for item in document["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                name = response["$ref"].rsplit("/", 1)[-1]
                schema = responses[name]["content"]["application/json"]["schema"]
                envelope, codes = schema["allOf"]
                assert envelope == {"$ref": "#/components/schemas/ErrorEnvelope"}
                assert codes["properties"]["code"]["enum"] == error_codes(int(status))


async def test_registry_routes_describe_their_parameters_and_answers(
    api: TestClient,
) -> None:
    paths = (await _document(api))["paths"]

    production = paths["/model/{id}/production"]["get"]
    assert _names(production) == {"id", "at", "If-None-Match"}
    assert set(production["responses"]) >= {"200", "304", "404", "422"}
    versions = paths["/modelversion/model/{id}"]
    assert _names(versions["get"]) == {"id", "limit", "offset", "stage_id"}
    assert _names(versions["post"]) == {"id", "Idempotency-Key"}
    body = versions["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ModelVersionCreate"}
    patch = paths["/modelversion/{id}"]["patch"]
    assert _names(patch) == {"id", "Idempotency-Key", "If-Match"}
    assert set(patch["responses"]) == {
        "200", "400", "401", "403", "404", "409", "412", "413", "422", "503",
    }  # fmt: skip


async def test_upload_is_described_as_multipart_with_a_file(api: TestClient) -> None:
    paths = (await _document(api))["paths"]

    upload = paths["/resource/experiment/{id}"]["post"]["requestBody"]["content"]
    form = upload["multipart/form-data"]["schema"]
    assert set(form["properties"]) == {"name", "description", "file"}
    assert set(form["required"]) == {"name", "file"}
    download = paths["/resource/{id}/data"]["get"]["responses"]["200"]
    assert set(download["content"]) == {"application/octet-stream"}


async def test_stale_if_match_is_documented_with_the_current_etag(
    api: TestClient,
) -> None:
    document = await _document(api)

    stale = document["components"]["responses"]["PreconditionFailed"]
    assert stale["headers"]["ETag"]["required"] is True
    assert PreconditionFailed.code in str(stale)


async def test_api_page_renders_every_operation_without_outside_assets(
    api: TestClient,
) -> None:
    document = await _document(api)

    response = await api.get("/docs")
    page = await response.text()

    assert response.status == 200
    assert response.content_type == "text/html"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page, re.I)
    assert "<script" not in page.lower()
    for path, item in document["paths"].items():
        for operation in item.values():
            assert f'id="{operation["operationId"]}"' in page, path


async def test_head_of_the_document_answers_without_body(admin: Caller) -> None:
    response = await admin.request("HEAD", "/openapi.json")

    assert response.status == 200
    assert await response.read() == b""


def _names(operation: dict[str, Any]) -> set[str]:
    return {parameter["name"] for parameter in operation["parameters"]}


async def test_token_routes_document_the_404_they_answer_with_auth_off(
    api: TestClient,
) -> None:
    document = build(ROUTES)

    for path in ("/auth", "/auth/refresh"):
        response = await api.post(path, json={"username": "u", "password": "p"})
        assert response.status == 404
        assert "404" in document["paths"][path]["post"]["responses"]

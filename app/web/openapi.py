"""The API's OpenAPI 3.1 document, built from the route table.

Nothing here is kept by hand per route: paths, methods and summaries come
from `app.web.routes.ROUTES`; request bodies and answers are the pydantic
models the handlers validate and dump, rendered with ``models_json_schema``
into ``components/schemas``; error answers are the envelope, with the codes
of `app.errors` for each status. What a route may answer follows from what
it reads: a JSON body can be malformed (400) or too large (413), a path id
can name nothing (404), an update or delete honours If-Match (412).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from app import __version__, errors
from app.schemas import MAX_ID, Stage
from app.services.base import DEFAULT_LIMIT, MAX_LIMIT
from app.web.parsing import IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_MAX

if TYPE_CHECKING:
    from app.web.routes import Route

OPENAPI_VERSION = "3.1.0"
SCHEMAS = "#/components/schemas/"
RESPONSES = "#/components/responses/"
JSON = "application/json"
BEARER = "bearerAuth"

# An aiohttp path parameter with its pattern: ``{id:[0-9]+}``.
_PATH_PARAMETER = re.compile(r"\{(\w+)(?::[^}]*)?\}")
# Routes that answer without a database round trip: no 503.
_NO_DATABASE = frozenset({"/health", "/metrics", "/openapi.json", "/docs"})

_INFO = """\
A model registry: projects, experiments, iterations (training runs),
resources (artifact bytes), registered models and their versions.

**Authentication.** With authentication on, every route but the public ones
needs `Authorization: Bearer <token>`; `POST /auth` trades a username and
password for a token. With it off, every request acts as the admin.

**Errors.** Every failure answers `{"code": ..., "message": ...}`, also for
paths no route knows (404 NOT_FOUND) and for a known path with another
method (405 METHOD_NOT_ALLOWED, with an `Allow` header). Every answer
carries an `X-Request-ID` header, the client's own when it sent a sane one.

**HEAD** answers on every GET route as GET does, without the body.
Query parameters a route does not name are ignored.
"""


class ErrorEnvelope(BaseModel):
    """Every error answer: a stable code and a message naming the field or
    rule at fault."""

    code: str = Field(description="A stable code; one status has several.")
    message: str = Field(description="What went wrong, for people.")


# Each error status: its component's name and when it happens.
_FAILURES: dict[int, tuple[str, str]] = {
    400: ("InvalidJSON", "The body is not JSON, or not a JSON object."),
    401: ("Unauthorized", "No token, a bad or expired one, or bad credentials."),
    403: ("Forbidden", "Authenticated, but without the permission needed."),
    404: ("NotFound", "No such record, or the caller may not read it."),
    409: (
        "Conflict",
        "A name taken, a record still referenced, or the Idempotency-Key's "
        "first request still running (then with Retry-After).",
    ),
    412: (
        "PreconditionFailed",
        "If-Match names no current revision; ETag names the current one.",
    ),
    413: ("PayloadTooLarge", "The body is over the configured limit."),
    422: (
        "InvalidPayload",
        "A wrong type, an unknown field, a value out of range, bad lineage, "
        "a bad query parameter or header, or an Idempotency-Key reused for "
        "another request.",
    ),
    429: ("TooManyRequests", "Too many failed logins; see Retry-After."),
    503: ("DatabaseUnavailable", "The database is unreachable; retrying is safe."),
}

_HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {
        "description": "The record's current revision, as a strong entity tag.",
        "schema": {"type": "string"},
    },
    "Location": {
        "description": "The path of the new record.",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer of an earlier "
        "request with the same Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
}

_QUERY: dict[str, dict[str, Any]] = {
    "limit": {
        "description": f"Page size; at most {MAX_LIMIT} records come back "
        "whatever is asked.",
        "schema": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_ID,
            "default": DEFAULT_LIMIT,
        },
    },
    "offset": {
        "description": "Records to skip.",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID, "default": 0},
    },
    "stage_id": {
        "description": "Only versions in this stage: "
        + ", ".join(f"{stage.value} {stage.name}" for stage in Stage),
        "schema": {"type": "integer", "enum": [stage.value for stage in Stage]},
    },
    "at": {
        "description": "A past moment, ISO 8601; without an offset it is UTC. "
        "The answer is the version that was in PRODUCTION then.",
        "schema": {"type": "string", "format": "date-time"},
        "example": "2024-05-01T12:00:00Z",
    },
}


def build(routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``."""
    schemas = _Schemas(routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operations = paths.setdefault(openapi_path(route.path), {})
        operations[route.method.lower()] = _operation(route, schemas)

    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "DearDiary model registry",
            "version": __version__,
            "description": _INFO,
        },
        "servers": [{"url": "/"}],
        "security": [{BEARER: []}],
        "tags": [{"name": tag} for tag in _tags(routes)],
        "paths": paths,
        "components": {
            "schemas": schemas.definitions,
            "responses": _error_responses(),
            "headers": _HEADERS,
            "securitySchemes": {
                BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def openapi_path(path: str) -> str:
    """An aiohttp path as OpenAPI writes it: ``{id}`` for ``{id:[0-9]+}``."""
    return _PATH_PARAMETER.sub(r"{\1}", path)


def path_parameters(path: str) -> list[str]:
    """The names of the parameters in an aiohttp path, in order."""
    return _PATH_PARAMETER.findall(path)


def error_codes(status: int) -> list[str]:
    """Every code of `app.errors` answered with ``status``."""
    found = {errors.RegistryError}
    pending = [errors.RegistryError]
    while pending:
        for sub in pending.pop().__subclasses__():
            found.add(sub)
            pending.append(sub)
    return sorted({cls.code for cls in found if cls.status == status})


class _Schemas:
    """The JSON Schemas of every model the routes read and answer."""

    def __init__(self, routes: Sequence[Route]) -> None:
        keyed: list[tuple[type[BaseModel], JsonSchemaMode]] = [
            (ErrorEnvelope, "serialization")
        ]
        keyed += [(route.body, "validation") for route in routes if route.body]
        keyed += [(route.answer, "serialization") for route in routes if route.answer]
        refs, top = models_json_schema(
            list(dict.fromkeys(keyed)),
            by_alias=False,
            ref_template=SCHEMAS + "{model}",
        )
        self._refs = refs
        self.definitions: dict[str, Any] = top.get("$defs", {})

    def body(self, model: type[BaseModel]) -> dict[str, Any]:
        return self._refs[(model, "validation")]

    def answer(self, model: type[BaseModel]) -> dict[str, Any]:
        return self._refs[(model, "serialization")]

    def properties(self, model: type[BaseModel]) -> dict[str, Any]:
        """The body model's own schema, references resolved one level."""
        ref = self.body(model)["$ref"].removeprefix(SCHEMAS)
        return dict(self.definitions[ref])


def _tags(routes: Iterable[Route]) -> list[str]:
    return list(dict.fromkeys(_tag(route) for route in routes))


def _tag(route: Route) -> str:
    return route.path.strip("/").split("/")[0].split(".")[0]


def _operation(route: Route, schemas: _Schemas) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": _operation_id(route),
        "summary": route.summary,
        "tags": [_tag(route)],
        "parameters": _parameters(route),
        "responses": {**_successes(route, schemas), **_failures(route)},
    }
    description = _description(route)
    if description:
        operation["description"] = description
    if route.public:
        operation["security"] = []
    if route.body is not None:
        operation["requestBody"] = _request_body(route, schemas)
    return operation


def _operation_id(route: Route) -> str:
    words = re.findall(r"\w+", openapi_path(route.path))
    return "_".join([route.method.lower(), *words]) or route.method.lower()


def _description(route: Route) -> str:
    # The handler's docstring, first paragraph, where it has one.
    doc = (route.handler.__doc__ or "").strip().split("\n\n")[0]
    lines = [" ".join(doc.split())] if doc else []
    if route.idempotent:
        lines.append(
            "Send an `Idempotency-Key` to retry safely: a repeat with the same "
            "key and body gets the first answer again and changes nothing."
        )
    if route.upload:
        lines.append(
            "The text parts come before the `file` part, which must be last; "
            "the bytes are streamed to storage, never buffered whole."
        )
    return "\n\n".join(lines)


def _parameters(route: Route) -> list[dict[str, Any]]:
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": "A record id; one that names nothing is a 404.",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
            "example": 1,
        }
        for name in path_parameters(route.path)
    ]
    parameters += [
        {"name": name, "in": "query", **_QUERY[name]} for name in route.query
    ]
    if route.idempotent:
        parameters.append(_header(IDEMPOTENCY_KEY, _idempotency_key()))
    if route.method in ("PATCH", "DELETE"):
        parameters.append(
            _header(
                "If-Match",
                {
                    "description": "Change the record only while its ETag is "
                    "one of these (412 otherwise); `*` matches any.",
                    "schema": {"type": "string"},
                },
            )
        )
    if route.etag:
        parameters.append(
            _header(
                "If-None-Match",
                {
                    "description": "304 without a body when the ETag is one of these.",
                    "schema": {"type": "string"},
                },
            )
        )
    return parameters


def _header(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, **spec}


def _idempotency_key() -> dict[str, Any]:
    return {
        "description": "Any client-chosen key, unique per request; kept "
        "for the user who sent it for a day by default.",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": IDEMPOTENCY_KEY_MAX,
            "pattern": "^[ -~]+$",
        },
    }


def _request_body(route: Route, schemas: _Schemas) -> dict[str, Any]:
    assert route.body is not None
    if not route.upload:
        return {
            "required": True,
            "content": {JSON: {"schema": schemas.body(route.body)}},
        }

    form = schemas.properties(route.body)
    form["properties"] = {
        **form.get("properties", {}),
        "file": {"type": "string", "format": "binary", "description": "The bytes."},
    }
    form["required"] = [*form.get("required", []), "file"]
    form.pop("additionalProperties", None)
    media = {"schema": form, "encoding": {"file": {"contentType": "*/*"}}}
    return {"required": True, "content": {"multipart/form-data": media}}


def _successes(route: Route, schemas: _Schemas) -> dict[str, Any]:
    if route.method == "POST" and route.answer is None:
        return {"201": _created(route)}
    if route.method == "PATCH":
        return {"200": _message("Updated.", "UPDATED", route)}
    if route.method == "DELETE":
        return {"200": _message("Deleted.", "OK", route)}

    ok: dict[str, Any] = {"description": route.summary}
    schema = _answer_schema(route, schemas)
    ok["content"] = {route.media: {"schema": schema}}
    if not route.etag:
        return {"200": ok}
    etag = {"ETag": {"$ref": "#/components/headers/ETag", "required": True}}
    ok["headers"] = etag
    unchanged = {
        "description": "If-None-Match names the current ETag.",
        "headers": etag,
    }
    return {"200": ok, "304": unchanged}


def _answer_schema(route: Route, schemas: _Schemas) -> dict[str, Any]:
    if route.answer is not None:
        return schemas.answer(route.answer)
    if route.media == "application/octet-stream":
        return {"type": "string", "format": "binary"}
    if route.media != JSON:
        return {"type": "string"}
    if route.path == "/openapi.json":
        return {"type": "object"}
    # The probes: {"status": "ok"} and {"status": "ready"}.
    state = "ok" if route.path == "/health" else "ready"
    return {
        "type": "object",
        "properties": {"status": {"type": "string", "enum": [state]}},
        "required": ["status"],
    }


def _created(route: Route) -> dict[str, Any]:
    field = f"{_tag(route)}_id"
    return {
        "description": "Created.",
        "headers": {
            "Location": {"$ref": "#/components/headers/Location", "required": True},
            **_replayed(route),
        },
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "properties": {
                        field: {"type": "integer", "minimum": 1, "maximum": MAX_ID}
                    },
                    "required": [field],
                }
            }
        },
    }


def _message(description: str, text: str, route: Route) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {"message": {"type": "string", "enum": [text]}},
        "required": ["message"],
    }
    answer: dict[str, Any] = {"description": description}
    headers = _replayed(route)
    if headers:
        answer["headers"] = headers
    answer["content"] = {JSON: {"schema": schema}}
    return answer


def _replayed(route: Route) -> dict[str, Any]:
    if not route.idempotent:
        return {}
    return {"Idempotent-Replayed": {"$ref": "#/components/headers/Idempotent-Replayed"}}


def _failures(route: Route) -> dict[str, Any]:
    """The error statuses ``route`` may answer, each a shared response."""
    statuses = sorted(_failure_statuses(route))
    return {
        str(status): {"$ref": RESPONSES + _FAILURES[status][0]} for status in statuses
    }


def _failure_statuses(route: Route) -> set[int]:
    statuses: set[int] = set()
    reads_json = route.body is not None and not route.upload
    is_login = route.path == "/auth"
    if reads_json:
        statuses.add(400)
    if not route.public or is_login:
        statuses.add(401)
    if _may_forbid(route):
        statuses.add(403)
    # With auth off there are no tokens: the token routes answer 404.
    if path_parameters(route.path) or route.path.startswith("/auth"):
        statuses.add(404)
    if route.method == "DELETE" or route.idempotent:
        statuses.add(409)
    if route.method in ("PATCH", "DELETE"):
        statuses.add(412)
    if route.body is not None:
        statuses |= {413, 422}
    if route.query or route.idempotent:
        statuses.add(422)
    if is_login:
        statuses.add(429)
    if route.path not in _NO_DATABASE:
        statuses.add(503)
    return statuses


def _may_forbid(route: Route) -> bool:
    """Writes need a permission flag or an admin; reading users and
    permissions needs an admin or the user themselves. Other reads of a
    project the caller may not read answer 404, as for no record."""
    if route.public or route.path.startswith("/auth"):
        return False
    return route.method != "GET" or route.path.startswith("/user")


def _error_responses() -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, (name, description) in _FAILURES.items():
        codes = error_codes(status)
        schema = {
            "allOf": [
                {"$ref": SCHEMAS + ErrorEnvelope.__name__},
                {"properties": {"code": {"type": "string", "enum": codes}}},
            ]
        }
        response: dict[str, Any] = {
            "description": f"{description} Codes: {', '.join(codes)}.",
            "content": {JSON: {"schema": schema}},
        }
        if status in (409, 429):
            response["headers"] = {
                "Retry-After": {"$ref": "#/components/headers/Retry-After"}
            }
        if status == 412:
            response["headers"] = {
                "ETag": {"$ref": "#/components/headers/ETag", "required": True}
            }
        responses[name] = response
    return responses

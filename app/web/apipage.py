"""The API's description over HTTP: ``GET /openapi.json`` and ``GET /docs``.

The page is plain HTML rendered here from the OpenAPI document, with its
style inline: it loads nothing from anywhere, so it reads the same on a
machine without internet access, and its Content-Security-Policy says so.
"""

from __future__ import annotations

import functools
import html
import json
import re
from typing import Any

from aiohttp import web

from app.web.openapi import SCHEMAS, build

_CSP = "default-src 'none'; style-src 'unsafe-inline'"
_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:70em;
padding:1em 2em;color:#1b1b1b}
h2{border-bottom:2px solid #ccc;margin-top:2em}
section.op{border:1px solid #ddd;border-radius:4px;margin:1em 0;padding:.5em 1em}
.method{display:inline-block;min-width:4.5em;font-weight:bold;
font-family:monospace}
.GET{color:#05668d}.POST{color:#2a7221}.PATCH{color:#9c6500}
.DELETE{color:#a4161a}
code,.path{font-family:ui-monospace,monospace}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.2em .6em;text-align:left;
vertical-align:top}
nav a{margin-right:1em}
"""


async def document(request: web.Request) -> web.StreamResponse:
    """GET /openapi.json: the OpenAPI 3.1 document of every route."""
    body, _ = _rendered()
    return web.Response(body=body, content_type="application/json")


async def page(request: web.Request) -> web.StreamResponse:
    """GET /docs: the API reference, as one HTML page."""
    _, text = _rendered()
    response = web.Response(body=text, content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = _CSP
    return response


@functools.cache
def _rendered() -> tuple[bytes, bytes]:
    """The document as JSON and as HTML, built once per process."""
    # The table lists the handlers above, so it is read when first asked.
    from app.web.routes import ROUTES

    spec = build(ROUTES)
    return json.dumps(spec).encode(), render(spec).encode()


def render(spec: dict[str, Any]) -> str:
    """An OpenAPI document as a self-contained HTML page."""
    info = spec["info"]
    title = _e(f"{info['title']} {info['version']}")
    tags = [tag["name"] for tag in spec.get("tags", [])]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
        _markdown(info.get("description", "")),
        "<p>The same description, machine-readable: "
        '<a href="/openapi.json"><code>/openapi.json</code></a> (OpenAPI '
        f"{_e(spec['openapi'])}).</p>",
        "<nav>",
        *(f'<a href="#tag-{_e(tag)}">{_e(tag)}</a>' for tag in tags),
        '<a href="#schemas">schemas</a></nav>',
    ]
    for tag in tags:
        parts.append(f'<h2 id="tag-{_e(tag)}">{_e(tag)}</h2>')
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                if tag in operation.get("tags", ()):
                    parts.append(_operation(spec, path, method, operation))
    parts.append('<h2 id="schemas">Schemas</h2>')
    for name, schema in spec["components"]["schemas"].items():
        parts.append(_schema_section(name, schema))
    parts.append("</body></html>")
    return "\n".join(parts)


def _operation(spec: dict[str, Any], path: str, method: str, op: dict[str, Any]) -> str:
    verb = method.upper()
    lock = "" if op.get("security") == [] else " &#128274;"
    parts = [
        f'<section class="op" id="{_e(op["operationId"])}">',
        f'<h3><span class="method {verb}">{verb}</span> '
        f'<span class="path">{_e(path)}</span>{lock}</h3>',
        f"<p><strong>{_e(op['summary'])}</strong></p>",
        _markdown(op.get("description", "")),
    ]
    if op.get("parameters"):
        parts.append(_parameters(op["parameters"]))
    if "requestBody" in op:
        parts.append(_request_body(op["requestBody"]))
    parts.append(_responses(spec, op["responses"]))
    parts.append("</section>")
    return "\n".join(parts)


def _parameters(parameters: list[dict[str, Any]]) -> str:
    rows = [
        f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td>"
        f"<td>{'yes' if p.get('required') else 'no'}</td>"
        f"<td>{_type(p.get('schema', {}))}</td>"
        f"<td>{_markdown_inline(p.get('description', ''))}</td></tr>"
        for p in parameters
    ]
    head = "<tr><th>parameter</th><th>in</th><th>required</th><th>type</th>"
    return f"<table>{head}<th></th></tr>{''.join(rows)}</table>"


def _request_body(body: dict[str, Any]) -> str:
    items = [
        f"<li><code>{_e(media)}</code>: {_type(content.get('schema', {}))}</li>"
        for media, content in body["content"].items()
    ]
    for media, content in body["content"].items():
        schema = content.get("schema", {})
        if "properties" in schema:
            items.append(f"<li>{_e(media)} parts:{_properties(schema)}</li>")
    return f"<p>Body:</p><ul>{''.join(items)}</ul>"


def _responses(spec: dict[str, Any], responses: dict[str, Any]) -> str:
    rows = []
    for status, response in responses.items():
        if "$ref" in response:
            name = response["$ref"].rsplit("/", 1)[-1]
            response = spec["components"]["responses"][name]
        content = response.get("content", {})
        kinds = ", ".join(
            f"<code>{_e(media)}</code> {_type(c.get('schema', {}))}"
            for media, c in content.items()
        )
        headers = ", ".join(
            f"<code>{_e(h)}</code>" for h in response.get("headers", {})
        )
        rows.append(
            f"<tr><td>{_e(status)}</td>"
            f"<td>{_markdown_inline(response.get('description', ''))}</td>"
            f"<td>{kinds}</td><td>{headers}</td></tr>"
        )
    head = "<tr><th>status</th><th>when</th><th>body</th><th>headers</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _schema_section(name: str, schema: dict[str, Any]) -> str:
    parts = [f'<h3 id="schema-{_e(name)}"><code>{_e(name)}</code></h3>']
    if schema.get("description"):
        parts.append(_markdown(schema["description"]))
    if "properties" in schema:
        parts.append(_properties(schema))
    else:
        parts.append(f"<p>{_type(schema)}</p>")
    return "\n".join(parts)


def _properties(schema: dict[str, Any]) -> str:
    required = set(schema.get("required", ()))
    rows = [
        f"<tr><td><code>{_e(name)}</code></td>"
        f"<td>{'yes' if name in required else 'no'}</td>"
        f"<td>{_type(prop)}</td>"
        f"<td>{_markdown_inline(prop.get('description', ''))}</td></tr>"
        for name, prop in schema["properties"].items()
    ]
    head = "<tr><th>field</th><th>required</th><th>type</th><th></th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _type(schema: dict[str, Any]) -> str:
    """A short reading of a JSON Schema: type, constraints, links."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix(SCHEMAS)
        return f'<a href="#schema-{_e(name)}">{_e(name)}</a>'
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            joiner = " and " if key == "allOf" else " or "
            # Parts that only narrow another (no type of their own) say
            # nothing here.
            parts = [s for s in schema[key] if "$ref" in s or "type" in s]
            return joiner.join(_type(sub) for sub in parts or schema[key])
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{_e(v)}</code>" for v in schema["enum"])
    if "const" in schema:
        return f"<code>{_e(schema['const'])}</code>"
    kind = schema.get("type", "any")
    if kind == "array":
        text = f"array of {_type(schema.get('items', {}))}"
    else:
        text = _e(kind)
    notes = [
        f"{_e(key)} {_e(schema[key])}"
        for key in (
            "format",
            "minimum",
            "maximum",
            "minLength",
            "maxLength",
            "pattern",
            "default",
        )
        if key in schema
    ]
    return text + (f" ({', '.join(notes)})" if notes else "")


def _e(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return html.escape(text)


def _markdown(text: str) -> str:
    """Paragraphs of the document's descriptions, with their `code` and
    **bold** spans."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    return "".join(f"<p>{_markdown_inline(p)}</p>" for p in paragraphs)


def _markdown_inline(text: str) -> str:
    escaped = html.escape(" ".join(text.split()))
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)

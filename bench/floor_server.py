"""The floor: a bare aiohttp handler answering a small JSON object.

``python bench/floor_server.py --port P`` listens on 127.0.0.1 only. The
benchmark drives it with the same load loop as the registries, to show what
this machine's Python HTTP stack serves when a handler does no work at all.
"""

from __future__ import annotations

import argparse

from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    """A fixed answer, no work."""
    return web.json_response({"hello": "world"})


def main() -> None:
    """Serve until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port

    app = web.Application()
    app.router.add_get("/hello", hello)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()

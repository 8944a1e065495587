"""The live console at /ui: static files (HTML, one script, one stylesheet), no build step.

The page holds no data of its own: it asks for a token once and reads the REST API with it
(GET /v1/gateways, /v1/queue, /v1/jobs, DELETE /v1/jobs/{id}), so it sees exactly what that
token may see.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

UI_DIR = Path(__file__).parent / "ui"

# Only the console's own files run: job results and error messages are shown as text, and a
# policy that forbids inline and foreign scripts keeps any that slipped through inert.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def console_app() -> ConsoleFiles:
    return ConsoleFiles(directory=UI_DIR, html=True)

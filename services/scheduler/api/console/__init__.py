"""The web console: static HTML, JS and CSS (package data beside this file) served at `/`.

The page is a client of the HTTP/JSON API (/v1/...) like any other: it holds no
server-side logic and needs no build step. Its three files are read once, at
install, and served from memory, so no request path ever reaches the file system.
The pages themselves carry no data and need no token; the API calls they make do."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

FILES = {
    "/": ("index.html", "text/html"),
    "/console/console.js": ("console.js", "text/javascript"),
    "/console/console.css": ("console.css", "text/css"),
    "/console/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
# Only our own files run; the page talks to this origin only; no one frames it.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def install(app: web.Application) -> None:
    """Adds GET / and the console's assets to an aiohttp app."""
    folder = resources.files(__name__)
    for path, (name, content_type) in FILES.items():
        body = folder.joinpath(name).read_bytes()
        app.router.add_get(path, _serve(body, content_type))


def _serve(body: bytes, content_type: str):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=HEADERS)

    return handler

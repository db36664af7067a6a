"""The web console: static HTML, JS and CSS (package data beside this file) served at `/`.

The page is a client of the HTTP/JSON API (/v1/...) like any other: it holds no
server-side logic and needs no build step (plain JS modules). Its files are read
once, at install, and served from memory, so no request path reaches the file system.
The pages themselves carry no data and need no token; the API calls they make do."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

PAGE = "index.html"  # served at /; every other file here with one of these suffixes at /console/NAME
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
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
    app.router.add_get("/", _serve(folder.joinpath(PAGE).read_bytes(), "text/html"))
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if suffix in TYPES:
            app.router.add_get(f"/console/{entry.name}", _serve(entry.read_bytes(), TYPES[suffix]))


def _serve(body: bytes, content_type: str):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=HEADERS)

    return handler

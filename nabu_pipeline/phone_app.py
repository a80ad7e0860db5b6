"""The phone app's HTTP side: the installable web app, the desk page and pairing.

    GET /                      the phone app (web/app.html): Warren's big-button page
    GET /desk                  the desk-test page (web/index.html) with the pairing QR code
    GET /manifest.webmanifest  web app manifest (standalone display, icons)
    GET /sw.js                 service worker (root scope: the app starts offline and says so)
    GET /app.js, /app.css      the app's code and style; /icons/*.png its icons
    GET /nabu-client.js        the Pipecat web client both pages use
    GET /memory.html, .js      the family's page on what Nabu remembers
    GET /pairing               {"url", "svg"}: a link + QR code pairing one more phone;
                               needs the master token (Authorization: Bearer) when one is set

Device tokens are checked by `device_accepts`, which `nabu serve` consults when
a WebSocket's token is not the master token.
"""

from __future__ import annotations

import asyncio
import mimetypes
import sys
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from loguru import logger

from nabu_pipeline.devices import DeviceStore
from nabu_pipeline.pairing import (
    PairingLink,
    device_name,
    new_link,
    print_link,
    server_address,
)

if TYPE_CHECKING:
    from nabu_pipeline.server import NabuServer

STATIC = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "manifest.webmanifest": "application/manifest+json",
    "sw.js": "text/javascript",
    "nabu-client.js": "text/javascript",  # the Pipecat web client, bundled (both pages)
    "memory.html": "text/html",  # the family's memory page (its API: memory_api.py)
    "memory.js": "text/javascript",
}
ICONS = ("icon-192.png", "icon-512.png", "icon-maskable-512.png", "apple-touch-icon.png")
NO_CACHE = {"Cache-Control": "no-cache"}


class Pairing:
    """The link the desk page shows: one pending device token, renewed once a phone used it."""

    def __init__(self, store: DeviceStore):
        self.store = store
        self.address = ""
        self._token = ""
        self._link: PairingLink | None = None
        self._lock = asyncio.Lock()

    def adopt(self, link: PairingLink) -> PairingLink:
        """Show `link` (made at start-up and printed) on the desk page too, until it is used."""
        self._link, self._token = link, link.url.rsplit("#pair=", 1)[1]
        return link

    async def current(self) -> PairingLink:
        async with self._lock:
            if self._link is None or not await asyncio.to_thread(
                self.store.is_pending, self._token
            ):
                self.adopt(await asyncio.to_thread(new_link, self.store, self.address))
            return self._link


async def device_accepts(store: DeviceStore, token: str, websocket: WebSocket) -> bool:
    """True when `token` is a paired (or just now pairing) device's; logs which device."""
    device = await asyncio.to_thread(
        store.check, token, device_name=device_name(websocket.headers.get("user-agent", ""))
    )
    if device is None:
        return False
    logger.info(f"Device {device.id} ({device.name}) connected")
    return True


def add_routes(app: FastAPI, server: NabuServer) -> None:
    """The phone app's routes on `nabu serve`'s app."""
    web = server.web_dir

    @app.get("/", include_in_schema=False)
    async def phone_app() -> FileResponse:
        return FileResponse(web / "app.html", headers=NO_CACHE)

    @app.get("/desk", include_in_schema=False)
    async def desk_page() -> FileResponse:
        return FileResponse(web / "index.html", headers=NO_CACHE)

    for name, media_type in STATIC.items():

        async def static(name: str = name, media_type: str = media_type) -> FileResponse:
            headers = dict(NO_CACHE)
            if name == "sw.js":
                headers["Service-Worker-Allowed"] = "/"
            return FileResponse(web / name, media_type=media_type, headers=headers)

        app.add_api_route(f"/{name}", static, methods=["GET"], include_in_schema=False)

    @app.get("/icons/{name}", include_in_schema=False)
    async def icon(name: str):
        if name not in ICONS:
            return PlainTextResponse("not found", status_code=404)
        media_type = mimetypes.guess_type(name)[0] or "image/png"
        return FileResponse(web / "icons" / name, media_type=media_type)

    @app.get("/pairing", include_in_schema=False)
    async def pairing(request: Request) -> JSONResponse:
        from nabu_pipeline.server import token_matches  # the server imports this module

        master = server.master_token
        if master is not None:
            auth = request.headers.get("authorization", "")
            given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            if not given or not token_matches(given, master):
                return JSONResponse(
                    {"error": "the server's token (NABU_AUTH_TOKEN) is needed to pair a phone"},
                    status_code=401,
                )
        link = await server.pairing.current()
        return JSONResponse(
            {"url": link.url, "svg": link.svg()}, headers={"Cache-Control": "no-store"}
        )


def announce_pairing(server: NabuServer, host: str, port: int, *, tls: bool, local: bool) -> None:
    """At start-up: the pairing link and QR code on the terminal (never in the log)."""
    settings = server.settings
    server.pairing.address = server_address(host, port, tls=tls, public_url=settings.public_url)
    if not tls and not local and not settings.public_url:
        logger.warning(
            "Serving plain HTTP beyond this machine: a phone's browser gives the microphone "
            "only to HTTPS pages. Pass --certfile/--keyfile or put Nabu behind an HTTPS proxy "
            "(README, 'The phone app')."
        )
    if sys.stdout.isatty():
        print_link(server.pairing.adopt(new_link(server.devices, server.pairing.address)))
        if local and not settings.public_url:
            print(
                "  (This address works on this machine only. For a phone, start Nabu with\n"
                "   --host 0.0.0.0 and a certificate, or behind an HTTPS proxy with\n"
                "   server.public_url set: README, 'The phone app'.)\n",
                flush=True,
            )
    else:
        logger.info("To pair a phone, open /desk on this machine (it shows a link and QR code)")

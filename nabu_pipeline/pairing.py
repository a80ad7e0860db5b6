"""Pairing a phone once, not typing: a link and a QR code carrying the address and a token.

The link is `<server address>/#pair=<device token>`. The token rides in the
URL *fragment*, which a browser never sends to a server, so it appears in no
access log (ours or a reverse proxy's); the phone app reads it, stores address
and token in localStorage and removes it from the address bar
(history.replaceState). Every link carries a fresh per-device token from
`devices.DeviceStore`, never the server's master token.

Who may see a link: the terminal that started `nabu serve` (stdout, only when
it is a terminal, so a service's journal never holds one) and the desk page at
/desk, whose /pairing request must carry the master token when one is set.
"""

from __future__ import annotations

import io
import socket
import sys
from dataclasses import dataclass

import segno

from nabu_pipeline.devices import DeviceStore


@dataclass(frozen=True)
class PairingLink:
    """A link for one phone, with its QR code."""

    url: str

    def svg(self) -> str:
        """The QR code as an inline SVG element (dark on white, big quiet zone for cameras)."""
        out = io.BytesIO()
        segno.make(self.url, error="m").save(
            out,
            kind="svg",
            scale=6,
            border=4,
            xmldecl=False,
            svgns=True,
            title="Pairing link",
            omitsize=True,  # sized by the page
        )
        return out.getvalue().decode()

    def terminal(self) -> str:
        """The QR code drawn with block characters, for the terminal."""
        out = io.StringIO()
        segno.make(self.url, error="m").terminal(out=out, compact=True)
        return out.getvalue()


def lan_address() -> str:
    """This machine's address on its local network, as a phone on the same Wi-Fi sees it.

    Connecting a UDP socket sends nothing; it only makes the kernel choose the
    outgoing interface. Falls back to the loopback address with no network.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def server_address(host: str, port: int, *, tls: bool, public_url: str = "") -> str:
    """The address a phone should open: the configured public URL, else scheme://host:port."""
    if public_url:
        return public_url.rstrip("/")
    if host in ("0.0.0.0", "::", ""):
        host = lan_address()
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if tls else "http"
    default = 443 if tls else 80
    return f"{scheme}://{shown}" + ("" if port == default else f":{port}")


def new_link(store: DeviceStore, address: str) -> PairingLink:
    """A link with a fresh pending device token."""
    return PairingLink(f"{address}/#pair={store.new_pending()}")


def print_link(link: PairingLink, *, to=None) -> bool:
    """Print the link and its QR code on the terminal; nothing when stdout is not a terminal."""
    to = to or sys.stdout
    if not to.isatty():
        return False
    print(
        "\nPair Warren's phone: scan this code with its camera, or open the link on it.\n"
        "It pairs one phone; the desk page (/desk) shows a new one afterwards.\n",
        file=to,
    )
    print(link.terminal(), file=to)
    print(f"  {link.url}\n", file=to, flush=True)
    return True


def device_name(user_agent: str) -> str:
    """A short, human name for a paired device from its browser's User-Agent."""
    ua = user_agent or ""
    system = next(
        (
            name
            for key, name in (
                ("Android", "Android"),
                ("iPhone", "iPhone"),
                ("iPad", "iPad"),
                ("Windows", "Windows"),
                ("Mac OS", "Mac"),
                ("Linux", "Linux"),
            )
            if key in ua
        ),
        "device",
    )
    browser = next(
        (
            name
            for key, name in (
                ("Edg/", "Edge"),
                ("Firefox/", "Firefox"),
                ("Chrome/", "Chrome"),
                ("Safari/", "Safari"),
            )
            if key in ua
        ),
        "browser",
    )
    return f"{system} {browser}"

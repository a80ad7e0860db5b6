"""Which browser pages may open Nabu's WebSocket: the server's own, and those the user listed.

A browser sends `Origin` with every WebSocket handshake; a page from another
site must not use a visitor's browser to talk to Nabu (on loopback there is no
token to stop it). With no `server.allowed_origins`, only the server's own
pages may connect: an Origin naming the same host and port the request was
sent to, or a localhost form of it (a page opened at http://localhost:7860
talking to 127.0.0.1:7860).

DNS rebinding defeats a same-origin comparison alone: a page at
http://rebind.evil.example:7860 whose name is re-pointed to 127.0.0.1 sends
`Host` and `Origin` that agree. So a browser's request must also have been
sent to a name this server answers to: an IP address, localhost, this
machine's own host names, or a host in `allowed_origins`. Clients without an
Origin are not browser pages (the phone app); the token covers them.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import cache
from urllib.parse import urlsplit

from pipecat.utils.security.allowed_origins import is_origin_allowed

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def split_host(value: str) -> tuple[str, int | None] | None:
    """`Host` header or URL authority -> (lower-case name without brackets, port); None if bad."""
    try:
        parts = urlsplit(f"//{value.strip()}")
        return (parts.hostname or "", parts.port) if parts.hostname else None
    except ValueError:
        return None


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def is_local_name(name: str) -> bool:
    return (
        name in LOOPBACK_NAMES
        or name.endswith(".localhost")
        or (is_ip(name) and ipaddress.ip_address(name).is_loopback)
    )


@cache
def machine_names() -> frozenset[str]:
    """This machine's own host names (what a LAN client might type), lower case."""
    names = {socket.gethostname()}
    try:
        names.add(socket.getfqdn())
    except OSError:
        pass
    names |= {f"{n.split('.')[0]}.local" for n in list(names) if n}
    return frozenset(n.lower() for n in names if n)


class OriginPolicy:
    """Decides whether a WebSocket handshake's Origin and Host are acceptable."""

    def __init__(self, allowed_origins: tuple[str, ...] | list[str]):
        self.allowed = list(allowed_origins)
        self.allowed_hosts = frozenset(
            host for o in self.allowed if (host := (urlsplit(o).hostname or "").lower())
        )

    def host_answered(self, name: str) -> bool:
        """A name this server answers to (anything else in a browser's Host is DNS rebinding)."""
        return (
            is_ip(name)
            or is_local_name(name)
            or name in machine_names()
            or name in self.allowed_hosts
        )

    def refusal(self, origin: str, host_header: str) -> str | None:
        """Why a handshake with these headers is refused, or None when it may go on."""
        if not origin:
            return None  # not a browser page
        host = split_host(host_header)
        if host is None or not self.host_answered(host[0]):
            return f"host {host_header[:80]!r} is not a name this server answers to"
        if self.allowed and is_origin_allowed(origin, self.allowed):
            return None
        page = urlsplit(origin)
        page_host = split_host(page.netloc) if page.scheme in ("http", "https") else None
        if page_host is not None:
            default = 443 if page.scheme == "https" else 80
            page_port = page_host[1] or default
            port = host[1] or default
            if page_host[0] == host[0] and page_port == port:
                return None  # the server's own page
            if is_local_name(page_host[0]) and is_local_name(host[0]) and page_port == port:
                return None  # its own page, opened under another localhost name
        return f"origin {origin[:80]!r} is not allowed"

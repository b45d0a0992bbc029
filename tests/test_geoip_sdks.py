"""GeoIP as the real SDKs meet it: each sends from a visitor on the internet, through a reverse
proxy the server trusts, and the rows in the lake say where the visitor is, or, for an SDK that
asks not to be located (posthog-python and posthog-node by default), say nothing of it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import posthog
import pytest

from tests.helpers.proxy import ForwardingProxy
from tests.helpers.sdk import run_script
from tests.helpers.server import Server, query, wait_for_rows

pytestmark = [pytest.mark.server, pytest.mark.sdk]

TOKEN = "phc_geoip_sdks"
VISITOR = "8.8.8.8"  # the United States in every GeoIP database


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"HOGFLARE_TRUSTED_PROXIES": "127.0.0.1/32"}
    with Server(tmp_path_factory.mktemp("geoip") / "data", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(server: Server) -> Iterator[ForwardingProxy]:
    with ForwardingProxy(server.url, VISITOR) as relaying:
        yield relaying


def events(server: Server, distinct_id: str, count: int) -> list[dict[str, Any]]:
    sql = f"select event, properties from events where distinct_id = '{distinct_id}'"
    return [json.loads(row["properties"]) for row in wait_for_rows(server.data_dir, sql, count)]


def person(server: Server, distinct_id: str) -> dict[str, Any]:
    sql = f"select merged_properties from persons_latest where list_contains(distinct_ids, '{distinct_id}')"
    (row,) = query(server.data_dir, sql)
    properties: dict[str, Any] = json.loads(row["merged_properties"])
    return properties


def assert_located(properties: dict[str, Any]) -> None:
    assert properties["$ip"] == VISITOR
    assert properties["$geoip_country_code"] == "US"
    assert properties["$geoip_continent_code"] == "NA"


def assert_not_located(properties: dict[str, Any]) -> None:
    assert not [key for key in properties if key.startswith("$geoip_") and key != "$geoip_disable"]


def test_posthog_python_is_located_only_when_it_allows_it(server: Server, proxy: ForwardingProxy) -> None:
    run_id = uuid.uuid4().hex
    for disable_geoip in (True, False):
        client = posthog.Posthog(TOKEN, host=proxy.url, disable_geoip=disable_geoip, sync_mode=True)
        client.capture("python visit", distinct_id=f"py-{disable_geoip}-{run_id}", properties={"$set": {"plan": "pro"}})
        client.shutdown()
    (kept_private,) = events(server, f"py-True-{run_id}", 1)
    assert kept_private["$geoip_disable"] is True
    assert_not_located(kept_private)
    (located,) = events(server, f"py-False-{run_id}", 1)
    assert_located(located)
    visitor = person(server, f"py-False-{run_id}")
    assert (visitor["$geoip_country_code"], visitor["$initial_geoip_country_code"]) == ("US", "US")
    assert_not_located(person(server, f"py-True-{run_id}"))


@pytest.mark.parametrize("geoip", ["default", "on"])
def test_posthog_node_is_located_only_when_it_allows_it(server: Server, proxy: ForwardingProxy, geoip: str) -> None:
    run_id = uuid.uuid4().hex
    sent = run_script("node_sdk.mjs", proxy.url, TOKEN, "capture", run_id, "--geoip", geoip)
    assert sent["errors"] == []
    sql = f"select properties from events where json_extract_string(properties, '$.run_id') = '{run_id}'"
    rows = [json.loads(row["properties"]) for row in wait_for_rows(server.data_dir, sql, sent["expected"])]
    for properties in rows:
        if geoip == "on":
            assert_located(properties)
        else:
            assert_not_located(properties)


@pytest.mark.browser
def test_posthog_js_in_chromium_is_located(server: Server, proxy: ForwardingProxy) -> None:
    page = run_script("browser.mjs", proxy.url, TOKEN, "basic", uuid.uuid4().hex)
    assert page["page_errors"] == []
    # posthog-js keeps anonymous visitors personless by default: the events are located all the same.
    for properties in events(server, page["distinct_id"], 2):
        assert_located(properties)

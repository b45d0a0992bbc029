"""What posthog-js boots from: `/array/<token>/config[.js]`, `/flags` and `/decide`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import Hogflare, make_settings, running

ORIGIN = {"origin": "https://app.example"}


async def test_config_json_has_what_posthog_js_reads(hogflare: Hogflare) -> None:
    response = await hogflare.client.get("/array/phc_abc/config", headers=ORIGIN)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    config = response.json()
    assert config["token"] == "phc_abc"
    assert config["supportedCompression"] == ["gzip", "gzip-js"]
    assert config["autocapture_opt_out"] is False
    assert config["hasFeatureFlags"] is False
    assert config["sessionRecording"] is False
    assert config["analytics"] == {"endpoint": "/i/v0/e/"}
    assert config["elementsChainAsString"] is True


async def test_config_js_parks_the_config_for_the_sdk(hogflare: Hogflare) -> None:
    response = await hogflare.client.get("/array/phc_abc/config.js")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/javascript"
    text = response.text
    assert "window._POSTHOG_REMOTE_CONFIG = window._POSTHOG_REMOTE_CONFIG || {};" in text
    match = re.search(r'window\._POSTHOG_REMOTE_CONFIG\["phc_abc"\] = \{ config: (\{.*\}), siteApps: \[\] \};', text)
    assert match is not None
    assert json.loads(match.group(1))["token"] == "phc_abc"


@pytest.mark.parametrize("token", ["phx_personal", "x" * 65, "phc_%00", "caf%C3%A9", "%20"])
async def test_a_malformed_token_is_400_invalid_token(hogflare: Hogflare, token: str) -> None:
    response = await hogflare.client.get(f"/array/{token}/config")
    assert (response.status_code, response.json()) == (400, {"detail": "Invalid token"})


@pytest.mark.parametrize("token", ["acme.prod", "team:web", "my token"])
async def test_any_token_capture_takes_gets_its_config(hogflare: Hogflare, token: str) -> None:
    """Capture takes these; a config refused for them would boot posthog-js with autocapture off."""
    response = await hogflare.client.get(f"/array/{token}/config")
    assert response.status_code == 200
    assert response.json()["token"] == token
    assert (await hogflare.post("/i/v0/e/", {"api_key": token, "event": "e", "distinct_id": "d"})).status_code == 200


async def test_a_token_is_trimmed_as_capture_trims_it(hogflare: Hogflare) -> None:
    """The config is the trimmed token's; the script parks it under the token as the SDK has it,
    where posthog-js looks it up."""
    response = await hogflare.client.get("/array/%20phc_abc%0A/config")
    assert (response.status_code, response.json()["token"]) == (200, "phc_abc")
    script = (await hogflare.client.get("/array/%20phc_abc%0A/config.js")).text
    assert 'window._POSTHOG_REMOTE_CONFIG[" phc_abc\\n"] = { config: {"token":"phc_abc"' in script


async def test_remote_config_is_read_with_get_only(hogflare: Hogflare) -> None:
    assert (await hogflare.client.post("/array/phc_abc/config", content=b"{}")).status_code == 405
    assert (await hogflare.client.options("/array/phc_abc/config", headers=ORIGIN)).status_code == 200


async def test_a_token_outside_the_allowed_projects_is_not_found(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path / "data", project_tokens=("phc_good",))) as hogflare:
        good = await hogflare.client.get("/array/phc_good/config.js")
        other = await hogflare.client.get("/array/phc_other/config")
    assert good.status_code == 200
    assert (other.status_code, other.json()) == (404, {"detail": "Not found."})


async def test_recording_is_offered_only_when_an_endpoint_is_configured(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path / "data", session_recording_endpoint="/s/")) as hogflare:
        config = (await hogflare.client.get("/array/phc_abc/config")).json()
    assert config["sessionRecording"]["endpoint"] == "/s/"
    assert config["sessionRecording"]["recorderVersion"] == "v2"


async def test_exception_autocapture_is_off_unless_turned_on(tmp_path: Path) -> None:
    """Off, as in a new PostHog project, in the config and the flags answer alike."""
    for setting in (False, True):
        settings = make_settings(tmp_path / f"data-{setting}", autocapture_exceptions=setting)
        async with running(settings) as hogflare:
            config = (await hogflare.client.get("/array/phc_abc/config")).json()
            flags = (await hogflare.post("/flags/?v=2&config=true", {"token": "phc_abc", "distinct_id": "u"})).json()
        for answer in (config, flags):
            assert answer["autocaptureExceptions"] is setting
            assert answer["errorTracking"]["autocaptureExceptions"] is setting


@pytest.mark.parametrize("path", ["/flags", "/flags/", "/flags/?v=2", "/flags?v=1"])
async def test_flags_v2_shape(hogflare: Hogflare, path: str) -> None:
    response = await hogflare.post(path, {"token": "phc_abc", "distinct_id": "u"}, headers=ORIGIN)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    body = response.json()
    assert body["featureFlags"] == {}
    assert body["featureFlagPayloads"] == {}
    assert body["flags"] == {}
    assert body["errorsWhileComputingFlags"] is False
    assert isinstance(body["requestId"], str)
    assert isinstance(body["evaluatedAt"], int)
    assert "supportedCompression" not in body


@pytest.mark.parametrize("path", ["/flags/?v=2&config=true", "/decide/?v=3", "/decide"])
async def test_config_fields_merge_into_flags_and_decide(hogflare: Hogflare, path: str) -> None:
    response = await hogflare.post(path, {"token": "phc_abc", "distinct_id": "u"})
    body = response.json()
    assert body["supportedCompression"] == ["gzip", "gzip-js"]
    assert body["sessionRecording"] is False
    # With no flags: `/decide` without a version lists active keys (PostHog's v1), the others map them.
    assert body["featureFlags"] == ([] if path == "/decide" else {})


async def test_flags_accepts_get(hogflare: Hogflare) -> None:
    response = await hogflare.client.get("/flags/?v=2")
    assert response.status_code == 200
    assert response.json()["featureFlags"] == {}


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/api/early_access_features/", "earlyAccessFeatures"),
        ("/api/surveys/", "surveys"),
        ("/api/product_tours/", "product_tours"),
        ("/api/web_experiments/", "experiments"),
    ],
)
async def test_public_lists_are_empty_for_a_project_token(hogflare: Hogflare, path: str, key: str) -> None:
    response = await hogflare.client.get(path, params={"token": "phc_abc", "stage": "beta"}, headers=ORIGIN)
    assert (response.status_code, response.json()) == (200, {key: []})
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    missing = await hogflare.client.get(path)
    assert (missing.status_code, missing.json()["code"]) == (401, "missing_api_key")
    personal = await hogflare.client.get(path, params={"token": "phx_secret"})
    assert (personal.status_code, personal.json()["code"]) == (401, "invalid_api_key")


async def test_public_lists_know_only_the_allowed_projects(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path / "data", project_tokens=("phc_allowed",))) as hogflare:
        other = await hogflare.client.get("/api/surveys/", params={"token": "phc_other"})
        allowed = await hogflare.client.get("/api/surveys/", params={"token": "phc_allowed"})
    assert (other.status_code, other.json()["code"]) == (401, "invalid_api_key")
    assert (allowed.status_code, allowed.json()) == (200, {"surveys": []})

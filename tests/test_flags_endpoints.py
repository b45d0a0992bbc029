"""Feature flags as SDKs see them: `/flags` and `/decide` in every encoding and version, the remote
config that says there are flags, the local-evaluation definitions, and the flags file reloaded
while the server runs."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from hogflare.flags_api import MAX_FLAGS_BODY_BYTES
from tests.conftest import TOKEN, Hogflare, make_settings, running
from tests.helpers.server import Server

PERSONAL_KEY = "phx_flags_test_personal"
SECRET_KEY = "phs_flags_test_secret"

#: Hogflare's own format, as `HOGFLARE_FEATURE_FLAGS` holds it.
ENV_FLAGS: dict[str, Any] = {
    "flags": [
        {"key": "always-on", "payload": {"color": "blue"}, "id": 7, "version": 2, "description": "for everyone"},
        {"key": "pro-only", "conditions": [{"properties": [{"key": "plan", "value": "pro", "operator": "eq"}]}]},
        {"key": "retired", "active": False},
        {
            "key": "checkout",
            "type": "multivariate",
            "variants": [{"key": "test", "rollout_percentage": 100, "payload": {"price": 9}}],
        },
        {
            "key": "gold-companies",
            "group_type": "company",
            "conditions": [
                {"properties": [{"key": "tier", "value": "gold", "type": "group", "group_type": "company"}]}
            ],
        },
        {"key": "staging-only", "evaluation_environments": ["staging"]},
        {"key": "salted", "salt": "pepper"},
    ],
    "group_type_mapping": {"0": "company"},
}

#: PostHog's local-evaluation format, as an export from PostHog drops into the flags file.
FILE_FLAGS: dict[str, Any] = {
    "flags": [
        {
            "id": 101,
            "team_id": 1,
            "key": "file-flag",
            "active": True,
            "version": 3,
            "filters": {
                "groups": [
                    {
                        "properties": [
                            {"key": "email", "type": "person", "value": "@example.com", "operator": "icontains"}
                        ],
                        "rollout_percentage": 100,
                    }
                ],
                "payloads": {"true": json.dumps({"source": "file"})},
            },
        },
        {
            "id": 102,
            "key": "file-variant",
            "active": True,
            "filters": {
                "groups": [{"properties": [], "rollout_percentage": 100}],
                "multivariate": {"variants": [{"key": "blue", "name": "Blue", "rollout_percentage": 100}]},
            },
        },
    ],
    "group_type_mapping": {"0": "company"},
    "cohorts": {},
}

#: A flag the core refuses (an operator it does not know); the others must still be served.
BROKEN = {"key": "broken", "conditions": [{"properties": [{"key": "plan", "operator": "nope", "value": "x"}]}]}

ENV_KEYS = {"always-on", "pro-only", "retired", "checkout", "gold-companies", "staging-only", "salted"}
FILE_KEYS = {"file-flag", "file-variant"}


def flags_file(data_dir: Path, document: Any) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "flags.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


@pytest.fixture
async def flagged(tmp_path: Path) -> AsyncIterator[Hogflare]:
    """A server with flags from both sources and keys for the definitions endpoint."""
    data_dir = tmp_path / "data"
    flags_file(data_dir, FILE_FLAGS)
    settings = make_settings(
        data_dir,
        feature_flags=json.dumps(ENV_FLAGS),
        personal_api_keys=(PERSONAL_KEY,),
        project_secret_keys=(SECRET_KEY,),
        person_debug_token="debug",
    )
    async with running(settings) as hogflare:
        yield hogflare


def body(distinct_id: str = "user-1", /, **fields: Any) -> dict[str, Any]:
    return {"token": TOKEN, "distinct_id": distinct_id, **fields}


async def flags_v2(hogflare: Hogflare, payload: dict[str, Any], path: str = "/flags/?v=2") -> dict[str, Any]:
    response = await hogflare.post(path, payload)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def values(answer: dict[str, Any]) -> dict[str, Any]:
    """Each flag's value as posthog-js computes it from the v2 map: the variant, else enabled."""
    return {
        key: flag["variant"] if flag["variant"] is not None else flag["enabled"]
        for key, flag in answer["flags"].items()
    }


# --- /flags?v=2 ------------------------------------------------------------------------------------


async def test_v2_answers_every_flag_with_reason_metadata_and_payload(flagged: Hogflare) -> None:
    before = int(time.time() * 1000)
    answer = await flags_v2(flagged, body(person_properties={"email": "ada@example.com"}))
    after = int(time.time() * 1000)
    assert set(answer["flags"]) == ENV_KEYS | FILE_KEYS
    assert values(answer) == {
        "always-on": True,
        "pro-only": False,
        "retired": False,
        "checkout": "test",
        "gold-companies": False,
        "staging-only": True,
        "salted": True,
        "file-flag": True,
        "file-variant": "blue",
    }
    always = answer["flags"]["always-on"]
    assert always["key"] == "always-on"
    assert always["reason"]["code"] == "condition_match"
    assert always["reason"]["condition_index"] == 0
    assert always["metadata"]["id"] == 7
    assert always["metadata"]["version"] == 2
    assert always["metadata"]["description"] == "for everyone"
    # PostHog sends payloads as JSON-encoded strings; SDKs parse them.
    assert isinstance(always["metadata"]["payload"], str)
    assert json.loads(always["metadata"]["payload"]) == {"color": "blue"}
    assert json.loads(answer["flags"]["checkout"]["metadata"]["payload"]) == {"price": 9}
    assert json.loads(answer["flags"]["file-flag"]["metadata"]["payload"]) == {"source": "file"}
    assert answer["flags"]["pro-only"]["reason"]["code"] == "no_condition_match"
    assert answer["flags"]["retired"]["reason"]["code"] == "flag_disabled"
    assert answer["errorsWhileComputingFlags"] is False
    assert uuid.UUID(answer["requestId"])
    assert before <= answer["evaluatedAt"] <= after
    # The v1 maps ride along for SDKs that read only those.
    assert answer["featureFlags"] == values(answer)
    assert {key: json.loads(value) for key, value in answer["featureFlagPayloads"].items()} == {
        "always-on": {"color": "blue"},
        "checkout": {"price": 9},
        "file-flag": {"source": "file"},
    }
    assert "supportedCompression" not in answer


async def test_request_person_properties_decide_conditions(flagged: Hogflare) -> None:
    pro = await flags_v2(flagged, body(person_properties={"plan": "pro"}))
    assert pro["flags"]["pro-only"]["enabled"] is True
    assert pro["flags"]["pro-only"]["reason"] == {
        "code": "condition_match",
        "condition_index": 0,
        "description": "Matched condition set 1",
    }
    free = await flags_v2(flagged, body(person_properties={"plan": "free"}))
    assert free["flags"]["pro-only"]["enabled"] is False


# --- request encodings ------------------------------------------------------------------------------

PRO = json.dumps(body(person_properties={"plan": "pro"})).encode()
B64 = base64.b64encode(PRO).decode()


@pytest.mark.parametrize(
    ("query", "headers", "content"),
    [
        pytest.param("", {"content-type": "application/json"}, PRO, id="json"),
        pytest.param("", {}, PRO, id="no-content-type"),
        pytest.param("", {"content-type": "text/plain"}, PRO, id="text-plain"),
        pytest.param("&compression=gzip", {"content-type": "text/plain"}, gzip.compress(PRO), id="gzip"),
        pytest.param("&compression=gzip-js", {"content-type": "text/plain"}, gzip.compress(PRO), id="gzip-js"),
        pytest.param("", {"content-type": "application/json"}, gzip.compress(PRO), id="gzip-sniffed"),
        pytest.param(
            "", {"content-type": "application/json", "content-encoding": "gzip"}, gzip.compress(PRO), id="gzip-header"
        ),
        pytest.param("&compression=base64", {"content-type": "text/plain"}, B64.encode(), id="base64"),
        pytest.param("", {"content-type": "text/plain"}, B64.encode(), id="base64-unannounced"),
        pytest.param(
            "&compression=base64",
            {"content-type": "application/x-www-form-urlencoded"},
            f"data={quote(B64, safe='')}".encode(),
            id="form-posthog-js",
        ),
        pytest.param(
            "",
            {"content-type": "application/x-www-form-urlencoded"},
            f"data={B64.rstrip('=')}".encode(),
            id="form-unpadded",
        ),
        # curl's -d labels JSON (or gzip) a form: the bytes say what it is.
        pytest.param("", {"content-type": "application/x-www-form-urlencoded"}, PRO, id="form-labelled-json"),
        pytest.param(
            "&compression=gzip-js",
            {"content-type": "application/x-www-form-urlencoded"},
            gzip.compress(PRO),
            id="form-labelled-gzip",
        ),
        pytest.param(
            "",
            {"content-type": "application/json"},
            PRO.replace(b'"distinct_id"', b'"nothing": NaN, "distinct_id"'),
            id="json5-nan",
        ),
        pytest.param(
            "",
            {"content-type": "text/plain"},
            base64.b64encode(PRO.replace(b'"distinct_id"', b'"nothing": Infinity, "distinct_id"')),
            id="base64-json5",
        ),
    ],
)
async def test_every_encoding_an_sdk_sends_is_read(
    flagged: Hogflare, query: str, headers: dict[str, str], content: bytes
) -> None:
    response = await flagged.client.post(f"/flags/?v=2{query}", content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["flags"]["pro-only"]["enabled"] is True


@pytest.mark.parametrize(
    ("headers", "content", "query", "message"),
    [
        ({"content-type": "application/json"}, b"{not json", "", "not JSON"),
        ({"content-type": "application/json"}, b"[1, 2]", "", "invalid flags request"),
        ({"content-type": "application/json"}, b'{"token": "t", "distinct_id": "u", "groups": [1]}', "", "groups"),
        ({"content-type": "text/plain"}, b"\x1f\x8bnot gzip", "", "gzip"),
        ({"content-type": "text/plain"}, PRO, "&compression=lz64", "unsupported compression"),
        ({"content-type": "application/xml"}, PRO, "", "unsupported content type"),
        ({"content-type": "application/json"}, json.dumps({"token": TOKEN}).encode(), "", "distinct_id"),
        (
            {"content-type": "application/json"},
            b'{"token": "t", "distinct_id": "u", "person_properties": {"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}}",
            "",
            "nested too deeply",
        ),
    ],
)
async def test_a_bad_body_is_400_and_says_why(
    flagged: Hogflare, headers: dict[str, str], content: bytes, query: str, message: str
) -> None:
    response = await flagged.client.post(f"/flags/?v=2{query}", content=content, headers=headers)
    assert response.status_code == 400
    assert message in response.json()["error"]


async def test_a_flags_body_is_refused_past_its_cap_on_the_wire_or_inflated(flagged: Hogflare) -> None:
    """A flags request is read with the worker's event loop held, so its cap is far below the
    event routes': a small gzip body must not inflate into seconds of parsing."""
    padding = {"pad": "x" * MAX_FLAGS_BODY_BYTES}
    raw = json.dumps(body(person_properties=padding)).encode()
    for content, headers in (
        (raw, {"content-type": "application/json"}),
        (gzip.compress(raw), {"content-type": "text/plain"}),
    ):
        response = await flagged.client.post("/flags/?v=2&compression=gzip-js", content=content, headers=headers)
        assert response.status_code == 413, response.text
    assert len(gzip.compress(raw)) < 10_000
    assert (await flagged.post("/flags/?v=2", body())).status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        {"distinct_id": "user-1"},
        {"token": "", "distinct_id": "user-1"},
    ],
)
async def test_no_token_is_401_in_plain_text(flagged: Hogflare, payload: dict[str, Any]) -> None:
    response = await flagged.post("/flags/?v=2", payload)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/plain")
    assert "token" in response.text


async def test_a_refused_token_is_401(tmp_path: Path) -> None:
    async with running(
        make_settings(tmp_path / "data", project_tokens=(TOKEN,), feature_flags=json.dumps(ENV_FLAGS))
    ) as hogflare:
        other = await hogflare.client.post("/flags/?v=2", json={"token": "phc_other", "distinct_id": "u"})
        personal = await hogflare.client.post("/flags/?v=2", json={"token": "phx_personal", "distinct_id": "u"})
        allowed = await hogflare.client.post("/flags/?v=2", json={"token": TOKEN, "distinct_id": "u"})
    assert other.status_code == personal.status_code == 401
    assert "invalid" in other.text
    assert allowed.status_code == 200


# --- request fields and their aliases --------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"token": TOKEN, "distinct_id": "u", "person_properties": {"plan": "pro"}},
        {"$token": TOKEN, "$distinct_id": "u", "$properties": {"plan": "pro"}},
        {"api_key": TOKEN, "distinct_id": "u", "person_properties": {"plan": "pro"}},
    ],
)
async def test_field_aliases(flagged: Hogflare, payload: dict[str, Any]) -> None:
    answer = await flags_v2(flagged, payload)
    assert answer["flags"]["pro-only"]["enabled"] is True


async def test_a_numeric_distinct_id_is_read_as_text(flagged: Hogflare) -> None:
    answer = await flags_v2(flagged, {"token": TOKEN, "distinct_id": 42})
    assert answer["flags"]["always-on"]["enabled"] is True


@pytest.mark.parametrize(
    "groups",
    [
        {"groups": {"company": "acme"}, "group_properties": {"company": {"tier": "gold"}}},
        {"$groups": {"company": "acme"}, "$group_properties": {"company": {"tier": "gold"}}},
    ],
)
async def test_group_flags_read_the_request_groups(flagged: Hogflare, groups: dict[str, Any]) -> None:
    answer = await flags_v2(flagged, body(**groups))
    assert answer["flags"]["gold-companies"]["enabled"] is True
    without = await flags_v2(flagged, body())
    assert without["flags"]["gold-companies"]["enabled"] is False


@pytest.mark.parametrize("field", ["flag_keys_to_evaluate", "flag_keys"])
async def test_flag_keys_limit_the_answer(flagged: Hogflare, field: str) -> None:
    answer = await flags_v2(flagged, body(**{field: ["always-on", "checkout"]}))
    assert set(answer["flags"]) == {"always-on", "checkout"}
    assert answer["featureFlags"] == {"always-on": True, "checkout": "test"}


@pytest.mark.parametrize("field", ["evaluation_environments", "evaluation_contexts"])
async def test_evaluation_environments_pick_flags(flagged: Hogflare, field: str) -> None:
    production = await flags_v2(flagged, body(**{field: ["production"]}))
    assert "staging-only" not in production["flags"]
    assert production["flags"]["always-on"]["enabled"] is True
    staging = await flags_v2(flagged, body(**{field: ["staging"]}))
    assert staging["flags"]["staging-only"]["enabled"] is True


async def test_disable_flags_answers_no_flags(flagged: Hogflare) -> None:
    answer = await flags_v2(flagged, body(disable_flags=True))
    assert answer["flags"] == {}
    assert answer["featureFlags"] == {}


# --- versions and shapes ---------------------------------------------------------------------------

ACTIVE_VALUES = {"always-on": True, "checkout": "test", "staging-only": True, "salted": True, "file-variant": "blue"}
#: What a user with no properties and no groups gets.
PLAIN_VALUES = {**dict.fromkeys(ENV_KEYS | FILE_KEYS, False), **ACTIVE_VALUES}


@pytest.mark.parametrize(
    "path", ["/decide", "/decide/", "/decide?v=1", "/decide/?v=1", "/decide?v=-99999999999999999999"]
)
async def test_decide_v1_lists_the_flags_that_are_on(flagged: Hogflare, path: str) -> None:
    answer = await flags_v2(flagged, body(), path)
    assert sorted(answer["featureFlags"]) == sorted(ACTIVE_VALUES)
    assert uuid.UUID(answer["requestId"])
    assert answer["supportedCompression"] == ["gzip", "gzip-js"]
    assert "flags" not in answer


@pytest.mark.parametrize("path", ["/decide?v=2", "/decide/?v=2"])
async def test_decide_v2_maps_only_the_flags_that_are_on(flagged: Hogflare, path: str) -> None:
    answer = await flags_v2(flagged, body(), path)
    assert answer["featureFlags"] == ACTIVE_VALUES
    assert "flags" not in answer


async def test_decide_v3_has_every_flag_and_payloads_as_json_strings(flagged: Hogflare) -> None:
    answer = await flags_v2(flagged, body(), "/decide/?v=3")
    assert set(answer["featureFlags"]) == ENV_KEYS | FILE_KEYS
    assert answer["featureFlags"]["retired"] is False
    assert answer["featureFlags"]["checkout"] == "test"
    payloads = answer["featureFlagPayloads"]
    assert all(isinstance(value, str) for value in payloads.values())
    assert {key: json.loads(value) for key, value in payloads.items()} == {
        "always-on": {"color": "blue"},
        "checkout": {"price": 9},
    }
    assert answer["errorsWhileComputingFlags"] is False
    assert uuid.UUID(answer["requestId"])
    assert "flags" not in answer
    assert answer["sessionRecording"] is False


@pytest.mark.parametrize("path", ["/decide?v=4", "/decide/?v=5", "/decide?v=99999999999999999999"])
async def test_decide_v4_and_later_answer_the_v2_flags_shape(flagged: Hogflare, path: str) -> None:
    answer = await flags_v2(flagged, body(), path)
    assert values(answer) == PLAIN_VALUES
    assert answer["supportedCompression"] == ["gzip", "gzip-js"]


@pytest.mark.parametrize("path", ["/flags", "/flags/", "/flags?v=1", "/flags/?v=1", "/flags?v=3"])
async def test_flags_v1_has_every_flag_in_both_maps(flagged: Hogflare, path: str) -> None:
    answer = await flags_v2(flagged, body(), path)
    assert answer["featureFlags"] == PLAIN_VALUES
    assert values(answer) == PLAIN_VALUES
    assert set(answer["featureFlagPayloads"]) == {"always-on", "checkout"}


@pytest.mark.parametrize("path", ["/flags/?v=4", "/flags?v=5", "/flags/?v=99999999999999999999"])
async def test_flags_v4_gives_each_record_its_typed_value(flagged: Hogflare, path: str) -> None:
    """posthog-node from 5.74 asks for v4 and reads each flag's value from `value`."""
    answer = await flags_v2(flagged, body(), path)
    assert {key: record["value"] for key, record in answer["flags"].items()} == PLAIN_VALUES
    assert values(answer) == PLAIN_VALUES
    assert answer["featureFlags"] == PLAIN_VALUES
    for record in answer["flags"].values():
        assert record["metadata"]["config_version"] == 1
    assert json.loads(answer["flags"]["checkout"]["metadata"]["payload"]) == {"price": 9}
    # Earlier versions keep PostHog's v2 records as they were.
    older = await flags_v2(flagged, body(), "/flags/?v=2")
    assert all("value" not in record for record in older["flags"].values())
    assert all("config_version" not in record["metadata"] for record in older["flags"].values())


async def test_get_answers_without_evaluating(flagged: Hogflare) -> None:
    response = await flagged.client.get("/flags/?v=2")
    assert response.status_code == 200
    assert response.json()["flags"] == {}


# --- remote config ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/flags/?v=2&config=true", "/flags?v=2&config=1"])
async def test_config_true_merges_the_remote_config_fields(flagged: Hogflare, path: str) -> None:
    answer = await flags_v2(flagged, body(), path)
    assert answer["flags"]["always-on"]["enabled"] is True
    assert answer["supportedCompression"] == ["gzip", "gzip-js"]
    assert answer["hasFeatureFlags"] is True
    assert answer["sessionRecording"] is False
    assert answer["autocapture_opt_out"] is False
    assert answer["analytics"] == {"endpoint": "/i/v0/e/"}


async def test_the_configured_project_token_is_named_in_the_config(tmp_path: Path) -> None:
    """Hogflare's `POSTHOG_API_KEY` appears as `config.apiToken`; without it the key is absent."""
    for api_key in ("phc_configured", None):
        async with running(make_settings(tmp_path / f"data-{api_key}", api_key=api_key)) as hogflare:
            for path in ("/decide/?v=3", "/flags/?v=2&config=true"):
                answer = (await hogflare.client.post(path, json={"token": TOKEN, "distinct_id": "u"})).json()
                assert answer["config"].get("apiToken") == api_key, path


async def test_remote_config_says_there_are_flags(flagged: Hogflare) -> None:
    config = (await flagged.client.get(f"/array/{TOKEN}/config")).json()
    assert config["hasFeatureFlags"] is True
    script = (await flagged.client.get(f"/array/{TOKEN}/config.js")).text
    assert '"hasFeatureFlags":true' in script


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (None, False),
        ([], False),
        ([{"key": "old", "active": False}], False),
        ([{"key": "old", "active": False}, {"key": "new"}], True),
    ],
)
async def test_has_feature_flags_only_with_an_active_flag(
    tmp_path: Path, flags: list[dict[str, Any]] | None, expected: bool
) -> None:
    settings = make_settings(tmp_path / "data", feature_flags=None if flags is None else json.dumps(flags))
    async with running(settings) as hogflare:
        config = (await hogflare.client.get(f"/array/{TOKEN}/config")).json()
    assert config["hasFeatureFlags"] is expected


# --- stored persons and groups ---------------------------------------------------------------------


async def test_stored_person_properties_decide_and_the_request_wins(flagged: Hogflare) -> None:
    capture = {
        "api_key": TOKEN,
        "batch": [{"event": "signed up", "distinct_id": "stored-user", "properties": {"$set": {"plan": "pro"}}}],
    }
    assert (await flagged.post("/batch/", capture)).status_code == 200
    stored = await flags_v2(flagged, body("stored-user"))
    assert stored["flags"]["pro-only"]["enabled"] is True
    overridden = await flags_v2(flagged, body("stored-user", person_properties={"plan": "free"}))
    assert overridden["flags"]["pro-only"]["enabled"] is False
    other_project = await flags_v2(flagged, {"token": "phc_other_project", "distinct_id": "stored-user"})
    assert other_project["flags"]["pro-only"]["enabled"] is False


async def test_stored_group_properties_decide_and_the_request_wins(flagged: Hogflare) -> None:
    identify = {
        "event": "$groupidentify",
        "distinct_id": "someone",
        "properties": {"$group_type": "company", "$group_key": "acme", "$group_set": {"tier": "gold"}},
    }
    assert (await flagged.post("/batch/", {"api_key": TOKEN, "batch": [identify]})).status_code == 200
    acme = await flags_v2(flagged, body(groups={"company": "acme"}))
    assert acme["flags"]["gold-companies"]["enabled"] is True
    other = await flags_v2(flagged, body(groups={"company": "globex"}))
    assert other["flags"]["gold-companies"]["enabled"] is False
    overridden = await flags_v2(
        flagged, body(groups={"company": "acme"}, group_properties={"company": {"tier": "silver"}})
    )
    assert overridden["flags"]["gold-companies"]["enabled"] is False


async def test_evaluation_creates_no_person(flagged: Hogflare) -> None:
    await flags_v2(flagged, body("never-captured", person_properties={"plan": "pro"}))
    response = await flagged.client.get(
        f"/__debug/person/never-captured?token={TOKEN}", headers={"x-hogflare-debug-token": "debug"}
    )
    assert response.json() == {"canonical_id": "never-captured", "record": None}


# --- local evaluation ------------------------------------------------------------------------------

DEFINITION_PATHS = [
    "/api/feature_flag/local_evaluation/",
    "/api/feature_flag/local_evaluation",
    "/flags/definitions",
    "/flags/definitions/",
]


@pytest.mark.parametrize("path", DEFINITION_PATHS)
@pytest.mark.parametrize("key", [PERSONAL_KEY, SECRET_KEY])
async def test_definitions_for_a_known_key(flagged: Hogflare, path: str, key: str) -> None:
    response = await flagged.client.get(
        f"{path}?token={TOKEN}&send_cohorts", headers={"authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200
    document = response.json()
    flags = {flag["key"]: flag for flag in document["flags"]}
    # A salted flag's bucketing cannot be reproduced by an SDK: it is marked as PostHog marks a
    # flag with experience continuity, which the SDKs leave to /flags.
    assert set(flags) == ENV_KEYS | FILE_KEYS
    assert [key for key, flag in flags.items() if flag["ensure_experience_continuity"]] == ["salted"]
    assert document["group_type_mapping"] == {"0": "company"}
    assert "cohorts" in document
    always = flags["always-on"]
    assert always["active"] is True
    # PostHog's name (the flag's description) is a string, empty when none was given.
    assert all(isinstance(flag["name"], str) for flag in flags.values())
    assert isinstance(always["filters"]["groups"], list)
    assert json.loads(always["filters"]["payloads"]["true"]) == {"color": "blue"}
    assert flags["retired"]["active"] is False
    assert [variant["key"] for variant in flags["checkout"]["filters"]["multivariate"]["variants"]] == ["test"]
    assert flags["gold-companies"]["filters"]["aggregation_group_type_index"] == 0
    assert flags["file-flag"]["filters"]["payloads"]["true"] == json.dumps({"source": "file"})
    assert response.headers["etag"]


@pytest.mark.parametrize("path", DEFINITION_PATHS)
@pytest.mark.parametrize(
    ("headers", "code", "detail"),
    [
        # No key at all is DRF's NotAuthenticated; a wrong one its AuthenticationFailed.
        ({}, "not_authenticated", "not provided"),
        ({"authorization": "Bearer phx_wrong"}, "authentication_failed", "Invalid personal API key"),
        ({"authorization": "Bearer phs_wrong"}, "authentication_failed", "Invalid project secret API key"),
        ({"authorization": f"Basic {PERSONAL_KEY}"}, "not_authenticated", "not provided"),
        ({"authorization": f"Bearer {TOKEN}"}, "authentication_failed", "Invalid"),
    ],
)
async def test_definitions_refuse_a_missing_or_wrong_key(
    flagged: Hogflare, path: str, headers: dict[str, str], code: str, detail: str
) -> None:
    response = await flagged.client.get(path, headers=headers)
    assert response.status_code == 401
    error = response.json()
    assert (error["type"], error["code"], error["attr"]) == ("authentication_error", code, None)
    assert detail in error["detail"]


async def test_definitions_etag_gives_304_until_the_flags_change(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = flags_file(data_dir, FILE_FLAGS)
    auth = {"authorization": f"Bearer {PERSONAL_KEY}"}
    async with running(make_settings(data_dir, personal_api_keys=(PERSONAL_KEY,))) as hogflare:
        client = hogflare.client
        first = await client.get("/flags/definitions", headers=auth)
        etag = first.headers["etag"]
        again = await client.get("/flags/definitions", headers={**auth, "if-none-match": etag})
        other = await client.get("/flags/definitions", headers={**auth, "if-none-match": '"stale"'})
        changed = {**FILE_FLAGS, "flags": FILE_FLAGS["flags"][:1]}
        path.write_text(json.dumps(changed))
        await asyncio.sleep(1.1)
        after = await client.get("/flags/definitions", headers={**auth, "if-none-match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert other.status_code == 200
    assert other.content == first.content
    assert after.status_code == 200
    assert after.headers["etag"] != etag
    assert [flag["key"] for flag in after.json()["flags"]] == ["file-flag"]


# --- the flags file, reloaded -----------------------------------------------------------------------


def posthog_flag(key: str, flag_id: int) -> dict[str, Any]:
    return {
        "id": flag_id,
        "key": key,
        "active": True,
        "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]},
    }


async def test_the_flags_file_is_reloaded_without_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = flags_file(data_dir, {"flags": [posthog_flag("first", 1)]})
    async with running(make_settings(data_dir)) as hogflare:

        async def served() -> dict[str, Any]:
            response = await hogflare.client.post("/flags/?v=2", json=body())
            assert response.status_code == 200
            flags: dict[str, Any] = response.json()["featureFlags"]
            return flags

        assert await served() == {"first": True}
        # A bare array of PostHog flag objects is a flags document too.
        path.write_text(json.dumps([posthog_flag("second", 2), posthog_flag("third", 3)]))
        await asyncio.sleep(1.1)
        assert await served() == {"second": True, "third": True}
        # A file that does not read keeps the flags it gave before.
        path.write_text('{"flags": [')
        await asyncio.sleep(1.1)
        assert await served() == {"second": True, "third": True}
        config = (await hogflare.client.get(f"/array/{TOKEN}/config")).json()
        assert config["hasFeatureFlags"] is True
        # A file emptied to be written again keeps its flags until the next check...
        path.write_text("")
        await asyncio.sleep(1.1)
        assert await served() == {"second": True, "third": True}
        path.write_text(json.dumps([posthog_flag("fourth", 4)]))
        await asyncio.sleep(1.1)
        assert await served() == {"fourth": True}
        # ...and one still empty then is meant to be.
        path.write_text("")
        await asyncio.sleep(1.1)
        assert await served() == {"fourth": True}
        await asyncio.sleep(1.1)
        assert await served() == {}
        path.write_text(json.dumps([posthog_flag("second", 2), posthog_flag("third", 3)]))
        await asyncio.sleep(1.1)
        assert await served() == {"second": True, "third": True}
        # Removing the file removes its flags.
        path.unlink()
        await asyncio.sleep(1.1)
        assert await served() == {}
        assert (await hogflare.client.get(f"/array/{TOKEN}/config")).json()["hasFeatureFlags"] is False


async def test_a_flags_file_that_appears_later_is_picked_up(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with running(make_settings(data_dir)) as hogflare:
        assert (await hogflare.client.post("/flags/?v=2", json=body())).json()["flags"] == {}
        flags_file(data_dir, {"flags": [posthog_flag("late", 9)]})
        await asyncio.sleep(1.1)
        assert (await hogflare.client.post("/flags/?v=2", json=body())).json()["featureFlags"] == {"late": True}


async def test_a_named_flags_file_is_used(tmp_path: Path) -> None:
    elsewhere = tmp_path / "config" / "my-flags.json"
    elsewhere.parent.mkdir()
    elsewhere.write_text(json.dumps({"flags": [posthog_flag("named", 5)]}))
    async with running(make_settings(tmp_path / "data", feature_flags_file=elsewhere)) as hogflare:
        answer = (await hogflare.client.post("/flags/?v=2", json=body())).json()
    assert answer["featureFlags"] == {"named": True}


async def test_the_file_wins_over_the_variable_on_the_same_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    file_flag = {**posthog_flag("shared", 1), "filters": {"groups": [{"properties": [], "rollout_percentage": 0}]}}
    flags_file(data_dir, {"flags": [file_flag]})
    async with running(make_settings(data_dir, feature_flags=json.dumps([{"key": "shared"}]))) as hogflare:
        answer = (await hogflare.client.post("/flags/?v=2", json=body())).json()
    assert answer["featureFlags"] == {"shared": False}


async def test_a_bad_flag_is_left_out_and_the_others_are_served(tmp_path: Path) -> None:
    flags = [{"key": "good"}, BROKEN, {"active": True}]
    async with running(make_settings(tmp_path / "data", feature_flags=json.dumps(flags))) as hogflare:
        answer = (await hogflare.client.post("/flags/?v=2", json=body())).json()
    assert answer["featureFlags"] == {"good": True}


@pytest.mark.server
def test_the_server_logs_each_flag_problem_and_keeps_serving(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = flags_file(data_dir, {"flags": [posthog_flag("from-file", 1)]})
    flags = [{"key": "good"}, BROKEN]
    with Server(data_dir, env={"HOGFLARE_FEATURE_FLAGS": json.dumps(flags)}) as server:
        answer = httpx.post(f"{server.url}/flags/?v=2", json=body()).json()
        assert answer["featureFlags"] == {"good": True, "from-file": True}
        assert "broken" in server.log()
        path.write_text("this is not JSON")
        time.sleep(1.1)
        answer = httpx.post(f"{server.url}/flags/?v=2", json=body()).json()
        assert answer["featureFlags"] == {"good": True, "from-file": True}
        log = server.log()
    assert str(path) in log
    assert "still served" in log


@pytest.mark.parametrize("lenient", [False, True], ids=["json", "json5"])
async def test_half_an_emoji_costs_a_flags_request_nothing(flagged: Hogflare, lenient: bool) -> None:
    """A lone surrogate (a string cut inside an emoji) stands in as U+FFFD, as capture stores it:
    the request keeps its other properties and its distinct id."""
    text = json.dumps(body("cut \ud83d", person_properties={"plan": "pro", "title": "smile \ud83d"}))
    if lenient:
        text = text.replace('"plan"', '"nothing": NaN, "plan"')
    response = await flagged.client.post("/flags/?v=2", content=text.encode(), headers={"content-type": "text/plain"})
    assert response.status_code == 200, response.text
    assert response.json()["flags"]["pro-only"]["enabled"] is True

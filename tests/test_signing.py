"""Request signing (``POSTHOG_SIGNING_SECRET``): an HMAC of the raw body on every POST with a payload."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from hogflare.config import Settings
from tests.conftest import TOKEN, Hogflare, event, gz, make_settings, running
from tests.helpers.server import Server, wait_for_rows

SECRET = "whsec_test"
FLAGS = json.dumps({"flags": [{"key": "on-for-all"}]})


def sha256(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sha1(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def capture_body(name: str = "signed") -> bytes:
    return json.dumps(event(name, token=TOKEN)).encode()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", signing_secret=SECRET, feature_flags=FLAGS)


async def post(hogflare: Hogflare, path: str, body: bytes, **headers: str) -> httpx.Response:
    return await hogflare.post(path, body, headers={k.replace("_", "-"): v for k, v in headers.items()})


Signer = Callable[[bytes], dict[str, str]]
SIGNERS: dict[str, Signer] = {
    "posthog sha256=": lambda body: {"x_posthog_signature": f"sha256={sha256(body)}"},
    "posthog bare hex": lambda body: {"x_posthog_signature": sha256(body)},
    "hub sha1=": lambda body: {"x_hub_signature": f"sha1={sha1(body)}"},
    "hub bare hex": lambda body: {"x_hub_signature": sha1(body)},
    "one bad, one good": lambda body: {"x_posthog_signature": "sha256=00", "x_hub_signature": f"sha1={sha1(body)}"},
}


@pytest.mark.parametrize("signer", SIGNERS.values(), ids=SIGNERS.keys())
async def test_signed_requests_land(hogflare: Hogflare, signer: Signer) -> None:
    body = capture_body()
    response = await post(hogflare, "/i/v0/e/", body, **signer(body))
    assert (response.status_code, response.json()) == (200, {"status": 1})
    assert [row["event"] for row in hogflare.rows()] == ["signed"]


async def test_the_raw_bytes_are_signed_not_the_decoded_payload(hogflare: Hogflare) -> None:
    body = gz(json.dumps({"api_key": TOKEN, "batch": [event("gzipped")]}))
    response = await post(hogflare, "/batch/", body, x_posthog_signature=sha256(body), content_encoding="gzip")
    assert response.status_code == 200
    assert [row["event"] for row in hogflare.rows()] == ["gzipped"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing signature header"),
        ({"x_posthog_signature": ""}, "missing signature header"),
        ({"x_posthog_signature": sha256(b"something else")}, "signature verification failed"),
        ({"x_posthog_signature": "sha256=" + sha256(capture_body(), "other secret")}, "signature verification failed"),
        ({"x_posthog_signature": "md5=" + sha256(capture_body())}, "signature verification failed"),
        ({"x_hub_signature": "sha1=" + sha1(b"tampered")}, "signature verification failed"),
    ],
    ids=["unsigned", "empty header", "other body", "other secret", "unknown algorithm", "tampered sha1"],
)
async def test_refused_with_401_and_nothing_stored(hogflare: Hogflare, headers: dict[str, str], message: str) -> None:
    response = await post(hogflare, "/e/", capture_body(), **headers)
    assert response.status_code == 401
    assert response.json() == {"status": 0, "error": message}
    assert hogflare.rows() == []


async def test_tampered_body_is_refused(hogflare: Hogflare) -> None:
    body = capture_body()
    tampered = body.replace(b"signed", b"forged")
    response = await post(hogflare, "/e/", tampered, x_posthog_signature=f"sha256={sha256(body)}")
    assert (response.status_code, response.json()["error"]) == (401, "signature verification failed")
    assert hogflare.rows() == []


@pytest.mark.parametrize("route", ["/e", "/i/v0/e/", "/batch", "/capture", "/track", "/engage", "/identify", "/s/"])
async def test_every_capture_route_is_signed(hogflare: Hogflare, route: str) -> None:
    response = await post(hogflare, route, capture_body())
    assert response.status_code == 401


async def test_a_payload_in_the_query_string_is_refused_since_no_signature_covers_it(hogflare: Hogflare) -> None:
    payload = base64.b64encode(capture_body("forged")).decode()
    signed_body = capture_body("signed")
    signature = {"x-posthog-signature": f"sha256={sha256(signed_body)}"}
    answers = [
        await hogflare.client.get("/e/", params={"data": payload}),
        await hogflare.client.post("/e/", params={"data": payload}, content=signed_body, headers=signature),
    ]
    for response in answers:
        assert (response.status_code, response.json()["error"]) == (
            401,
            "a signed request carries its payload in the body, not in the query string",
        )
    # Reading, which carries no payload, needs no signature.
    assert (await hogflare.client.get("/flags/?v=2")).status_code == 200
    assert (await hogflare.client.get("/array/phc_x/config")).status_code == 200
    assert hogflare.rows() == []


@pytest.mark.parametrize("path", ["/flags/?v=2", "/decide/?v=4"])
async def test_flags_are_signed(hogflare: Hogflare, path: str) -> None:
    body = json.dumps({"token": TOKEN, "distinct_id": "user-1"}).encode()
    unsigned = await post(hogflare, path, body)
    assert (unsigned.status_code, unsigned.json()["error"]) == (401, "missing signature header")
    signed = await post(hogflare, path, body, x_posthog_signature=f"sha256={sha256(body)}")
    assert signed.status_code == 200
    assert signed.json()["featureFlags"]["on-for-all"] is True


async def test_recording_is_signed(hogflare: Hogflare) -> None:
    snapshot = {"event": "$snapshot", "distinct_id": "user-1", "properties": {
        "$session_id": "s1", "$snapshot_data": [{"type": 2, "data": {}}], "token": TOKEN}}  # fmt: skip
    body = json.dumps([snapshot]).encode()
    response = await post(hogflare, "/s/", body, x_hub_signature=f"sha1={sha1(body)}")
    assert response.status_code == 200
    assert [row["event"] for row in hogflare.rows()] == ["$snapshot_items"]


async def test_without_a_secret_nothing_is_checked(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path / "data")) as hogflare:
        response = await post(hogflare, "/e/", capture_body(), x_posthog_signature="sha256=00")
        assert response.status_code == 200


# -- replay protection: HOGFLARE_SIGNATURE_TOLERANCE_SECS


@pytest.fixture
async def timestamped(tmp_path: Path) -> AsyncIterator[Hogflare]:
    settings = make_settings(tmp_path / "data", signing_secret=SECRET, signature_tolerance_secs=300)
    async with running(settings) as hogflare:
        yield hogflare


def timestamp_signature(body: bytes, timestamp: int) -> str:
    return f"sha256={sha256(str(timestamp).encode() + b'.' + body)}"


async def test_timestamp_mode_accepts_a_fresh_signed_timestamp(timestamped: Hogflare) -> None:
    body = capture_body("fresh")
    now = int(time.time())
    response = await post(
        timestamped, "/e/", body, x_posthog_signature=timestamp_signature(body, now), x_posthog_timestamp=str(now)
    )
    assert response.status_code == 200
    assert [row["event"] for row in timestamped.rows()] == ["fresh"]


async def test_timestamp_mode_refusals(timestamped: Hogflare) -> None:
    body = capture_body()
    now = int(time.time())
    cases = [
        ({"x_posthog_signature": timestamp_signature(body, now)}, "missing signature timestamp header"),
        (
            {"x_posthog_signature": timestamp_signature(body, now - 301), "x_posthog_timestamp": str(now - 301)},
            "signature timestamp outside the tolerance window",
        ),
        (
            {"x_posthog_signature": timestamp_signature(body, now + 3600), "x_posthog_timestamp": str(now + 3600)},
            "signature timestamp outside the tolerance window",
        ),
        # The body alone is not what is signed in this mode.
        (
            {"x_posthog_signature": f"sha256={sha256(body)}", "x_posthog_timestamp": str(now)},
            "signature verification failed",
        ),
        # A replayed signature with a fresh timestamp does not verify.
        (
            {"x_posthog_signature": timestamp_signature(body, now - 60), "x_posthog_timestamp": str(now)},
            "signature verification failed",
        ),
    ]
    for headers, message in cases:
        response = await post(timestamped, "/e/", body, **headers)
        assert (response.status_code, response.json()["error"]) == (401, message), headers
    assert timestamped.rows() == []


def test_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {"POSTHOG_SIGNING_SECRET": "s3cret", "HOGFLARE_SIGNATURE_TOLERANCE_SECS": "120"}, data_dir=Path("data")
    )
    assert (settings.signing_secret, settings.signature_tolerance_secs) == ("s3cret", 120)
    assert Settings.from_env({}).signing_secret is None


RECIPE = r"""
payload='[
  {
    "api_key": "phc_example",
    "event": "purchase",
    "distinct_id": "user_12345",
    "properties": { "amount": 29.99 }
  }
]'
signature=$(printf '%s' "$payload" | openssl dgst -sha256 -hmac "$POSTHOG_SIGNING_SECRET" | awk '{print $2}')
curl -sS -o /dev/null -w '%{http_code} ' -X POST "$HOGFLARE/capture" \
  -H "Content-Type: application/json" -H "X-POSTHOG-SIGNATURE: sha256=$signature" -d "$payload"
curl -sS -o /dev/null -w '%{http_code} ' -X POST "$HOGFLARE/capture" \
  -H "Content-Type: application/json" -H "X-POSTHOG-SIGNATURE: sha256=$signature" -d "${payload/29.99/0.01}"
curl -sS -o /dev/null -w '%{http_code}' -X POST "$HOGFLARE/capture" -H "Content-Type: application/json" -d "$payload"
"""


def test_the_readme_recipe_against_a_running_server(tmp_path: Path) -> None:
    """Hogflare's README signs with openssl and sends with curl; the same shell lines work here."""
    with Server(tmp_path / "data", env={"POSTHOG_SIGNING_SECRET": SECRET}) as server:
        result = subprocess.run(
            ["bash", "-c", RECIPE],
            env={**os.environ, "POSTHOG_SIGNING_SECRET": SECRET, "HOGFLARE": server.url},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert result.stdout.split() == ["200", "401", "401"]
        rows = wait_for_rows(server.data_dir, "select event, distinct_id, properties from events", 1)
    assert [(row["event"], row["distinct_id"]) for row in rows] == [("purchase", "user_12345")]
    assert json.loads(rows[0]["properties"])["amount"] == 29.99

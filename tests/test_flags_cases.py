"""Every case of the shared table of PostHog's answers (`tests/fixtures/flags/cases.json`), asked
of a running app's `/flags?v=2` as an SDK asks: enabled, variant, reason and payload must match."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FIXTURES, TOKEN, make_settings, running

CASES: list[dict[str, Any]] = json.loads((FIXTURES / "flags" / "cases.json").read_text())


def document(case: dict[str, Any]) -> dict[str, Any]:
    return {
        "flags": [case["flag"], *case.get("other_flags", [])],
        "group_type_mapping": case.get("group_type_mapping", {}),
        "cohorts": case.get("cohorts", {}),
    }


def request_body(context: dict[str, Any]) -> dict[str, Any]:
    body = {
        "token": TOKEN,
        "distinct_id": context["distinct_id"],
        "person_properties": context.get("person_properties", {}),
        "groups": context.get("groups", {}),
        "group_properties": context.get("group_properties", {}),
    }
    for field, name in (("anon_distinct_id", "$anon_distinct_id"), ("device_id", "$device_id")):
        if context.get(field) is not None:
            body[name] = context[field]
    return body


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
async def test_flags_answers_as_posthog_does(tmp_path: Path, case: dict[str, Any]) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "flags.json").write_text(json.dumps(document(case)))
    async with running(make_settings(data_dir)) as hogflare:
        response = await hogflare.client.post("/flags/?v=2", json=request_body(case["context"]))
    assert response.status_code == 200, response.text
    flag = response.json()["flags"][case["flag"]["key"]]
    expected = case["expected"]
    # The server adds `distinct_id` to the person's properties, as PostHog's does; no case filters on it.
    assert {
        "enabled": flag["enabled"],
        "variant": flag.get("variant"),
        "reason": flag["reason"]["code"],
        "condition_index": flag["reason"].get("condition_index"),
        "payload": flag["metadata"].get("payload"),
    } == {field: expected.get(field) for field in ("enabled", "variant", "reason", "condition_index", "payload")}

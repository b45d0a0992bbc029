"""`hogflare flags list` and `hogflare flags eval`, run as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOKEN, make_settings, running
from tests.helpers.server import Server, free_port

HOGFLARE = str(Path(sys.executable).with_name("hogflare"))

ENV_FLAGS = [
    {"key": "beta", "conditions": [{"properties": [{"key": "plan", "value": "pro"}]}], "payload": {"tier": "pro"}},
    {"key": "retired", "active": False},
    {"key": "checkout", "type": "multivariate", "variants": [{"key": "test", "rollout_percentage": 100}]},
    {
        "key": "gold-companies",
        "group_type": "company",
        "conditions": [{"properties": [{"key": "tier", "value": "gold", "type": "group", "group_type": "company"}]}],
    },
]
#: A flag the core refuses (an operator it does not know); the others must still be served.
BROKEN = {"key": "broken", "conditions": [{"properties": [{"key": "plan", "operator": "nope", "value": "x"}]}]}
FILE_FLAGS = {
    "flags": [
        {
            "id": 1,
            "key": "from-file",
            "active": True,
            "filters": {"groups": [{"properties": [], "rollout_percentage": 100}]},
        }
    ]
}


def run(data_dir: Path, *args: str, flags: Any = None, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("HOGFLARE_", "POSTHOG_"))}
    if flags is not None:
        clean["HOGFLARE_FEATURE_FLAGS"] = flags if isinstance(flags, str) else json.dumps(flags)
    return subprocess.run(
        [HOGFLARE, "flags", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        check=False,
    )


def with_file(tmp_path: Path, document: Any = FILE_FLAGS) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "flags.json").write_text(json.dumps(document))
    return data_dir


def test_list_shows_every_flag_with_its_state_type_and_source(tmp_path: Path) -> None:
    data_dir = with_file(tmp_path)
    result = run(data_dir, "list", flags=ENV_FLAGS)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["KEY", "ACTIVE", "TYPE", "LOCAL", "SOURCE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["beta"][1:4] == ["yes", "boolean", "yes"]
    assert rows["beta"][4] == "HOGFLARE_FEATURE_FLAGS"
    assert rows["retired"][1] == "no"
    assert rows["checkout"][2] == "multivariate"
    assert rows["from-file"][4] == str(data_dir / "flags.json")


def test_list_json(tmp_path: Path) -> None:
    data_dir = with_file(tmp_path)
    result = run(data_dir, "list", "--json", flags=ENV_FLAGS)
    assert result.returncode == 0, result.stderr
    listed = {flag["key"]: flag for flag in json.loads(result.stdout)}
    assert set(listed) == {"beta", "retired", "checkout", "gold-companies", "from-file"}
    assert listed["retired"]["active"] is False
    assert listed["checkout"]["type"] == "multivariate"
    assert listed["from-file"]["source"] == str(data_dir / "flags.json")
    assert listed["beta"]["local"] is True


def test_list_with_no_flags_configured_is_empty_and_succeeds(tmp_path: Path) -> None:
    result = run(tmp_path / "data", "list", "--json")
    assert (result.returncode, json.loads(result.stdout), result.stderr) == (0, [], "")


def test_a_bad_flag_is_reported_and_the_others_listed(tmp_path: Path) -> None:
    flags = [*ENV_FLAGS, BROKEN]
    result = run(tmp_path / "data", "list", "--json", flags=flags)
    assert result.returncode == 0
    assert "HOGFLARE_FEATURE_FLAGS" in result.stderr
    assert "broken" in result.stderr
    assert {flag["key"] for flag in json.loads(result.stdout)} == {"beta", "retired", "checkout", "gold-companies"}


def test_nothing_loadable_from_what_was_configured_fails(tmp_path: Path) -> None:
    result = run(tmp_path / "data", "list", flags="{this is not json")
    assert result.returncode == 1
    assert "HOGFLARE_FEATURE_FLAGS" in result.stderr
    assert "no flag could be loaded" in result.stderr


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        ("{this is not json", "not valid JSON"),
        ([BROKEN], "unknown operator"),
        ({"flag": ENV_FLAGS}, "no flag in it"),
        ({"key": "beta"}, "no flag in it"),
        ("[]", None),
        ({"flags": [], "group_type_mapping": {}}, None),
        ([*ENV_FLAGS, BROKEN], None),
    ],
)
def test_serve_refuses_variable_flags_that_give_no_flag(tmp_path: Path, flags: Any, reason: str | None) -> None:
    """As Hogflare refused them: the variable cannot change while the server runs, and every flag
    would answer off. Flags that load, or none asked for, start the server as usual."""
    data_dir = tmp_path / "data"
    text = flags if isinstance(flags, str) else json.dumps(flags)
    env = {**os.environ, "HOGFLARE_FEATURE_FLAGS": text, "HOGFLARE_LOG_LEVEL": "warning"}
    if reason is None:
        with Server(data_dir, env=env):
            return
    serve = [HOGFLARE, "serve", "--data-dir", str(data_dir), "--port", str(free_port())]
    result = subprocess.run(serve, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "error: invalid setting: HOGFLARE_FEATURE_FLAGS: " in result.stderr
    assert reason in result.stderr
    assert "Traceback" not in result.stderr


def test_a_named_flags_file_that_does_not_exist_fails(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    result = run(tmp_path / "data", "list", HOGFLARE_FEATURE_FLAGS_FILE=str(missing))
    assert result.returncode == 1
    assert str(missing) in result.stderr
    assert "does not exist" in result.stderr


def test_a_broken_file_beside_good_variable_flags_still_succeeds(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "flags.json").write_text("[{")
    result = run(data_dir, "list", "--json", flags=ENV_FLAGS)
    assert result.returncode == 0
    assert str(data_dir / "flags.json") in result.stderr
    assert {flag["key"] for flag in json.loads(result.stdout)} == {"beta", "retired", "checkout", "gold-companies"}


def test_eval_prints_the_v2_flags_answer(tmp_path: Path) -> None:
    data_dir = with_file(tmp_path)
    result = run(
        data_dir,
        "eval",
        "--distinct-id",
        "user-1",
        "--person-properties",
        '{"plan": "pro"}',
        "--groups",
        '{"company": "acme"}',
        "--group-properties",
        '{"company": {"tier": "gold"}}',
        flags=ENV_FLAGS,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    flags = answer["flags"]
    assert {key: flag["variant"] or flag["enabled"] for key, flag in flags.items()} == {
        "beta": True,
        "retired": False,
        "checkout": "test",
        "gold-companies": True,
        "from-file": True,
    }
    assert json.loads(flags["beta"]["metadata"]["payload"]) == {"tier": "pro"}
    assert flags["beta"]["reason"]["code"] == "condition_match"
    assert answer["errorsWhileComputingFlags"] is False


def test_eval_without_properties(tmp_path: Path) -> None:
    result = run(tmp_path / "data", "eval", "--distinct-id", "user-1", flags=ENV_FLAGS)
    assert result.returncode == 0, result.stderr
    flags = json.loads(result.stdout)["flags"]
    assert flags["beta"]["enabled"] is False
    assert flags["gold-companies"]["enabled"] is False


def test_eval_reads_a_null_group_key_as_no_group_as_the_server_does(tmp_path: Path) -> None:
    result = run(
        tmp_path / "data",
        "eval",
        "--distinct-id",
        "user-1",
        "--groups",
        '{"company": null}',
        "--group-properties",
        '{"company": {"tier": "gold"}}',
        flags=ENV_FLAGS,
    )
    assert result.returncode == 0, result.stderr
    gold = json.loads(result.stdout)["flags"]["gold-companies"]
    assert (gold["enabled"], gold["reason"]["code"]) == (False, "no_group_type")


def test_eval_refuses_properties_that_are_not_a_json_object(tmp_path: Path) -> None:
    result = run(tmp_path / "data", "eval", "--distinct-id", "u", "--person-properties", "plan=pro", flags=ENV_FLAGS)
    assert result.returncode == 2
    assert "--person-properties" in result.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--groups", '{"company": {"x": 1}}'),
        ("--groups", '{"company": true}'),
        ("--group-properties", '{"company": 5}'),
    ],
)
def test_eval_refuses_groups_of_the_wrong_shape(tmp_path: Path, option: str, value: str) -> None:
    """A group key is a string or a number; the server would never see `{'x': 1}` as one."""
    result = run(tmp_path / "data", "eval", "--distinct-id", "u", option, value, flags=ENV_FLAGS)
    assert result.returncode == 2
    assert option in result.stderr


async def test_eval_with_a_token_reads_the_stored_person(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with running(make_settings(data_dir)) as hogflare:
        item = {"event": "upgraded", "distinct_id": "stored-user", "properties": {"$set": {"plan": "pro"}}}
        response = await hogflare.client.post("/batch/", json={"api_key": TOKEN, "batch": [item]})
        assert response.status_code == 200
    stored = run(data_dir, "eval", "--distinct-id", "stored-user", "--token", TOKEN, flags=ENV_FLAGS)
    assert stored.returncode == 0, stored.stderr
    assert json.loads(stored.stdout)["flags"]["beta"]["enabled"] is True
    without_token = run(data_dir, "eval", "--distinct-id", "stored-user", flags=ENV_FLAGS)
    assert json.loads(without_token.stdout)["flags"]["beta"]["enabled"] is False


async def test_eval_with_a_token_uses_the_stored_hash_keys_of_experience_continuity(tmp_path: Path) -> None:
    """`flags eval --token` answers a continuity flag as the server would, from the hash key stored
    when the user identified, not from the user's own id."""
    variants = {"variants": [{"key": key, "rollout_percentage": 25} for key in ("a", "b", "c", "d")]}
    flag = {"key": "exp", "active": True, "ensure_experience_continuity": True}
    flag["filters"] = {"groups": [{"properties": [], "rollout_percentage": 100}], "multivariate": variants}
    data_dir = with_file(tmp_path, {"flags": [flag]})
    async with running(make_settings(data_dir)) as hogflare:

        async def variant(**body: Any) -> str:
            response = await hogflare.client.post("/flags/?v=2", json={"token": TOKEN, **body})
            return str(response.json()["flags"]["exp"]["variant"])

        item = {"event": "signed up", "distinct_id": "cli-user", "properties": {"$set": {"plan": "pro"}}}
        assert (await hogflare.client.post("/batch/", json={"api_key": TOKEN, "batch": [item]})).status_code == 200
        own = await variant(distinct_id="cli-user")
        anon = "anon-0"
        for n in range(100):
            anon = f"anon-{n}"
            if await variant(distinct_id=anon) != own:
                break
        seen = await variant(distinct_id="cli-user", **{"$anon_distinct_id": anon})
        assert await variant(distinct_id="cli-user") == seen != own
    stored = run(data_dir, "eval", "--distinct-id", "cli-user", "--token", TOKEN)
    assert stored.returncode == 0, stored.stderr
    assert json.loads(stored.stdout)["flags"]["exp"]["variant"] == seen
    # With continuity turned off, the server reads no hash key, and neither does the CLI.
    (data_dir / "flags.json").write_text(json.dumps({"flags": [{**flag, "ensure_experience_continuity": False}]}))
    off = run(data_dir, "eval", "--distinct-id", "cli-user", "--token", TOKEN)
    assert json.loads(off.stdout)["flags"]["exp"]["variant"] == own


def test_a_token_with_no_store_behind_it_is_an_error(tmp_path: Path) -> None:
    """`--token` asks for the stored person: a mistyped data directory must not answer as if the
    person had no properties."""
    result = run(tmp_path / "typo", "eval", "--distinct-id", "u", "--token", TOKEN, flags=ENV_FLAGS)
    assert result.returncode == 2
    assert "no store in" in result.stderr
    assert not (tmp_path / "typo" / "store").exists()

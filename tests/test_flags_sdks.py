"""Feature flags judged by the real SDKs: for 1,000 seeded users, hogflare's ``/flags?v=2``,
posthog-python's and posthog-node's local evaluation (fed by hogflare's definitions endpoint) and
their fallback to ``/flags`` give the same flags, variants and payloads; posthog-js in Chromium
boots from ``config.js`` cross-origin, reads and reloads its flags, and its ``$feature_flag_called``
events land in the lake; a Hogflare-format config answers like its PostHog-format equivalent."""

from __future__ import annotations

import json
import random
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import posthog
import pytest

from tests.helpers import flag_corpus
from tests.helpers.flag_corpus import FlagValue, Json
from tests.helpers.server import Server, wait_for_rows

pytestmark = [
    pytest.mark.server,
    pytest.mark.sdk,
    # The SDKs mark their per-flag getters as deprecated in favour of evaluate_flags; they are what
    # most code in the field still calls.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

JS = Path(__file__).parent / "js"
FIXTURES = Path(__file__).parent / "fixtures" / "flags"
PERSONAL_KEY = "phx_test"
TOKEN = "phc_flags_sdks"
USERS = 1000
SAMPLED_USERS = 40

#: Flags posthog-python and posthog-node can never decide alone: they always ask /flags.
SERVER_ONLY = {"continuity", "signup-exact"}

Mismatch = tuple[str, str, str, Any, Any, str]


def start(tmp_path_factory: pytest.TempPathFactory, name: str, document: Json | None, **env: str) -> Server:
    data_dir = tmp_path_factory.mktemp(name) / "data"
    data_dir.mkdir(parents=True)
    if document is not None:
        (data_dir / "flags.json").write_text(json.dumps(document))
    return Server(data_dir, env={"HOGFLARE_PERSONAL_API_KEYS": PERSONAL_KEY, **env}).start()


@pytest.fixture(scope="module")
def rich_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start(tmp_path_factory, "flags-rich", flag_corpus.document())
    try:
        yield server
    finally:
        server.stop()


def definitions(server: Server, path: str = "/flags/definitions") -> Json:
    response = httpx.get(
        f"{server.url}{path}",
        params={"token": TOKEN, "send_cohorts": ""},
        headers={"Authorization": f"Bearer {PERSONAL_KEY}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    document: Json = response.json()
    return document


def python_client(server: Server) -> posthog.Posthog:
    client = posthog.Posthog(
        TOKEN,
        host=server.url,
        personal_api_key=PERSONAL_KEY,
        poll_interval=600,
        flush_interval=60,
        feature_flags_request_timeout_seconds=10,
    )
    client.load_feature_flags()  # type: ignore[no-untyped-call]
    return client


def sdk_options(user: Json) -> dict[str, Any]:
    return {
        "person_properties": user["person_properties"],
        "groups": user["groups"],
        "group_properties": user["group_properties"],
    }


def parsed_payloads(payloads: dict[str, Any] | None) -> dict[str, Any]:
    return {key: flag_corpus.payload_value(raw) for key, raw in (payloads or {}).items() if raw is not None}


def compare(
    sdk: str, user: Json, got: dict[str, Any], expected: dict[str, Any], answer: Json, keys: set[str] | None = None
) -> list[Mismatch]:
    """Each key of ``got`` (or of ``keys``) that differs from ``expected``, with the server's reason."""
    found = []
    for key in sorted(keys if keys is not None else got):
        if got.get(key) != expected.get(key):
            reason = (answer["flags"].get(key) or {}).get("reason")
            found.append((sdk, user["distinct_id"], key, got.get(key), expected.get(key), json.dumps(reason)))
    return found


def report(mismatches: list[Mismatch], users: list[Json]) -> str:
    by_id = {user["distinct_id"]: user for user in users}
    lines = [f"{len(mismatches)} disagreements; by flag: {dict(Counter(m[2] for m in mismatches))}"]
    for sdk, distinct_id, key, got, expected, reason in mismatches[:25]:
        user = by_id[distinct_id]
        lines.append(
            f"{sdk}: {key} for {distinct_id}: sdk={got!r} server={expected!r} server reason={reason} "
            f"person={json.dumps(user['person_properties'])} groups={json.dumps(user['groups'])}"
        )
    return "\n".join(lines)


def run_node(server: Server, work: Path, users: list[Json], sample: list[tuple[int, str]]) -> Json:
    source, target = work / "node-users.json", work / "node-answers.json"
    source.write_text(json.dumps({"users": users, "sample": sample}))
    args = ["node", str(JS / "flags_node.mjs"), "--host", server.url, "--token", TOKEN, "--key", PERSONAL_KEY]
    result = subprocess.run(
        [*args, "--input", str(source), "--output", str(target)], capture_output=True, text=True, timeout=80, cwd=JS
    )
    assert result.returncode == 0, result.stderr[-4000:]
    output: Json = json.loads(target.read_text())
    return output


# --- the definitions the SDKs read --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/flags/definitions", "/api/feature_flag/local_evaluation/"])
def test_definitions_serve_the_whole_flags_file(rich_server: Server, path: str) -> None:
    served = definitions(rich_server, path)
    written = flag_corpus.document()
    assert sorted(flag["key"] for flag in served["flags"]) == sorted(flag["key"] for flag in written["flags"])
    assert served["group_type_mapping"] == flag_corpus.GROUP_TYPE_MAPPING
    assert set(served["cohorts"]) == set(flag_corpus.COHORTS)
    by_key = {flag["key"]: flag for flag in served["flags"]}
    for flag in written["flags"]:
        mine = by_key[flag["key"]]
        assert mine["active"] == flag["active"], flag["key"]
        for field in ("groups", "multivariate", "payloads", "aggregation_group_type_index", "holdout", "early_exit"):
            assert _meaning(mine["filters"].get(field)) == _meaning(flag["filters"].get(field)), (flag["key"], field)
        assert bool(mine.get("ensure_experience_continuity")) == flag["ensure_experience_continuity"], flag["key"]


def _meaning(value: Any) -> Any:
    """A definition as the SDKs read it: a null field is an absent one, an empty map no map."""
    if isinstance(value, dict):
        kept = {key: _meaning(item) for key, item in value.items() if item is not None}
        return kept or None
    if isinstance(value, list):
        return [_meaning(item) for item in value]
    return value


# --- 1,000 users: server, posthog-python, posthog-node ------------------------------------------------


def test_server_posthog_python_and_posthog_node_agree_for_1000_users(rich_server: Server, tmp_path: Path) -> None:
    users = flag_corpus.users(USERS)
    active = {flag["key"] for flag in flag_corpus.rich_flags() if flag["active"]}
    keys = {flag["key"] for flag in flag_corpus.rich_flags()}
    with_payloads = sorted(flag["key"] for flag in flag_corpus.rich_flags() if flag["filters"]["payloads"])
    rng = random.Random(7)
    # Per-flag getters for a sample, with the server-only flags among them: each of those asks
    # /flags for that one key.
    sample = [
        (index, key)
        for index in rng.sample(range(USERS), SAMPLED_USERS)
        for key in [*with_payloads, *sorted(SERVER_ONLY)]
    ]

    # The server, as every SDK's fallback asks it.
    answers: list[Json] = []
    server: list[tuple[dict[str, FlagValue], dict[str, Any]]] = []
    with httpx.Client(base_url=rich_server.url, timeout=10) as http:
        for user in users:
            answer = flag_corpus.server_answer(http, TOKEN, user)
            assert answer["errorsWhileComputingFlags"] is False, (user, answer)
            assert active <= set(answer["flags"]), sorted(active - set(answer["flags"]))
            answers.append(answer)
            server.append(flag_corpus.answer_of(answer))

    def server_value(index: int, key: str) -> FlagValue:
        return server[index][0].get(key, False)

    mismatches: list[Mismatch] = []
    local_counts: dict[str, Counter[str]] = {"python": Counter(), "node": Counter()}

    # posthog-python: locally alone (a flag it cannot decide is left out), then with /flags for the rest.
    client = python_client(rich_server)
    try:
        assert sorted(flag["key"] for flag in client.feature_flags or []) == sorted(keys)
        # A second poll is answered 304 to the ETag, and the definitions stay.
        client.load_feature_flags()  # type: ignore[no-untyped-call]
        assert sorted(flag["key"] for flag in client.feature_flags or []) == sorted(keys)
        for index, user in enumerate(users):
            values, payloads = server[index]
            alone = client.get_all_flags_and_payloads(
                user["distinct_id"], only_evaluate_locally=True, **sdk_options(user)
            )
            local = alone["featureFlags"] or {}
            local_counts["python"].update(local.keys())
            mismatches += compare("python local", user, local, values | _falses(keys, values), answers[index])
            local_payloads = {k: v for k, v in parsed_payloads(alone["featureFlagPayloads"]).items() if k in local}
            expected = {k: v for k, v in payloads.items() if k in local}
            mismatches += compare("python local payload", user, local_payloads, expected, answers[index], set(local))
            helped = client.get_all_flags_and_payloads(user["distinct_id"], **sdk_options(user))
            combined = {key: (helped["featureFlags"] or {}).get(key, False) for key in keys}
            mismatches += compare("python", user, combined, values | _falses(keys, values), answers[index])
            mismatches += compare(
                "python payload", user, parsed_payloads(helped["featureFlagPayloads"]), payloads, answers[index], keys
            )
        for index, key in sample:
            user = users[index]
            value = client.get_feature_flag(
                key, user["distinct_id"], send_feature_flag_events=False, **sdk_options(user)
            )
            payload = client.get_feature_flag_payload(key, user["distinct_id"], **sdk_options(user))
            got = {key: value, f"{key} payload": payload}
            want = {key: server_value(index, key), f"{key} payload": server[index][1].get(key)}
            mismatches += compare("python get_feature_flag", user, got, want, answers[index])
    finally:
        client.shutdown()

    # posthog-node: the same users in one process.
    node = run_node(rich_server, tmp_path, users, sample)
    assert node["errors"] == [], node["errors"][:5]
    # posthog-node asks /flags?v=4 and reads each flag's typed value: nothing says the format is old.
    assert node["notices"] == [], node["notices"]
    assert node["loaded"] == sorted(keys)
    for index, user in enumerate(users):
        values, payloads = server[index]
        local = node["local"][index]
        local_counts["node"].update(local["flags"].keys())
        mismatches += compare("node local", user, local["flags"], values | _falses(keys, values), answers[index])
        expected = {k: v for k, v in payloads.items() if k in local["flags"]}
        mismatches += compare(
            "node local payload", user, local["payloads"], expected, answers[index], set(local["flags"])
        )
        combined = {key: node["combined"][index]["flags"].get(key, False) for key in keys}
        mismatches += compare("node", user, combined, values | _falses(keys, values), answers[index])
        mismatches += compare("node payload", user, node["combined"][index]["payloads"], payloads, answers[index], keys)
    for (index, key), got in zip(sample, node["sampled"], strict=True):
        user = users[index]
        want = {key: server_value(index, key), f"{key} payload": server[index][1].get(key)}
        mismatches += compare(
            "node getFeatureFlag", user, {key: got["value"], f"{key} payload": got["payload"]}, want, answers[index]
        )

    assert not mismatches, report(mismatches, users)

    # Local evaluation did the work: every flag it can decide was decided locally for some users,
    # and the ones it cannot went to the server every time.
    for sdk, counts in local_counts.items():
        assert set(counts) == keys - SERVER_ONLY, (sdk, sorted((keys - SERVER_ONLY) ^ set(counts)))
        decided = sum(counts.values())
        assert decided > 0.7 * USERS * len(keys - SERVER_ONLY), (sdk, decided)


def test_a_flag_read_for_an_id_without_a_person_makes_no_person(rich_server: Server) -> None:
    """posthog-python reads a flag for a stranger and for a known user, and sends
    `$feature_flag_called` for each: as on PostHog, the stranger's is personless and makes no
    person (a server's flag checks would otherwise leave a person for every id it asks about),
    the known user's goes with their person."""
    run_id = uuid.uuid4().hex
    stranger, user = f"flag-stranger-{run_id}", f"flag-user-{run_id}"
    client = python_client(rich_server)
    try:
        client.capture("signed up", distinct_id=user, properties={"$set": {"plan": "pro"}})
        assert client.get_feature_flag("always-on", stranger) is True
        assert client.get_feature_flag("always-on", user) is True
    finally:
        client.shutdown()
    sql = (
        "select distinct_id, person_id, person_properties, properties from events "
        f"where event = '$feature_flag_called' and distinct_id in ('{stranger}', '{user}')"
    )
    rows = {row["distinct_id"]: row for row in wait_for_rows(rich_server.data_dir, sql, 2, timeout=30)}
    assert set(rows) == {stranger, user}
    assert json.loads(rows[stranger]["properties"])["$process_person_profile"] is False
    assert json.loads(rows[stranger]["person_properties"]) == {}
    persons = f"select distinct_ids from persons where list_has_any(distinct_ids, ['{stranger}', '{user}'])"
    assert {tuple(row["distinct_ids"]) for row in wait_for_rows(rich_server.data_dir, persons, 1)} == {(user,)}
    assert json.loads(rows[user]["person_properties"])["plan"] == "pro"


def _falses(keys: set[str], values: dict[str, FlagValue]) -> dict[str, FlagValue]:
    """A flag missing from /flags reads as ``False`` in every SDK."""
    return {key: False for key in keys if key not in values}


# --- posthog-js in Chromium -------------------------------------------------------------------------

JS_TOKEN = "phc_flags_js"
PRO = flag_corpus.person("plan", "exact", ["pro"])
JS_FLAGS = [
    flag_corpus.flag(
        301, "js-on", [flag_corpus.cond()], payloads=flag_corpus.payloads(true={"color": "blue", "sizes": [1, 2]})
    ),
    flag_corpus.flag(
        302,
        "js-variant",
        [flag_corpus.cond()],
        multivariate=flag_corpus.variants(("red", 50), ("green", 50)),
        payloads=flag_corpus.payloads(red={"hex": "#f00"}, green={"hex": "#0f0"}),
    ),
    flag_corpus.flag(303, "js-pro", [flag_corpus.cond(PRO)], payloads=flag_corpus.payloads(true="welcome, pro")),
    flag_corpus.flag(
        304,
        "js-pro-variant",
        [flag_corpus.cond(PRO, variant="gold"), flag_corpus.cond(rollout=0)],
        multivariate=flag_corpus.variants(("silver", 100), ("gold", 0)),
    ),
    flag_corpus.flag(305, "js-off", [flag_corpus.cond(rollout=0)]),
    flag_corpus.flag(306, "js-inactive", [flag_corpus.cond()], active=False),
]


@pytest.fixture(scope="module")
def js_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start(tmp_path_factory, "flags-js", {"flags": JS_FLAGS})
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.browser
def test_posthog_js_boots_reads_and_reloads_flags_cross_origin(js_server: Server) -> None:
    run_id = uuid.uuid4().hex
    args = ["node", str(JS / "flags_browser.mjs"), "--host", js_server.url, "--token", JS_TOKEN, "--run-id", run_id]
    result = subprocess.run(args, capture_output=True, text=True, timeout=90, cwd=JS)
    assert result.returncode == 0, result.stderr[-4000:]
    page: Json = json.loads(result.stdout.strip().splitlines()[-1])
    assert page["page_errors"] == []
    assert page["failed"] == [], page["failed"]
    paths = [(request["method"], request["path"], request["status"]) for request in page["requests"]]
    assert ("GET", f"/array/{JS_TOKEN}/config.js", 200) in paths, paths
    assert any(method == "POST" and path.rstrip("/") == "/flags" and status == 200 for method, path, status in paths)
    assert page["booted"], page
    anon, user = page["anon_id"], page["user_id"]

    # What the page read before identify: the server's answer for the anonymous visitor then.
    anon_values, anon_payloads = flag_corpus.answer_of(page["server_before"])
    with httpx.Client(base_url=js_server.url, timeout=10) as http:
        pro = flag_corpus.server_answer(
            http,
            JS_TOKEN,
            {"distinct_id": user, "person_properties": {"plan": "pro"}, "groups": {}, "group_properties": {}},
        )
        # The anonymous id now belongs to the identified person: the store's plan=pro decides.
        merged = flag_corpus.server_answer(
            http, JS_TOKEN, {"distinct_id": anon, "person_properties": {}, "groups": {}, "group_properties": {}}
        )
    pro_values, pro_payloads = flag_corpus.answer_of(pro)
    assert flag_corpus.answer_of(merged)[0]["js-pro"] is True
    assert anon_values["js-variant"] in {"red", "green"}
    before = page["before"]
    assert before["distinct_id"] == anon
    assert (before["on"], before["pro"], before["off"]) == (True, False, False)
    assert before["inactive"] in (False, None)
    assert before["variant"] == anon_values["js-variant"]
    assert before["pro_variant"] == anon_values["js-pro-variant"] is False
    assert before["on_payload"] == anon_payloads["js-on"] == {"color": "blue", "sizes": [1, 2]}
    assert (
        before["variant_payload"]
        == anon_payloads["js-variant"]
        == {"hex": f"#{'f00' if before['variant'] == 'red' else '0f0'}"}
    )
    assert before["pro_payload"] is None
    first = page["calls"][0]
    assert first["errorsLoading"] is False
    assert first["flags"] == sorted(key for key, value in anon_values.items() if value)
    assert {key: first["variants"].get(key, False) for key in anon_values} == anon_values

    # identify set plan=pro; after reloadFeatureFlags the flag on it is on, with its override and payload.
    assert page["flipped"], page["calls"]
    after = page["after"]
    assert after["distinct_id"] == user
    assert (after["on"], after["pro"], after["pro_variant"]) == (True, True, "gold")
    assert after["pro_payload"] == pro_payloads["js-pro"] == "welcome, pro"
    assert after["variant"] == pro_values["js-variant"]
    last = page["calls"][-1]
    assert {key: last["variants"].get(key, False) for key in pro_values} == pro_values

    # Each flag read sent $feature_flag_called once per person and value; they land in the lake.
    sql = (
        "select distinct_id, properties from events "
        f"where api_key = '{JS_TOKEN}' and event = '$feature_flag_called' "
        f"and json_extract_string(properties, '$.run_id') = '{run_id}'"
    )
    expected = {
        (anon, "js-on", True),
        (anon, "js-variant", before["variant"]),
        (anon, "js-pro", False),
        (user, "js-pro", True),
        (user, "js-pro-variant", "gold"),
    }
    rows = wait_for_rows(js_server.data_dir, sql, len(expected), timeout=30)
    called = {}
    for row in rows:
        properties = json.loads(row["properties"])
        called[row["distinct_id"], properties["$feature_flag"], properties["$feature_flag_response"]] = properties
        assert properties[f"$feature/{properties['$feature_flag']}"] == properties["$feature_flag_response"]
    assert expected <= set(called), sorted(map(str, called))
    # The metadata of /flags rides along: the flag's id, version, reason and payload.
    pro_called = called[user, "js-pro", True]
    assert pro_called["$feature_flag_id"] == 303
    assert pro_called["$feature_flag_version"] == 1
    assert pro_called["$feature_flag_reason"] == "Matched condition set 1"
    assert json.loads(pro_called["$feature_flag_payload"]) == "welcome, pro"


# --- Hogflare's format and PostHog's -----------------------------------------------------------------

PAIRS: list[Json] = json.loads((FIXTURES / "hogflare_format.json").read_text())


def _mapping() -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in PAIRS:
        mapping |= pair.get("group_type_mapping") or {}
    return mapping


def _pair_users(count: int) -> list[Json]:
    """Users over the properties the pairs read, some of them missing."""
    rng = random.Random(11)
    made = []
    for index in range(count):
        candidates: Json = {
            "plan": rng.choice(["pro", "Pro", "free", "trial", "team"]),
            "country": rng.choice(["US", "us", "CA", "GB"]),
            "name": rng.choice(["Acme Corp", "acme corp", "Globex", "The Acme"]),
            "email": rng.choice(["ada@corp.com", "bob@CORP.io", "eve@home.net"]),
            "app": rng.choice(["ios-17", "android", "iOS", "web-ios"]),
            "signed_up": rng.choice(["2024-01-01", None]),
            "churned": rng.choice([True, False]),
        }
        properties = {key: value for key, value in candidates.items() if rng.random() < 0.8}
        groups: dict[str, str] = {}
        group_properties: dict[str, Json] = {}
        if rng.random() < 0.7:
            groups["company"] = f"co-{rng.randrange(10)}"
            group_properties["company"] = {"seats": rng.choice([1, 10, 11, 500])}
        made.append(
            {
                "distinct_id": f"pair-user-{index}",
                "person_properties": properties,
                "groups": groups,
                "group_properties": group_properties,
            }
        )
    return made


@pytest.fixture(scope="module")
def format_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    mapping = _mapping()
    hogflare = {"flags": [pair["hogflare"] for pair in PAIRS], "group_type_mapping": mapping}
    document = {"flags": [pair["posthog"] for pair in PAIRS], "group_type_mapping": mapping}
    env_server = start(tmp_path_factory, "flags-hogflare", None, HOGFLARE_FEATURE_FLAGS=json.dumps(hogflare))
    try:
        file_server = start(tmp_path_factory, "flags-posthog", document)
        try:
            yield env_server, file_server
        finally:
            file_server.stop()
    finally:
        env_server.stop()


def _essentials(answer: Json) -> dict[str, tuple[Any, ...]]:
    return {
        key: (
            detail["enabled"],
            detail.get("variant"),
            (detail.get("reason") or {}).get("code"),
            (detail.get("reason") or {}).get("condition_index"),
            flag_corpus.payload_value((detail.get("metadata") or {}).get("payload")),
        )
        for key, detail in answer["flags"].items()
    }


def test_hogflare_format_and_its_posthog_equivalent_answer_alike(format_servers: tuple[Server, Server]) -> None:
    env_server, file_server = format_servers
    contexts = [
        case["context"] | {"expected": case["expected"], "flag": pair["posthog"]["key"]}
        for pair in PAIRS
        for case in pair["contexts"]
    ]
    users = [
        {key: context[key] for key in ("distinct_id", "person_properties", "groups", "group_properties")}
        for context in contexts
    ] + _pair_users(200)
    keys = {pair["posthog"]["key"] for pair in PAIRS}
    differences: list[tuple[Any, ...]] = []
    with (
        httpx.Client(base_url=env_server.url, timeout=10) as from_env,
        httpx.Client(base_url=file_server.url, timeout=10) as from_file,
    ):
        for index, user in enumerate(users):
            hogflare = _essentials(flag_corpus.server_answer(from_env, TOKEN, user))
            posthog_format = _essentials(flag_corpus.server_answer(from_file, TOKEN, user))
            assert set(posthog_format) == keys, sorted(posthog_format)
            for key in sorted(keys):
                if hogflare.get(key) != posthog_format[key]:
                    differences.append((user["distinct_id"], key, hogflare.get(key), posthog_format[key], user))
            if index < len(contexts):
                expected = contexts[index]["expected"]
                key = contexts[index]["flag"]
                want = (
                    expected["enabled"],
                    expected["variant"],
                    expected["reason"],
                    expected["condition_index"],
                    flag_corpus.payload_value(expected["payload"]),
                )
                if posthog_format[key] != want:
                    differences.append((user["distinct_id"], key, "fixture", want, posthog_format[key]))
    assert not differences, "\n".join(map(str, differences[:20]))


def test_hogflare_format_flags_are_served_as_definitions_the_sdk_evaluates(
    format_servers: tuple[Server, Server],
) -> None:
    env_server, _ = format_servers
    served = definitions(env_server)
    assert sorted(flag["key"] for flag in served["flags"]) == sorted(pair["hogflare"]["key"] for pair in PAIRS)
    users = _pair_users(200)
    mismatches: list[Mismatch] = []
    decided = 0
    client = python_client(env_server)
    try:
        with httpx.Client(base_url=env_server.url, timeout=10) as http:
            for user in users:
                answer = flag_corpus.server_answer(http, TOKEN, user)
                values, payloads = flag_corpus.answer_of(answer)
                alone = client.get_all_flags_and_payloads(
                    user["distinct_id"], only_evaluate_locally=True, **sdk_options(user)
                )
                local = alone["featureFlags"] or {}
                decided += len(local)
                mismatches += compare("python local", user, local, values, answer)
                local_payloads = parsed_payloads(alone["featureFlagPayloads"])
                mismatches += compare(
                    "python local payload",
                    user,
                    local_payloads,
                    {k: payloads.get(k) for k in local},
                    answer,
                    set(local),
                )
    finally:
        client.shutdown()
    assert not mismatches, report(mismatches, users)
    assert decided > len(users) * len(PAIRS) // 2, decided


def test_a_salted_flag_is_in_every_whole_set_answer(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """The SDKs cannot bucket a Hogflare `salt`, so they ask /flags for it, also when they answer
    for every flag at once (which asks /flags only when some flag was left undecided)."""
    flags = [
        {"key": "salted", "rollout_percentage": 100, "salt": "pepper"},
        {"key": "plain", "rollout_percentage": 100},
    ]
    server = start(tmp_path_factory, "flags-salted", None, HOGFLARE_FEATURE_FLAGS=json.dumps(flags))
    try:
        client = python_client(server)
        try:
            everything = {"salted": True, "plain": True}
            assert client.get_all_flags("u1") == everything
            assert client.get_all_flags("u1", only_evaluate_locally=True) == {"plain": True}
            assert client.get_feature_flag("salted", "u1") is True
        finally:
            client.shutdown()
        user = {"distinct_id": "u1", "person_properties": {}, "groups": {}, "group_properties": {}}
        node = run_node(server, tmp_path, [user], [(0, "salted")])
        assert node["errors"] == []
        assert node["local"][0]["flags"] == {"plain": True}
        assert node["combined"][0]["flags"] == everything
        assert node["sampled"][0]["value"] is True
    finally:
        server.stop()

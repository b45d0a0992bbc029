"""A rich PostHog local-evaluation document and seeded users for the flag consistency tests, and a
way to read one user's answer from ``/flags?v=2`` in the shape the SDKs return.

The flags cover what posthog-python and posthog-node evaluate locally (every property operator,
multivariate flags with payloads, variant overrides, group flags, mixed targeting, a holdout,
cohorts with nesting and negation, flag dependencies, ``early_exit``) and a few they hand back to
the server (experience continuity, ``is_date_exact``, missing properties), which must agree all the
same. Property values stay where PostHog's server and both SDKs read them alike: dates in ISO form
with an explicit zone or none, numbers for the numeric operators, ASCII text."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx

Json = dict[str, Any]
#: What an SDK returns for one flag: ``True``/``False`` or the variant.
FlagValue = bool | str

GROUP_TYPE_MAPPING = {"0": "company", "1": "project"}
HOLDOUT_ID = 7


def person(key: str, operator: str, value: Any = None, **extra: Any) -> Json:
    prop: Json = {"key": key, "type": "person", "operator": operator, **extra}
    if value is not None:
        prop["value"] = value
    return prop


def group(key: str, operator: str, value: Any, index: int = 0) -> Json:
    return {"key": key, "type": "group", "group_type_index": index, "operator": operator, "value": value}


def depends(key: str, value: bool | str, chain: list[str]) -> Json:
    return {"key": key, "type": "flag", "operator": "flag_evaluates_to", "value": value, "dependency_chain": chain}


def in_cohort(cohort_id: int, operator: str = "in") -> Json:
    return {"key": "id", "type": "cohort", "operator": operator, "value": cohort_id}


def cond(*properties: Json, rollout: float | None = 100, variant: str | None = None, **extra: Any) -> Json:
    return {"properties": list(properties), "rollout_percentage": rollout, "variant": variant, **extra}


def payloads(**values: Any) -> dict[str, str]:
    """PostHog keeps each payload as JSON text."""
    return {key: json.dumps(value) for key, value in values.items()}


def variants(*pairs: tuple[str, float]) -> Json:
    return {"variants": [{"key": key, "name": key.title(), "rollout_percentage": share} for key, share in pairs]}


def flag(flag_id: int, key: str, conditions: list[Json], **filters: Any) -> Json:
    """One flag object as PostHog's local-evaluation endpoint lists it."""
    active = filters.pop("active", True)
    continuity = filters.pop("ensure_experience_continuity", False)
    return {
        "id": flag_id,
        "team_id": 1,
        "name": key,
        "key": key,
        "active": active,
        "deleted": False,
        "version": 1 + flag_id % 3,
        "ensure_experience_continuity": continuity,
        "bucketing_identifier": None,
        "evaluation_runtime": "all",
        "filters": {
            "groups": conditions,
            "multivariate": filters.pop("multivariate", None),
            "payloads": filters.pop("payloads", {}),
            "aggregation_group_type_index": filters.pop("aggregation_group_type_index", None),
            "holdout": filters.pop("holdout", None),
            **filters,
        },
    }


COHORTS: dict[str, Json] = {
    # Adults in the US, or paying users who are not in the beta.
    "1": {
        "type": "OR",
        "values": [
            {
                "type": "AND",
                "values": [person("country", "exact", ["US"]), person("age", "gte", 21)],
            },
            {
                "type": "AND",
                "values": [
                    person("plan", "exact", ["pro", "enterprise"]),
                    person("beta", "exact", ["true"], negation=True),
                ],
            },
        ],
    },
    # Cohort 1 members with an example address: a cohort inside a cohort.
    "2": {
        "type": "AND",
        "values": [
            {
                "type": "AND",
                "values": [in_cohort(1), person("email", "icontains", "example")],
            }
        ],
    },
}


def rich_flags() -> list[Json]:
    mv = variants(("control", 34), ("test", 33), ("test-b", 33))
    return [
        flag(1, "always-on", [cond()], payloads=payloads(true={"welcome": True, "limits": [1, 2, 3]})),
        flag(2, "half-rollout", [cond(rollout=50)], payloads=payloads(true="half")),
        flag(3, "zero-rollout", [cond(rollout=0)]),
        flag(4, "inactive", [cond()], active=False, payloads=payloads(true="never")),
        flag(
            5,
            "email-domain",
            [cond(person("email", "icontains", "@EXAMPLE."), person("email", "not_icontains", "spam"))],
        ),
        flag(6, "email-regex", [cond(person("email", "regex", r"^[a-z]+[0-9]*@example\.(com|org)$"))]),
        flag(7, "email-not-regex", [cond(person("email", "not_regex", r"@posthog\.com$"))]),
        flag(8, "starts-with", [cond(person("email", "starts_with", "A"))]),
        flag(9, "ends-with", [cond(person("email", "ends_with", ".ORG"))]),
        flag(
            10,
            "not-starts-ends",
            [cond(person("email", "not_starts_with", "z"), person("email", "not_ends_with", ".io"))],
        ),
        flag(11, "plan-exact", [cond(person("plan", "exact", ["pro", "enterprise"]), rollout=80)]),
        flag(12, "plan-is-not", [cond(person("plan", "is_not", "free"))], payloads=payloads(true=42)),
        flag(13, "null-text", [cond(person("plan", "icontains", "ul"))]),
        flag(14, "country-list", [cond(person("country", "exact", ["us", "ca"]))]),
        flag(
            15,
            "age-range",
            [cond(person("age", "gte", 18), person("age", "lt", 65)), cond(person("score", "gt", 90.5))],
        ),
        flag(16, "age-edges", [cond(person("age", "lte", "30")), cond(person("age", "gt", 70), rollout=50)]),
        flag(17, "age-exact", [cond(person("age", "exact", ["42", "43"]))]),
        flag(18, "signup-before", [cond(person("signup", "is_date_before", "2005-06-15"))]),
        flag(19, "signup-after-relative", [cond(person("signup", "is_date_after", "-1y"))]),
        flag(20, "signup-before-relative", [cond(person("signup", "is_date_before", "-10y"))]),
        flag(21, "signup-exact", [cond(person("signup", "is_date_exact", "2000-01-01"))]),
        flag(22, "semver-eq", [cond(person("app_version", "semver_eq", "1.2.3"))]),
        flag(23, "semver-neq", [cond(person("app_version", "semver_neq", "1.2.3"))]),
        flag(24, "semver-gt", [cond(person("app_version", "semver_gt", "1.5.0"))]),
        flag(25, "semver-gte", [cond(person("app_version", "semver_gte", "2.0.0"))]),
        flag(26, "semver-lt", [cond(person("app_version", "semver_lt", "1.0.0"))]),
        flag(27, "semver-lte", [cond(person("app_version", "semver_lte", "1.2.3"))]),
        flag(28, "semver-tilde", [cond(person("app_version", "semver_tilde", "1.2.0"))]),
        flag(29, "semver-caret", [cond(person("app_version", "semver_caret", "1.0.0"))]),
        flag(30, "semver-wildcard", [cond(person("app_version", "semver_wildcard", "2.*"))]),
        flag(31, "beta-bool", [cond(person("beta", "exact", ["true"]))]),
        flag(32, "nickname-set", [cond(person("nickname", "is_set"))]),
        flag(33, "nickname-not-set", [cond(person("nickname", "is_not_set"))]),
        flag(34, "initial-browser", [cond(person("$initial_browser", "exact", ["chrome"]))]),
        flag(
            35,
            "experiment",
            [cond(person("country", "is_set"))],
            multivariate=mv,
            payloads=payloads(control={"price": 10}, test={"price": 12}, **{"test-b": {"price": 15}}),
        ),
        flag(
            36,
            "experiment-holdout",
            [cond(rollout=100)],
            multivariate=variants(("control", 50), ("test", 50)),
            holdout={"id": HOLDOUT_ID, "exclusion_percentage": 25},
            payloads=payloads(control="c", test="t"),
        ),
        flag(
            37,
            "variant-override",
            [cond(person("plan", "exact", ["pro"]), variant="c"), cond(rollout=60)],
            multivariate=variants(("a", 50), ("b", 30), ("c", 20)),
            payloads=payloads(a=["A"], c={"nested": {"deep": "C"}}),
        ),
        flag(
            38,
            "partial-variants",
            [cond()],
            multivariate=variants(("left", 30), ("right", 30)),
            payloads=payloads(true="fallthrough", left="L"),
        ),
        flag(
            39,
            "company-tier",
            [cond(group("tier", "exact", ["gold", "silver"]), rollout=70)],
            aggregation_group_type_index=0,
            payloads=payloads(true={"perk": "lounge"}),
        ),
        flag(
            40,
            "company-size",
            [cond(group("employees", "gt", 100)), cond(group("name", "icontains", "labs"), rollout=50)],
            aggregation_group_type_index=0,
            multivariate=variants(("small-print", 50), ("big-print", 50)),
            payloads=payloads(**{"big-print": 1.5}),
        ),
        flag(41, "project-rollout", [cond(rollout=50)], aggregation_group_type_index=1),
        flag(
            42,
            "mixed-targeting",
            [
                cond(group("tier", "exact", "gold"), rollout=100, aggregation_group_type_index=0),
                cond(person("plan", "exact", "enterprise"), rollout=100, aggregation_group_type_index=None),
            ],
        ),
        flag(43, "in-cohort", [cond(in_cohort(1))], payloads=payloads(true="cohort")),
        flag(44, "not-in-cohort", [cond(in_cohort(1, "not_in"))]),
        flag(45, "in-nested-cohort", [cond(in_cohort(2))]),
        flag(46, "depends-on-plan", [cond(depends("plan-exact", True, ["plan-exact"]))]),
        flag(47, "depends-on-variant", [cond(depends("variant-override", "c", ["variant-override"]))]),
        flag(48, "depends-on-false", [cond(depends("email-domain", False, ["email-domain"]))]),
        flag(
            49,
            "depends-chain",
            [cond(depends("depends-on-plan", True, ["plan-exact", "depends-on-plan"]), rollout=75)],
        ),
        flag(50, "depends-on-inactive", [cond(depends("inactive", False, ["inactive"]))]),
        flag(
            51,
            "early-exit",
            [cond(person("country", "is_set"), rollout=30), cond(rollout=100)],
            early_exit=True,
        ),
        flag(52, "continuity", [cond(rollout=50)], ensure_experience_continuity=True),
        flag(
            53,
            "fall-through",
            [cond(person("plan", "exact", "team"), rollout=10), cond(person("country", "exact", "GB"), rollout=90)],
            payloads=payloads(true="through"),
        ),
        flag(54, "plan-not-in", [cond(person("plan", "is_not", ["free", "TEAM"]))]),
        flag(55, "age-regex", [cond(person("age", "regex", "^[1-3][0-9]$"))]),
    ]


def document() -> Json:
    """The flags file: what PostHog's local-evaluation endpoint returns."""
    return {"flags": rich_flags(), "group_type_mapping": GROUP_TYPE_MAPPING, "cohorts": COHORTS}


EMAIL_NAMES = ["ada", "bob", "zoe", "alan", "grace", "linus", "eve", "zed", "Ann"]
EMAIL_DOMAINS = ["example.com", "example.org", "Example.COM", "posthog.com", "test.io", "spam-example.com", "corp.org"]
VERSIONS = [
    "1.2.3",
    "1.2.0",
    "1.2.9",
    "1.3.0",
    "v2.0.1",
    "2.0.0",
    "2.5.0-beta.1",
    "1.10.0",
    "0.9",
    "3",
    "0.0.3",
    "1.0.0+build.5",
    "0.4.2",
]


def _signup(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return rng.choice(["2000-01-01", "2000-01-01T00:00:00Z", "2005-06-15"])
    year = rng.choice([*range(1995, 2013), *range(2040, 2046)])
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    if rng.random() < 0.5:
        return f"{year:04d}-{month:02d}-{day:02d}"
    return f"{year:04d}-{month:02d}-{day:02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"


def _person_properties(rng: random.Random) -> Json:
    email = f"{rng.choice(EMAIL_NAMES)}{rng.choice(['', str(rng.randint(1, 99))])}@{rng.choice(EMAIL_DOMAINS)}"
    age = rng.randint(10, 95)
    candidates: Json = {
        "email": email,
        "plan": rng.choice(["free", "pro", "Pro", "enterprise", "team", None]),
        "country": rng.choice(["US", "us", "GB", "DE", "CA", "FR"]),
        "age": str(age) if rng.random() < 0.2 else age,
        "score": round(rng.uniform(0, 100), 1),
        "signup": _signup(rng),
        "app_version": rng.choice(VERSIONS),
        "beta": rng.choice([True, False, "true", "false"]),
        "$browser": rng.choice(["Chrome", "Firefox", "Safari"]),
    }
    properties = {key: value for key, value in candidates.items() if rng.random() < 0.9}
    if rng.random() < 0.5:
        properties["$initial_browser"] = rng.choice(["chrome", "Firefox"])
    if rng.random() < 0.5:
        properties["nickname"] = rng.choice(["ace", None])
    return properties


def company_properties(key: str) -> Json:
    """Each company's properties follow from its key, as a store would hold them."""
    rng = random.Random(key)
    return {
        "name": rng.choice(["Acme", "Initech Labs", "Globex", "Umbrella labs", "Hooli"]),
        "tier": rng.choice(["gold", "silver", "bronze"]),
        "employees": rng.choice([5, 50, 101, 250, 5000]),
    }


def users(count: int, seed: int = 20240601) -> list[Json]:
    """``count`` users, each ``{distinct_id, person_properties, groups, group_properties}``."""
    rng = random.Random(seed)
    made = []
    for index in range(count):
        groups: dict[str, str] = {}
        group_properties: dict[str, Json] = {}
        if rng.random() < 0.7:
            company = f"co-{rng.randrange(40)}"
            groups["company"] = company
            group_properties["company"] = company_properties(company)
        if rng.random() < 0.3:
            project = f"proj-{rng.randrange(100)}"
            groups["project"] = project
            group_properties["project"] = {"stage": rng.choice(["alpha", "beta"])}
        made.append(
            {
                "distinct_id": f"user-{seed}-{index:04d}",
                "person_properties": _person_properties(rng),
                "groups": groups,
                "group_properties": group_properties,
            }
        )
    return made


def payload_value(raw: Any) -> Any:
    """A payload as the SDKs hand it out: JSON text parsed, anything else as it is."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def answer_of(response: Json) -> tuple[dict[str, FlagValue], dict[str, Any]]:
    """A ``/flags?v=2`` body as ``(values, payloads)``: variant or enabled, and the parsed payloads
    of enabled flags that have one."""
    values: dict[str, FlagValue] = {}
    found: dict[str, Any] = {}
    for key, detail in response["flags"].items():
        values[key] = detail["variant"] if detail.get("enabled") and detail.get("variant") else bool(detail["enabled"])
        raw = (detail.get("metadata") or {}).get("payload")
        if detail.get("enabled") and raw is not None:
            found[key] = payload_value(raw)
    return values, found


def server_answer(client: httpx.Client, token: str, user: Json) -> Json:
    """The full ``/flags?v=2`` body for one user, as an SDK asks for it."""
    body = {
        "token": token,
        "distinct_id": user["distinct_id"],
        "person_properties": user["person_properties"],
        "groups": user["groups"],
        "group_properties": user["group_properties"],
    }
    response = client.post("/flags/?v=2", json=body)
    assert response.status_code == 200, response.text
    answer: Json = response.json()
    return answer

"""A property test: any sequence of captures, identifies, aliases and merges sent through the app
leaves the persons a small model of PostHog's rules predicts."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TOKEN, Hogflare
from tests.helpers.persons import PERSONLESS_CREATED_AT, person_uuid, post_ok, started

#: A few distinct ids, one of them illegal to merge (PostHog's list).
POOL = ["anon-a", "anon-b", "user-1", "user-2", "anonymous"]
ILLEGAL = {"anonymous"}
#: Property keys outside PostHog's fast-changing and initial/UTM lists, so only the update rules apply.
KEYS = ["plan", "email", "age", "tier"]
VALUES = st.one_of(st.integers(0, 3), st.sampled_from(["x", "y"]))
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

#: The ways each kind of step can be sent; ``batch`` forms can share one ``/batch`` request.
FORMS = {
    "capture": ["batch", "/e", "/capture"],
    "personless": ["batch"],
    "identify": ["batch", "/identify"],
    "alias": ["batch", "/alias"],
    "merge": ["batch"],
}


#: Kinds weighted towards identity changes, where the rules have the most cases.
KINDS = ["capture"] * 3 + ["identify"] * 3 + ["alias"] * 2 + ["merge", "personless"]


@dataclass(frozen=True)
class Step:
    kind: str
    distinct_id: str
    other: str | None
    set: dict[str, Any]
    set_once: dict[str, Any]
    unset: list[str]
    form: str


@st.composite
def step(draw: st.DrawFn) -> Step:
    kind = draw(st.sampled_from(KINDS))
    other = draw(st.sampled_from(POOL)) if kind in {"identify", "alias", "merge"} else None
    updates = kind != "alias"
    props = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=2)
    set_ = draw(props) if updates else {}
    set_once = draw(props) if updates else {}
    # $unset keys are kept apart from the step's own $set/$set_once: on the event that creates a
    # person an $unset of a key it just set is a corner the model leaves out.
    free = [key for key in KEYS if key not in set_ and key not in set_once]
    unset = draw(st.lists(st.sampled_from(free), max_size=2, unique=True)) if updates and free else []
    return Step(kind, draw(st.sampled_from(POOL)), other, set_, set_once, unset, draw(st.sampled_from(FORMS[kind])))


# --- The model ------------------------------------------------------------------------------------


@dataclass
class Person:
    uuid: str
    created: int
    ids: list[str]
    props: dict[str, Any] = field(default_factory=dict)
    identified: bool = False


@dataclass(frozen=True)
class Landed:
    """What the event row of a step should carry."""

    person_id: str
    person_created_at: dt.datetime
    person_properties: dict[str, Any]


def at(index: int) -> dt.datetime:
    return START + dt.timedelta(seconds=index)


class Model:
    def __init__(self) -> None:
        self.by_id: dict[str, Person] = {}
        #: Ids personless events used while they had no person.
        self.personless: set[str] = set()

    def create(self, ids: list[str], index: int, s: Step, uuid_of: str | None = None) -> Person:
        person = Person(person_uuid(uuid_of or ids[0]), index, list(ids), {**s.set_once, **s.set})
        for distinct_id in ids:
            self.by_id[distinct_id] = person
        return person

    @staticmethod
    def update(person: Person, s: Step) -> None:
        for key, value in s.set_once.items():
            person.props.setdefault(key, value)
        person.props.update(s.set)
        for key in s.unset:
            person.props.pop(key, None)

    def run(self, index: int, s: Step) -> Landed:
        if s.kind == "personless":
            known = self.by_id.get(s.distinct_id)
            if known is None:
                self.personless.add(s.distinct_id)
                return Landed(person_uuid(s.distinct_id), PERSONLESS_CREATED_AT, {})
            return Landed(known.uuid, at(known.created), {})
        person = self.identity(index, s)
        if person is None:
            person = self.by_id.get(s.distinct_id) or self.create([s.distinct_id], index, s)
        self.update(person, s)
        return Landed(person.uuid, at(person.created), dict(person.props))

    def identity(self, index: int, s: Step) -> Person | None:
        """PostHog's ``handleIdentifyOrAlias``: the person the event lands on, or None for a plain update."""
        into, other = s.distinct_id, s.other
        if other is None or other == into or other in ILLEGAL or into in ILLEGAL:
            return None
        mine, theirs = self.by_id.get(into), self.by_id.get(other)
        if theirs is not None and mine is None:
            theirs.ids.append(into)
            self.by_id[into] = person = theirs
        elif mine is not None and theirs is None:
            mine.ids.append(other)
            self.by_id[other] = person = mine
        elif mine is None or theirs is None:
            # The uuid comes from the other id when only it was used by personless events.
            personless_other = other in self.personless and into not in self.personless
            person = self.create([into, other], index, s, uuid_of=other if personless_other else into)
        elif mine is theirs or (theirs.identified and s.kind != "merge"):
            person = mine
        else:
            mine.props = {**theirs.props, **mine.props}
            mine.created = min(mine.created, theirs.created)
            for distinct_id in theirs.ids:
                mine.ids.append(distinct_id)
                self.by_id[distinct_id] = mine
            person = mine
        # PostHog marks the event's person identified once the ids are legal and distinct, even
        # when the merge itself is refused.
        person.identified = True
        return person

    def persons(self) -> dict[frozenset[str], tuple[str, dt.datetime, dict[str, Any], bool]]:
        unique = {id(person): person for person in self.by_id.values()}.values()
        return {frozenset(p.ids): (p.uuid, at(p.created), p.props, p.identified) for p in unique}


# --- Sending the steps ----------------------------------------------------------------------------


def batch_item(index: int, s: Step) -> dict[str, Any]:
    timestamp = at(index).isoformat()
    properties: dict[str, Any] = {"$set": s.set, "$set_once": s.set_once, "$unset": s.unset}
    if s.kind == "personless":
        properties["$process_person_profile"] = False
    if s.kind == "alias":
        return {"type": "alias", "distinct_id": s.distinct_id, "alias": s.other, "timestamp": timestamp}
    name = {"identify": "$identify", "merge": "$merge_dangerously"}.get(s.kind, f"step {index}")
    if s.kind == "identify":
        properties["$anon_distinct_id"] = s.other
    elif s.kind == "merge":
        properties["alias"] = s.other
    return {"event": name, "distinct_id": s.distinct_id, "properties": properties, "timestamp": timestamp}


def request(index: int, s: Step) -> tuple[str, Any]:
    item = batch_item(index, s)
    if s.form == "/e":
        return "/e", [{**item, "token": TOKEN}]
    if s.form == "/capture":
        return "/capture", {**item, "api_key": TOKEN}
    if s.form == "/identify":
        properties = {"$anon_distinct_id": s.other, "$set": s.set, "$set_once": s.set_once, "$unset": s.unset}
        body = {"distinct_id": s.distinct_id, "properties": properties, "timestamp": item["timestamp"]}
        return "/identify", {"api_key": TOKEN, **body}
    if s.form == "/alias":
        return "/alias", {
            "api_key": TOKEN,
            "distinct_id": s.distinct_id,
            "alias": s.other,
            "timestamp": item["timestamp"],
        }
    return "/batch", {"api_key": TOKEN, "batch": [item]}


async def play(hogflare: Hogflare, steps: list[Step], one_batch: bool) -> None:
    if one_batch:
        await post_ok(hogflare, "/batch", {"api_key": TOKEN, "batch": [batch_item(i, s) for i, s in enumerate(steps)]})
        return
    for index, s in enumerate(steps):
        await post_ok(hogflare, *request(index, s))


@pytest.mark.timeout(900)
@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step(), min_size=1, max_size=25), one_batch=st.booleans())
def test_persons_follow_the_model(tmp_path_factory: pytest.TempPathFactory, steps: list[Step], one_batch: bool) -> None:
    model = Model()
    expected = [model.run(index, s) for index, s in enumerate(steps)]

    async def scenario() -> None:
        async with started(tmp_path_factory.mktemp("model") / "data") as hogflare:
            await play(hogflare, steps, one_batch)
            rows = hogflare.persons_latest()
            persons = {
                frozenset(row["distinct_ids"]): (
                    row["person_id"],
                    row["created_at"],
                    row["merged_properties"],
                    row["is_identified"],
                )
                for row in rows
            }
            assert len(persons) == len(rows)
            assert persons == model.persons()
            events = hogflare.rows(order="timestamp")
            landed = [Landed(r["person_id"], r["person_created_at"], r["person_properties"]) for r in events]
            assert landed == expected

    asyncio.run(scenario())

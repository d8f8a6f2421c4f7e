"""Annotated types of attrs payload classes are enforced, and pydantic v2 models are
payload specs: refusals are ``invalid_payload`` naming the field, never the value."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Optional

import attrs
import pydantic
import pytest

from realtime_gateway import (
    AllowAll,
    ConfigurationError,
    Connection,
    Gateway,
    GatewayNamespace,
    Identity,
    InvalidPayload,
    SignedTokenAuthenticator,
    event,
)
from realtime_gateway._payload import check_spec, parse_payload

from .conftest import Clients, call, quick_config


@attrs.frozen
class Assignee:
    user_id: str = attrs.field(alias="userId")
    ward: int | None = None


@attrs.frozen
class Task:
    title: str
    priority: int
    weight: float = 1.0
    urgent: bool = False
    tags: list[str] = attrs.field(factory=list)
    level: Literal["low", "high"] = "low"
    note: Optional[str] = None  # noqa: UP045 (the spelling under test)
    assignee: Assignee | None = None
    helpers: list[Assignee] = attrs.field(factory=list)
    scores: dict[str, int] = attrs.field(factory=dict)
    extra: Any = None


@attrs.frozen
class Tree:
    name: str
    children: list[Tree] = attrs.field(factory=list)


def test_well_typed_task_is_built() -> None:
    task = parse_payload(
        Task,
        {
            "title": "Round",
            "priority": 2,
            "weight": 3,
            "urgent": True,
            "tags": ["a", "b"],
            "level": "high",
            "note": None,
            "assignee": {"userId": "n1", "ward": 3},
            "helpers": [{"userId": "n2"}],
            "scores": {"x": 1},
            "extra": {"anything": [1, "two"]},
        },
    )
    assert task.assignee == Assignee(userId="n1", ward=3)
    assert task.helpers == [Assignee(userId="n2")]
    assert task.weight == 3.0
    assert type(task.weight) is float
    assert task.level == "high"


@pytest.mark.parametrize(
    ("payload", "field", "problem"),
    [
        ({"title": "t", "priority": "high"}, "priority", "must be an integer"),
        ({"title": "t", "priority": True}, "priority", "must be an integer"),
        ({"title": "t", "priority": 1.5}, "priority", "must be an integer"),
        ({"title": 7, "priority": 1}, "title", "must be a string"),
        ({"title": "t", "priority": 1, "weight": False}, "weight", "must be a number"),
        ({"title": "t", "priority": 1, "weight": "1.0"}, "weight", "must be a number"),
        ({"title": "t", "priority": 1, "urgent": 1}, "urgent", "must be true or false"),
        ({"title": "t", "priority": 1, "tags": "a"}, "tags", "must be a list"),
        ({"title": "t", "priority": 1, "tags": ["a", 2]}, "tags[1]", "must be a string"),
        ({"title": "t", "priority": 1, "level": "urgent"}, "level", 'must be one of "low", "high"'),
        ({"title": "t", "priority": 1, "level": ["low"]}, "level", "must be one of"),
        ({"title": "t", "priority": 1, "note": 3}, "note", "must be a string"),
        ({"title": "t", "priority": 1, "assignee": "n1"}, "assignee", "must be an object"),
        ({"title": "t", "priority": 1, "assignee": {"userId": 5}}, "assignee.userId", "string"),
        (
            {"title": "t", "priority": 1, "assignee": {"userId": "a", "ward": "3"}},
            "assignee.ward",
            "",
        ),
        ({"title": "t", "priority": 1, "helpers": [{"userId": "a"}, {}]}, "helpers[1].userId", ""),
        ({"title": "t", "priority": 1, "scores": {"x": "1"}}, "scores.x", "must be an integer"),
    ],
    ids=repr,
)
def test_ill_typed_field_is_named(payload: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_payload(Task, payload)
    assert info.value.field == field
    assert info.value.code == "invalid_payload"
    assert field in str(info.value)
    assert problem in str(info.value)


# Typing special forms are specs at run time; mypy types them as plain objects.
ONE_OR_TWO: Any = Literal[1, 2]
INT_OR_NONE: Any = int | None


class Level(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Rank(enum.IntEnum):
    ONE = 1
    TWO = 2


@attrs.frozen
class Frozen:
    tags: tuple[str, ...] = ()
    point: tuple[int, float] = (0, 0.0)
    names: Sequence[str] = ()
    counts: Mapping[str, int] = attrs.field(factory=dict)
    level: Level = Level.LOW
    rank: Rank = Rank.ONE


def test_tuples_sequences_mappings_and_enums() -> None:
    value = parse_payload(
        Frozen,
        {
            "tags": ["a", "b"],
            "point": [1, 2],
            "names": ["x"],
            "counts": {"a": 1},
            "level": "high",
            "rank": 2,
        },
    )
    assert value == Frozen(
        tags=("a", "b"),
        point=(1, 2.0),
        names=["x"],
        counts={"a": 1},
        level=Level.HIGH,
        rank=Rank.TWO,
    )
    assert isinstance(value.tags, tuple)


@pytest.mark.parametrize(
    ("payload", "field", "problem"),
    [
        ({"tags": ["a", 1]}, "tags[1]", "must be a string"),
        ({"tags": "ab"}, "tags", "must be a list"),
        ({"point": [1]}, "point", "must be a list of 2"),
        ({"point": [1, "2"]}, "point[1]", "must be a number"),
        ({"names": [3]}, "names[0]", "must be a string"),
        ({"counts": {"a": True}}, "counts.a", "must be an integer"),
        ({"level": "LOW"}, "level", 'must be one of "low", "high"'),
        ({"level": ["low"]}, "level", "must be one of"),
        ({"rank": True}, "rank", "must be one of 1, 2"),
        ({"rank": "1"}, "rank", "must be one of 1, 2"),
    ],
    ids=repr,
)
def test_tuple_and_enum_refusals(payload: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_payload(Frozen, payload)
    assert info.value.field == field
    assert problem in str(info.value)


def test_literal_does_not_take_true_for_one() -> None:
    assert parse_payload(ONE_OR_TWO, 1) == 1
    with pytest.raises(InvalidPayload):
        parse_payload(ONE_OR_TWO, True)


def test_annotations_are_specs_too() -> None:
    assert parse_payload(list[int], [1, 2]) == [1, 2]
    assert parse_payload(INT_OR_NONE, None) is None
    assert parse_payload(INT_OR_NONE, 3) == 3
    with pytest.raises(InvalidPayload) as info:
        parse_payload(list[int], [1, "2"])
    assert info.value.field == "[1]"


def test_a_class_may_nest_itself() -> None:
    tree = parse_payload(Tree, {"name": "a", "children": [{"name": "b"}]})
    assert tree.children == [Tree(name="b")]
    with pytest.raises(InvalidPayload) as info:
        parse_payload(Tree, {"name": "a", "children": [{"name": "b", "children": [{}]}]})
    assert info.value.field == "children[0].children[0].name"


def test_refusals_do_not_echo_values() -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_payload(Task, {"title": "t", "priority": "secret-value-7"})
    assert "secret-value-7" not in str(info.value)


@attrs.frozen
class Stamped:
    at: dt.datetime


def test_annotation_json_cannot_hold_fails_at_declaration() -> None:
    with pytest.raises(ConfigurationError, match=r"Stamped\.at: datetime is not a type"):
        check_spec(Stamped)


def test_a_string_is_not_a_spec() -> None:
    with pytest.raises(TypeError, match=r"got the string 'str' \(write payload=str"):
        check_spec("str")
    with pytest.raises(TypeError, match="must be a type or a callable"):
        check_spec(42)


# -- pydantic ---------------------------------------------------------------------------


class Vitals(pydantic.BaseModel):
    patient_id: str = pydantic.Field(alias="patientId")
    pulse: int
    readings: list[float] = []


def test_pydantic_model_is_validated() -> None:
    vitals = parse_payload(Vitals, {"patientId": "p1", "pulse": 70, "readings": [36.6]})
    assert isinstance(vitals, Vitals)
    assert (vitals.patient_id, vitals.pulse) == ("p1", 70)


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"patientId": "p1", "pulse": "fast-secret"}, "pulse", "Invalid field 'pulse'"),
        ({"pulse": 70}, "patientId", "Missing field 'patientId'"),
        ({"patientId": "p1", "pulse": 1, "readings": [1, "x-secret"]}, "readings[1]", "Invalid"),
        ("not-an-object-secret", None, "Payload must be an object"),
    ],
    ids=repr,
)
def test_pydantic_refusal_names_the_field(payload: object, field: str | None, message: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_payload(Vitals, payload)
    assert info.value.field == field
    assert str(info.value).startswith(message)
    assert "secret" not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


# -- over the wire ------------------------------------------------------------------------


class Tasks(GatewayNamespace):
    @event("task:add", payload=Task)
    async def add(self, conn: Connection, task: Task) -> dict[str, Any]:
        return {"title": task.title, "priority": task.priority}

    @event("vitals", payload=Vitals)
    async def vitals(self, conn: Connection, vitals: Vitals) -> dict[str, Any]:
        return {"pulse": vitals.pulse}


async def test_a_client_is_told_which_field(
    server_kind: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=AllowAll(),
        config=quick_config(),
        namespaces=[Tasks("/")],
    )
    token = authenticator.issue(Identity(user_id="u1"))
    async with clients.serve(gateway, server_kind) as server:
        client = await clients.connect(server.url, auth={"token": token})
        refused = await call(client, "task:add", {"title": "Round", "priority": "high"})
        assert refused["success"] is False
        assert (refused["code"], refused["field"]) == ("invalid_payload", "priority")
        assert "high" not in refused["error"]
        ok = await call(client, "task:add", {"title": "Round", "priority": 2})
        assert ok == {"success": True, "title": "Round", "priority": 2}
        refused = await call(client, "vitals", {"patientId": "p1", "pulse": "fast"})
        assert (refused["code"], refused["field"]) == ("invalid_payload", "pulse")
        assert await call(client, "vitals", {"patientId": "p1", "pulse": 70}) == {
            "success": True,
            "pulse": 70,
        }

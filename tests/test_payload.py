"""parse_payload and encoded_size."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import attrs
import pytest

from realtime_gateway import InvalidPayload
from realtime_gateway._payload import encoded_size, parse_payload


@attrs.frozen
class SendMessage:
    conversation_id: str = attrs.field(
        alias="conversationId", validator=attrs.validators.instance_of(str)
    )
    body: str = attrs.field(validator=attrs.validators.instance_of(str))
    urgent: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    tags: list[str] = attrs.field(factory=list)


@attrs.frozen
class SetStatus:
    status: str = attrs.field(validator=attrs.validators.in_(("online", "away")))
    received_by: str = attrs.field(init=False, default="server")


def _not_blank(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise ValueError("blank")


@attrs.frozen
class Note:
    text: str = attrs.field(validator=_not_blank)


# --- No spec and JSON types ----------------------------------------------------------------


@pytest.mark.parametrize("payload", [None, 1, "x", {"a": [1]}, [object()]], ids=repr)
def test_no_spec_passes_anything_through(payload: object) -> None:
    assert parse_payload(None, payload) is payload


@pytest.mark.parametrize(
    ("spec", "payload"),
    [
        (str, "hello"),
        (str, ""),
        (int, 3),
        (int, -7),
        (float, 1.5),
        (bool, True),
        (bool, False),
        (dict, {"a": 1}),
        (list, [1, "two"]),
    ],
    ids=repr,
)
def test_json_type_accepted(spec: type, payload: object) -> None:
    assert parse_payload(spec, payload) is payload


def test_int_is_accepted_as_float() -> None:
    value = parse_payload(float, 3)
    assert value == 3.0
    assert type(value) is float


@pytest.mark.parametrize(
    ("spec", "payload", "message"),
    [
        (int, True, "Payload must be an integer"),
        (int, False, "Payload must be an integer"),
        (int, 1.5, "Payload must be an integer"),
        (int, "1", "Payload must be an integer"),
        (float, True, "Payload must be a number"),
        (float, "1.0", "Payload must be a number"),
        (float, None, "Payload must be a number"),
        (bool, 1, "Payload must be true or false"),
        (bool, 0, "Payload must be true or false"),
        (bool, "true", "Payload must be true or false"),
        (str, 1, "Payload must be a string"),
        (str, None, "Payload must be a string"),
        (str, ["a"], "Payload must be a string"),
        (dict, [], "Payload must be an object"),
        (dict, "{}", "Payload must be an object"),
        (list, {}, "Payload must be a list"),
        (list, "ab", "Payload must be a list"),
        (list, ("a",), "Payload must be a list"),
    ],
    ids=repr,
)
def test_json_type_refused(spec: type, payload: object, message: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_payload(spec, payload)
    assert str(info.value) == message
    assert info.value.field is None
    assert info.value.code == "invalid_payload"


# --- attrs classes -------------------------------------------------------------------------


def test_attrs_class_built_from_aliases() -> None:
    value = parse_payload(SendMessage, {"conversationId": "c1", "body": "hi", "urgent": True})
    assert value == SendMessage(conversationId="c1", body="hi", urgent=True)


def test_attrs_defaults_and_unknown_keys() -> None:
    payload = {"conversationId": "c1", "body": "hi", "extra": 1, "__class__": "x"}
    value = parse_payload(SendMessage, payload)
    assert value == SendMessage(conversationId="c1", body="hi")
    assert value.urgent is False
    assert value.tags == []


def test_attrs_class_reads_aliases_not_attribute_names() -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_payload(SendMessage, {"conversation_id": "c1", "body": "hi"})
    assert info.value.field == "conversationId"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"body": "hi"}, "conversationId"),
        ({"conversationId": "c1"}, "body"),
        ({}, "conversationId"),
    ],
    ids=repr,
)
def test_missing_field_is_named(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_payload(SendMessage, payload)
    assert info.value.field == field
    assert str(info.value) == f"Missing field '{field}'"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"conversationId": 5, "body": "hi"}, "conversationId"),
        ({"conversationId": "c1", "body": None}, "body"),
        ({"conversationId": "c1", "body": "hi", "urgent": "yes"}, "urgent"),
    ],
    ids=repr,
)
def test_wrong_type_is_named(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_payload(SendMessage, payload)
    assert info.value.field == field
    assert str(info.value).startswith(f"Invalid field '{field}'")


def test_wrong_value_is_named() -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_payload(SetStatus, {"status": "asleep"})
    assert info.value.field == "status"


def test_non_init_fields_are_not_taken_from_the_payload() -> None:
    value = parse_payload(SetStatus, {"status": "away", "received_by": "client"})
    assert value == SetStatus(status="away")
    assert value.received_by == "server"


def test_validator_failure_without_attribute_is_still_named() -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_payload(Note, {"text": "   "})
    assert str(info.value) == "Invalid field 'text'"
    assert info.value.field == "text"
    assert parse_payload(Note, {"text": "ok"}) == Note(text="ok")


@pytest.mark.parametrize("payload", [None, "text", ["conversationId", "c1"], 3], ids=repr)
def test_attrs_class_needs_an_object(payload: object) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_payload(SendMessage, payload)
    assert str(info.value) == "Payload must be an object"
    assert info.value.field is None


def test_error_messages_do_not_echo_values() -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_payload(SendMessage, {"conversationId": "c1", "body": ["secret-value"]})
    assert "secret-value" not in str(info.value)


# --- Callables -----------------------------------------------------------------------------


def test_callable_result_is_returned() -> None:
    value = "12345678-1234-5678-1234-567812345678"
    assert parse_payload(uuid.UUID, value) == uuid.UUID(value)
    assert parse_payload(dt.date.fromisoformat, "2024-02-29") == dt.date(2024, 2, 29)


@pytest.mark.parametrize(
    ("spec", "payload"),
    [
        (uuid.UUID, "not-a-uuid"),
        (dt.date.fromisoformat, "2023-02-29"),
        (dt.date.fromisoformat, 20240229),
    ],
    ids=["uuid-value-error", "date-value-error", "date-type-error"],
)
def test_callable_value_and_type_errors_become_invalid_payload(spec: Any, payload: object) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_payload(spec, payload)
    assert str(info.value) == "Invalid payload"
    assert info.value.field is None
    assert info.value.__cause__ is None


def test_callable_invalid_payload_passes_through() -> None:
    raised = InvalidPayload("Room name too long", field="room")

    def parse_room(payload: object) -> str:
        raise raised

    with pytest.raises(InvalidPayload) as info:
        parse_payload(parse_room, "x" * 500)
    assert info.value is raised
    assert info.value.field == "room"


def test_callable_bugs_are_not_disguised_as_invalid_payloads() -> None:
    lookup: dict[str, str] = {}

    def broken(payload: object) -> object:
        return lookup["missing"]

    with pytest.raises(KeyError):
        parse_payload(broken, "x")


# --- encoded_size --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "size"),
    [
        ("abc", 3),
        ("é", 2),
        ("", 0),
        ({"a": 1}, len('{"a":1}')),
        ([1, 2], len("[1,2]")),
        ({"a": "é"}, len('{"a":"é"}'.encode())),
        ({"nested": {"list": [True, None]}}, len('{"nested":{"list":[true,null]}}')),
        (None, 4),
        (12345, 5),
    ],
    ids=repr,
)
def test_encoded_size(payload: object, size: int) -> None:
    assert encoded_size(payload) == size


def test_encoded_size_grows_with_the_payload() -> None:
    assert encoded_size({"body": "x" * 10_000}) > 10_000

"""Validation of event payloads against what a handler declares it accepts.

A handler's ``payload`` spec is one of:

- ``None``: anything is accepted and passed through;
- a JSON type (``str``, ``int``, ``float``, ``bool``, ``dict``, ``list``);
- an attrs class: the payload must be an object whose keys are the fields'
  aliases (``attrs.field(alias="conversationId")``); unknown keys are ignored,
  missing or ill-typed fields are refused naming the field;
- any other callable taking the raw payload and returning the parsed value,
  raising :class:`InvalidPayload` (or ``TypeError``/``ValueError``) to refuse.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._exceptions import InvalidPayload

__all__ = ["PayloadSpec", "encoded_size", "parse_payload"]

PayloadSpec = type | Callable[[Any], Any] | None

_JSON_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "an object",
    list: "a list",
}


def encoded_size(payload: object) -> int:
    """Bytes the payload takes as compact JSON plus binary attachments (what a client
    had to send); ``sys.maxsize`` for anything that cannot be measured."""
    if isinstance(payload, str):
        return len(payload.encode())
    binary = 0

    def attachment(value: object) -> None:
        nonlocal binary
        if isinstance(value, bytes | bytearray | memoryview):
            binary += len(value)
            return
        raise TypeError

    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=attachment)
    except (TypeError, ValueError):
        return sys.maxsize
    return len(text.encode()) + binary


def parse_payload(spec: PayloadSpec, payload: object) -> Any:
    """Return ``payload`` parsed by ``spec`` or raise :class:`InvalidPayload`."""
    if spec is None:
        return payload
    if isinstance(spec, type) and spec in _JSON_TYPE_NAMES:
        return _check_json_type(spec, payload)
    if isinstance(spec, type) and attrs.has(spec):
        return _build_attrs(spec, payload)
    try:
        return spec(payload)
    except InvalidPayload:
        raise
    except (TypeError, ValueError):
        raise InvalidPayload("Invalid payload") from None


def _check_json_type(spec: type, payload: object) -> object:
    matches = isinstance(payload, spec)
    if spec is int or spec is float:
        matches = matches and not isinstance(payload, bool)
    if spec is float and isinstance(payload, int) and not isinstance(payload, bool):
        return float(payload)
    if not matches:
        raise InvalidPayload(f"Payload must be {_JSON_TYPE_NAMES[spec]}")
    return payload


def _build_attrs(spec: type, payload: object) -> object:
    if not isinstance(payload, Mapping):
        raise InvalidPayload("Payload must be an object")
    kwargs: dict[str, Any] = {}
    for field in attrs.fields(spec):
        if not field.init:
            continue
        name = field.alias
        if name in payload:
            kwargs[name] = payload[name]
        elif field.default is attrs.NOTHING:
            raise InvalidPayload(f"Missing field '{name}'", field=name)
    try:
        return spec(**kwargs)
    except InvalidPayload:
        raise
    except (TypeError, ValueError) as exc:
        name = _failed_field(spec, kwargs, exc)
        if name is None:
            raise InvalidPayload("Invalid payload") from None
        raise InvalidPayload(f"Invalid field '{name}'", field=name) from None


def _failed_field(spec: type, kwargs: Mapping[str, Any], exc: Exception) -> str | None:
    # attrs' instance_of passes the failing Attribute as the second argument; other
    # validators only say it in words, so each field's validator is asked in turn.
    for arg in exc.args[1:2]:
        if isinstance(arg, attrs.Attribute):
            return str(arg.alias or arg.name)
    for field in attrs.fields(spec):
        if field.validator is None or field.alias not in kwargs:
            continue
        try:
            field.validator(None, field, kwargs[field.alias])
        except Exception:
            return str(field.alias)
    return None

"""Validation of event payloads against what a handler declares it accepts.

A handler's ``payload`` spec is one of:

- ``None``: anything is accepted and passed through;
- a JSON type (``str``, ``int``, ``float``, ``bool``, ``dict``, ``list``) or a
  type annotation built from them: ``list[str]``, ``dict[str, int]``,
  ``int | None``, ``Literal["low", "high"]``;
- an attrs class: the payload must be an object whose keys are the fields'
  aliases (``attrs.field(alias="conversationId")``); unknown keys are ignored,
  missing fields are refused naming the field, and each field's annotation is
  enforced (the annotations above, ``tuple[X, ...]`` and ``Sequence``/``Mapping``
  of them, ``Optional``, enums, nested attrs classes, ``Any``) before the class's
  own validators run; a field with a converter is left to
  its converter. ``bool`` is never taken for a number; an integer is taken for a
  ``float`` (and made one), as JavaScript sends ``3.0`` as ``3``;
- a pydantic v2 model (when pydantic is installed): validated as pydantic does
  (lax unless the model is strict), refusals naming the field;
- any other callable taking the raw payload and returning the parsed value,
  raising :class:`InvalidPayload` (or ``TypeError``/``ValueError``) to refuse.

Refusals name the field (``items[2].title`` for nested ones) and never quote the
value. :func:`check_spec` reports a spec that cannot work when a handler is
declared or registered, rather than when the first event arrives.
"""

from __future__ import annotations

import enum
import json
import sys
import types
import typing
from collections import abc
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._exceptions import ConfigurationError, InvalidPayload

__all__ = ["PayloadSpec", "check_spec", "encoded_size", "parse_payload"]

PayloadSpec = type | Callable[[Any], Any] | None

_JSON_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "an object",
    list: "a list",
}

# A compiled annotation: takes a value, returns what to pass on, raises _Refused.
_Check = Callable[[object], object]


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
    try:
        parser = _PARSERS.get(spec)
    except TypeError:  # an unhashable callable
        return _parser(spec)(payload)
    if parser is None:
        parser = _parser(spec)
        if len(_PARSERS) < _MAX_PARSERS:
            _PARSERS[spec] = parser
    return parser(payload)


# Specs are declared in code, a few per handler; the bound only guards against an
# application that makes a new callable per call.
_MAX_PARSERS = 4096
_PARSERS: dict[Any, Callable[[object], Any]] = {}


def _parser(spec: Any) -> Callable[[object], Any]:
    """The parser of ``spec``, worked out once so that an event pays only for it."""
    if (
        (isinstance(spec, type) and (spec in _JSON_CHECKS or attrs.has(spec)))
        or _is_pydantic_model(spec)
        or _is_annotation(spec)
    ):
        return _top_level(_annotation_check(spec))

    def call(payload: object) -> Any:
        try:
            return spec(payload)
        except InvalidPayload:
            raise
        except (TypeError, ValueError):
            raise InvalidPayload("Invalid payload") from None

    return call


def check_spec(spec: object, *, resolve: bool = True) -> None:
    """Raise ``TypeError`` if ``spec`` is not a payload spec, and (with ``resolve``)
    :class:`ConfigurationError` if it is one whose annotations cannot be enforced
    (a field annotated with a type JSON cannot carry, a name that does not resolve)."""
    if spec is None:
        return
    if isinstance(spec, str):
        raise TypeError(
            f"payload must be a type or a callable, got the string {spec!r}"
            f" (write payload={spec}, without quotes)"
        )
    annotation = _is_annotation(spec)
    if not annotation and not callable(spec):
        raise TypeError(f"payload must be a type or a callable, got {type(spec).__name__}")
    if not resolve:
        return
    if isinstance(spec, type) and attrs.has(spec):
        _attrs_fields(spec)
    elif annotation:
        _annotation_check(spec)


# -- refusals -------------------------------------------------------------------------


class _Refused(Exception):
    """A value refused somewhere inside a payload. Each container it passes on the
    way out adds its key or index, so that the path is built only for a refusal."""

    def __init__(self, problem: str | None = None, *, missing: bool = False) -> None:
        super().__init__(problem)
        self.problem = problem
        self.missing = missing
        self.parts: list[str | int] = []  # innermost first


def _refusal(refused: _Refused) -> InvalidPayload:
    where = ""
    for part in reversed(refused.parts):
        if isinstance(part, int):
            where += f"[{part}]"
        else:
            where += f".{part}" if where else part
    if not where:
        problem = refused.problem
        return InvalidPayload(f"Payload {problem}" if problem else "Invalid payload")
    if refused.missing:
        return InvalidPayload(f"Missing field '{where}'", field=where)
    detail = f": {refused.problem}" if refused.problem else ""
    return InvalidPayload(f"Invalid field '{where}'{detail}", field=where)


def _top_level(check: _Check) -> Callable[[object], Any]:
    def parse(payload: object) -> Any:
        try:
            return check(payload)
        except _Refused as exc:
            refused = exc
        # Raised outside the handler: the InvalidPayload has no context to show.
        raise _refusal(refused)

    return parse


# -- JSON types -----------------------------------------------------------------------


def _json_check(kind: type) -> _Check:
    """The check of one JSON type: ``bool`` is not a number, an integer is a
    ``float`` (converted)."""
    expected = f"must be {_JSON_TYPE_NAMES[kind]}"

    if kind is int:

        def check(value: object) -> object:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise _Refused(expected)

    elif kind is float:

        def check(value: object) -> object:
            if isinstance(value, float):
                return value
            if isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            raise _Refused(expected)

    else:

        def check(value: object) -> object:
            if isinstance(value, kind):
                return value
            raise _Refused(expected)

    return check


_JSON_CHECKS: dict[type, _Check] = {kind: _json_check(kind) for kind in _JSON_TYPE_NAMES}


# -- attrs classes --------------------------------------------------------------------


@attrs.frozen
class _Field:
    name: str  # the alias: the key in the payload
    required: bool
    check: _Check | None


_FIELDS: dict[type, tuple[_Field, ...]] = {}


def _attrs_fields(spec: type) -> tuple[_Field, ...]:
    """The payload fields of the attrs class ``spec`` with their type checks, worked
    out once per class."""
    known = _FIELDS.get(spec)
    if known is not None:
        return known
    # Set first: a class that nests itself (a tree) finds itself here.
    _FIELDS[spec] = ()
    try:
        try:
            hints = typing.get_type_hints(spec)
        except Exception as exc:
            raise ConfigurationError(
                "payload",
                f"cannot resolve the annotations of {spec.__qualname__} ({exc});"
                " define the classes it names at module level",
            ) from None
        fields: list[_Field] = []
        for field in attrs.fields(spec):
            if not field.init:
                continue
            check = None
            if field.converter is None and field.name in hints:
                try:
                    check = _annotation_check(hints[field.name])
                except ConfigurationError as exc:
                    raise ConfigurationError(
                        "payload", f"{spec.__qualname__}.{field.name}: {exc.problem}"
                    ) from None
            fields.append(_Field(str(field.alias), field.default is attrs.NOTHING, check))
        _FIELDS[spec] = tuple(fields)
    except BaseException:
        del _FIELDS[spec]
        raise
    return _FIELDS[spec]


def _attrs_check(spec: type) -> _Check:
    _attrs_fields(spec)

    def check(payload: object) -> object:
        # Looked up at each call: a class nesting itself is compiled while in use.
        fields = _FIELDS[spec]
        if not isinstance(payload, Mapping):
            raise _Refused("must be an object")
        kwargs: dict[str, Any] = {}
        for field in fields:
            name = field.name
            if name in payload:
                value = payload[name]
                if field.check is not None:
                    try:
                        value = field.check(value)
                    except _Refused as exc:
                        exc.parts.append(name)
                        raise
                kwargs[name] = value
            elif field.required:
                missing = _Refused(missing=True)
                missing.parts.append(name)
                raise missing
        try:
            return spec(**kwargs)
        except InvalidPayload:
            raise
        except (TypeError, ValueError) as exc:
            failed = _failed_field(spec, kwargs, exc)
            refused = _Refused()
            if failed is not None:
                refused.parts.append(failed)
            raise refused from None

    return check


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


# -- annotations ----------------------------------------------------------------------


def _is_annotation(spec: object) -> bool:
    """A typing construct (``list[str]``, ``int | None``, ``Literal[...]``) rather
    than a parsing callable."""
    return isinstance(spec, types.GenericAlias | types.UnionType) or (
        type(spec).__module__ == "typing" and typing.get_origin(spec) is not None
    )


def _annotation_check(annotation: Any) -> _Check:
    """A check enforcing ``annotation`` on a JSON value; ``ConfigurationError`` for an
    annotation JSON cannot satisfy."""
    if annotation is Any or annotation is object:
        return _accept
    if annotation is None or annotation is type(None):
        return _none
    if isinstance(annotation, type) and annotation in _JSON_CHECKS:
        return _JSON_CHECKS[annotation]
    if isinstance(annotation, type) and attrs.has(annotation):
        return _attrs_check(annotation)
    if _is_pydantic_model(annotation):
        return _pydantic_check(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _annotation_check(args[0])
    if origin is typing.Literal:
        return _literal(args)
    if origin is typing.Union or origin is types.UnionType:
        return _union(
            tuple(_annotation_check(arg) for arg in args), None in args or type(None) in args
        )
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum(annotation)
    if origin in (list, abc.Sequence) and len(args) == 1:
        return _list_of(_annotation_check(args[0]))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _tuple_of(_list_of(_annotation_check(args[0])))
    if origin is tuple and args and Ellipsis not in args:
        return _fixed_tuple(tuple(_annotation_check(arg) for arg in args))
    if origin in (dict, abc.Mapping) and len(args) == 2 and args[0] is str:
        return _dict_of(_annotation_check(args[1]))
    raise ConfigurationError(
        "payload",
        f"{_name(annotation)} is not a type a JSON payload can hold"
        " (use str, int, float, bool, list[...], tuple[..., ...], dict[str, ...],"
        " Optional, Literal, an Enum, an attrs class, or give the field a converter)",
    )


def _name(annotation: Any) -> str:
    if typing.get_origin(annotation) is None and isinstance(annotation, type):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def _accept(value: object) -> object:
    return value


def _none(value: object) -> object:
    if value is not None:
        raise _Refused("must be null")
    return value


def _literal(options: tuple[Any, ...]) -> _Check:
    # 1 == True in Python: compare types too, so true is not taken for 1.
    allowed = frozenset((type(option), option) for option in options)
    expected = "must be one of " + ", ".join(json.dumps(option) for option in options)

    def check(value: object) -> object:
        try:
            if (type(value), value) in allowed:
                return value
        except TypeError:  # an unhashable value (a list, an object)
            pass
        raise _Refused(expected)

    return check


def _union(checks: tuple[_Check, ...], optional: bool) -> _Check:
    def check(value: object) -> object:
        if value is None and optional:
            return None
        first: _Refused | None = None
        for one in checks:
            try:
                return one(value)
            except _Refused as exc:
                first = first or exc
        assert first is not None
        raise first

    return check


def _list_of(item: _Check) -> _Check:
    def check(value: object) -> object:
        if not isinstance(value, list):
            raise _Refused("must be a list")
        items = []
        for index, element in enumerate(value):
            try:
                items.append(item(element))
            except _Refused as exc:
                exc.parts.append(index)
                raise
        return items

    return check


def _tuple_of(items: _Check) -> _Check:
    def check(value: object) -> object:
        checked = items(value)
        assert isinstance(checked, list)
        return tuple(checked)

    return check


def _fixed_tuple(items: tuple[_Check, ...]) -> _Check:
    expected = f"must be a list of {len(items)}"

    def check(value: object) -> object:
        if not isinstance(value, list | tuple) or len(value) != len(items):
            raise _Refused(expected)
        checked = []
        for index, (item, element) in enumerate(zip(items, value, strict=True)):
            try:
                checked.append(item(element))
            except _Refused as exc:
                exc.parts.append(index)
                raise
        return tuple(checked)

    return check


def _enum(kind: type[enum.Enum]) -> _Check:
    values = {member.value for member in kind}
    expected = "must be one of " + ", ".join(
        json.dumps(member.value) for member in kind if _json_scalar(member.value)
    )

    def check(value: object) -> object:
        try:
            if value in values and not isinstance(value, bool | list | dict):
                return kind(value)
        except TypeError:  # an unhashable value
            pass
        raise _Refused(expected)

    return check


def _json_scalar(value: object) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _dict_of(item: _Check) -> _Check:
    def check(value: object) -> object:
        if not isinstance(value, Mapping):
            raise _Refused("must be an object")
        items = {}
        for key, element in value.items():
            try:
                items[key] = item(element)
            except _Refused as exc:
                exc.parts.append(str(key))
                raise
        return items

    return check


# -- pydantic -------------------------------------------------------------------------


def _is_pydantic_model(spec: object) -> bool:
    # pydantic is imported only by applications that use it: a model class cannot
    # exist before the module does.
    pydantic = sys.modules.get("pydantic")
    return (
        pydantic is not None
        and isinstance(spec, type)
        and issubclass(spec, pydantic.BaseModel)
        and spec is not pydantic.BaseModel
    )


def _pydantic_check(spec: Any) -> _Check:
    from pydantic import ValidationError

    def check(payload: object) -> object:
        try:
            return spec.model_validate(payload)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
        first = errors[0] if errors else {"loc": (), "type": ""}
        loc = first["loc"]
        kind = first["type"]
        refused = _Refused(
            "must be an object" if not loc and kind == "model_type" else None,
            missing=kind == "missing",
        )
        refused.parts.extend(part if isinstance(part, int) else str(part) for part in reversed(loc))
        raise refused

    return check

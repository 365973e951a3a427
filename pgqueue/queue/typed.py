"""Typed arguments: a handler parameter annotated with a pydantic model or a dataclass is checked at enqueue (the
value, an instance or a dict, must fit the type), stored as JSON, and rebuilt as an instance at run. Pure code.

pydantic is optional (the `typed` extra): a model is recognised by its methods, so pydantic is never imported
here. Dataclasses need nothing: their fields are checked by name, nested dataclasses recursively, and fields
annotated int, float, str or bool by type; other field types are passed through as JSON gives them.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Field types a dataclass check verifies (bool is an int in Python, but not here).
_SCALARS: dict[type, Callable[[Any], bool]] = {
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
    bool: lambda v: isinstance(v, bool),
}


class ArgumentTypeError(ValueError):
    """A value that does not fit its parameter's type; the message names the parameter (and field) and why."""


@dataclass(frozen=True)
class Converter:
    """How one typed parameter goes to JSON (`encode`, checking) and back (`decode`)."""

    type_name: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]
    optional: bool  # annotated `Model | None`: None passes as None


def converters(fn: Callable[..., Any]) -> dict[str, Converter]:
    """The handler's typed parameters (pydantic models, dataclasses), by name; {} when it has none."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # a forward reference that does not resolve: the handler gets its args as JSON gives them
        return {}
    found: dict[str, Converter] = {}
    for name in inspect.signature(fn).parameters:
        hint = hints.get(name)
        if hint is None:
            continue
        target, optional = _unwrap_optional(hint)
        converter = _converter_for(target, optional)
        if converter is not None:
            found[name] = converter
    return found


def encode_args(typed: Mapping[str, Converter], args: dict[str, Any]) -> dict[str, Any]:
    """`args` with each typed value checked and turned into JSON-ready data; raises ArgumentTypeError."""
    encoded = dict(args)
    for name, converter in typed.items():
        if name in encoded:
            encoded[name] = _convert(converter, name, encoded[name], converter.encode)
    return encoded


def decode_args(typed: Mapping[str, Converter], args: dict[str, Any]) -> dict[str, Any]:
    """`args` read from a job row with each typed value rebuilt as its type; raises ArgumentTypeError."""
    decoded = dict(args)
    for name, converter in typed.items():
        if name in decoded:
            decoded[name] = _convert(converter, name, decoded[name], converter.decode)
    return decoded


def _convert(converter: Converter, name: str, value: Any, how: Callable[[Any], Any]) -> Any:
    if value is None and converter.optional:
        return None
    try:
        return how(value)
    except ArgumentTypeError as exc:
        raise ArgumentTypeError(f"{name}: {exc}") from None
    except Exception as exc:  # pydantic's ValidationError, or a dataclass's own __post_init__ check
        raise ArgumentTypeError(f"{name}: {_describe(exc)}") from None


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(hint) if m is not type(None)]
        if len(members) == 1 and len(typing.get_args(hint)) == 2:
            return members[0], True
    return hint, False


def _is_model(target: Any) -> bool:
    """A pydantic (v2) model class, recognised without importing pydantic."""
    return isinstance(target, type) and all(
        hasattr(target, name) for name in ("model_validate", "model_dump", "model_fields")
    )


def _converter_for(target: Any, optional: bool) -> Converter | None:
    if _is_model(target):
        return Converter(
            type_name=target.__name__,
            encode=lambda value: target.model_validate(value).model_dump(mode="json"),
            decode=target.model_validate,
            optional=optional,
        )
    if isinstance(target, type) and dataclasses.is_dataclass(target):
        return Converter(
            type_name=target.__name__,
            encode=lambda value: _dataclass_json(_build(target, value)),
            decode=lambda value: _build(target, value),
            optional=optional,
        )
    return None


def _build(cls: type, value: Any) -> Any:
    """An instance of dataclass `cls` from an instance (checked again) or a dict, fields checked as documented."""
    if isinstance(value, cls):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(cls)}
    if not isinstance(value, dict):
        raise ArgumentTypeError(f"expected {cls.__name__} (or a dict of its fields), got {type(value).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ArgumentTypeError(f"{cls.__name__} has no field {', '.join(map(repr, unknown))}")
    missing = [
        name
        for name, f in fields.items()
        if name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ArgumentTypeError(f"{cls.__name__} is missing field {', '.join(map(repr, missing))}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    built = {name: _field(cls, name, hints.get(name), item) for name, item in value.items()}
    return cls(**built)


def _field(cls: type, name: str, hint: Any, value: Any) -> Any:
    target, optional = _unwrap_optional(hint)
    if value is None and optional:
        return None
    if isinstance(target, type) and dataclasses.is_dataclass(target):
        try:
            return _build(target, value)
        except ArgumentTypeError as exc:
            raise ArgumentTypeError(f"{cls.__name__}.{name}: {exc}") from None
    check = _SCALARS.get(target) if isinstance(target, type) else None
    if check is not None and not check(value):
        raise ArgumentTypeError(f"{cls.__name__}.{name} must be {target.__name__}, got {type(value).__name__}")
    return value


def _dataclass_json(instance: Any) -> dict[str, Any]:
    return dataclasses.asdict(instance)


def _describe(exc: Exception) -> str:
    """One line for a conversion error: pydantic's first errors as `field: message`, else the exception's text."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            found = errors()
        except Exception:
            found = []
        parts = []
        for error in found[:3]:
            location = ".".join(str(part) for part in error.get("loc", ())) or "value"
            parts.append(f"{location}: {error.get('msg', 'invalid')}")
        if parts:
            more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
            return "; ".join(parts) + more
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

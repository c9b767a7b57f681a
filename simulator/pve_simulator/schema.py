"""A small subset of PVE's JSON-schema parameter validation, with PVE's error texts.

Every API method in PVE declares its parameters with ``additionalProperties => 0`` and
``PVE::JSONSchema::validate`` (pve-common ``src/PVE/JSONSchema.pm``: ``check_object``, ``check_prop``,
``check_type``) reports, per parameter:

* ``property is missing and it is not optional``
* ``property is not defined in schema and the schema does not allow additional properties``
* ``missing property required by '<other>'``
* ``type check ('<type>') failed - got <REF>|'<value>'`` (booleans accept only 0/1 and JSON booleans)
* ``invalid format - <validator message>``
* ``value does not match the regex pattern`` (the pattern anchored at both ends)
* ``value may only be <n> characters long``

Several errors for one key are joined with a literal backslash-n (Perl ``join('\\n', ...)``).
A failed validation raises ``400 Parameter verification failed.`` with these ``errors``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from pve_simulator.errors import param_exc

__all__ = ["Param", "Params", "Schema", "validate"]

#: Request parameters after extraction: strings, lists of strings (repeated form fields) or JSON values.
Params = dict[str, object]


@dataclass(frozen=True)
class Param:
    """One parameter: its type, optionality, length limit, format validator, pattern and dependency."""

    type: Literal["string", "boolean"] = "string"
    optional: bool = False
    max_length: int | None = None
    format: Callable[[str], None] | None = None
    requires: str | None = None
    pattern: re.Pattern[str] | None = None


Schema = Mapping[str, Param]


def _add_error(errors: dict[str, str], key: str, message: str) -> None:
    errors[key] = f"{errors[key]}\\n{message}" if key in errors else message


def _perl_ref(value: object) -> str | None:
    """The Perl reference type a decoded JSON value would have (``None`` for plain scalars)."""
    if isinstance(value, bool):
        return "JSON::PP::Boolean"
    if isinstance(value, dict):
        return "HASH"
    if isinstance(value, list):
        return "ARRAY"
    return None


def _scalar_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _check(key: str, value: object, param: Param, errors: dict[str, str]) -> object:
    ref = _perl_ref(value)
    if param.type == "boolean":
        if isinstance(value, bool):
            return value
        if ref is not None:
            _add_error(errors, key, f"type check ('boolean') failed - got {ref}")
            return None
        text = _scalar_text(value)
        if text not in ("0", "1"):
            _add_error(errors, key, f"type check ('boolean') failed - got '{text}'")
            return None
        return text == "1"
    if ref is not None:
        _add_error(errors, key, f"type check ('string') failed - got {ref}")
        return None
    text = _scalar_text(value)
    if param.format is not None:
        try:
            param.format(text)
        except ValueError as exc:
            _add_error(errors, key, f"invalid format - {exc}")
            return None
    if param.pattern is not None and not param.pattern.fullmatch(text):
        _add_error(errors, key, "value does not match the regex pattern")
        return None
    if param.max_length is not None and len(text) > param.max_length:
        _add_error(errors, key, f"value may only be {param.max_length} characters long")
        return None
    return text


def validate(params: Params, schema: Schema) -> Params:
    """Validate (and normalise: strings, booleans) request parameters against ``schema``.

    Raises:
        ApiError: ``400 Parameter verification failed.`` with per-parameter errors.
    """
    errors: dict[str, str] = {}
    result: Params = {}
    for key, param in schema.items():
        value = params.get(key)
        if value is None:
            if not param.optional:
                _add_error(errors, key, "property is missing and it is not optional")
            continue
        result[key] = _check(key, value, param, errors)
    for key, value in params.items():
        if value is None:
            continue
        param_or_none = schema.get(key)
        if param_or_none is None:
            _add_error(
                errors,
                key,
                "property is not defined in schema and the schema does not allow additional properties",
            )
            continue
        if param_or_none.requires is not None and params.get(param_or_none.requires) is None:
            _add_error(errors, param_or_none.requires, f"missing property required by '{key}'")
    if errors:
        raise param_exc(errors)
    return result

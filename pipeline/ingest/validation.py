"""Validation of one decoded event against the envelope contract and the tracking plan.

Checkers are compiled once from the plan into closures: the hot path does dict lookups and
type tests, no schema interpretation per event.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from pipeline.contract.errors import ErrorCode, Rejected, json_type
from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import EventSchema, FieldSpec, TrackingPlan
from pipeline.contract.timeparse import check_time_range, parse_event_time

Checker = Callable[[Any], Any]

CONSENT_DROPPED: Final = object()  # sentinel: analytics consent withdrawn, drop and count
MAX_PROPERTY_DEPTH: Final = 10  # nesting of free-form properties; deeper is invalid_value
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
# Control characters, and invisible formatting ones (zero-width, bidi overrides and
# isolates, BOM): in an identifier they make two ids that look the same differ, or reorder
# what an analyst sees.
_INVISIBLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]"
)
# A property or identities key shown in an error detail; anything else could be a value
# sent in the wrong place (a phone number as a key) and is not echoed.
_SHOWABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def shown_name(name: str) -> str:
    """``name`` if it looks like a field name, else a placeholder: details never echo values."""
    return name if _SHOWABLE_NAME.fullmatch(name) else "<a key that is not a field name>"


def clean_identifier(path: str, check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check_identifier(v: Any) -> Any:
        v = check(v)
        if _INVISIBLE.search(v):
            raise Rejected(
                ErrorCode.INVALID_VALUE,
                f"{path} contains control or invisible formatting characters",
            )
        return v

    return check_identifier


def _too_deep(value: Any, limit: int) -> bool:
    if limit < 0:
        return True
    if isinstance(value, dict):
        return any(_too_deep(v, limit - 1) for v in value.values())
    if isinstance(value, list):
        return any(_too_deep(v, limit - 1) for v in value)
    return False


_TYPE_WORDS = {
    "string": "a string",
    "long": "an integer",
    "double": "a number",
    "boolean": "a boolean",
    "enum": "a string",
    "money": "a number",
    "map": "an object",
    "record": "an object",
}


def _mismatch(path: str, spec: FieldSpec, value: Any) -> Rejected:
    return Rejected(
        ErrorCode.TYPE_MISMATCH,
        f"{path} must be {_TYPE_WORDS[spec.kind]}, got {json_type(value)}",
    )


def money_value(value: Any, path: str, spec: FieldSpec) -> Decimal:
    """Exact decimal of a JSON number as written (floats keep their shortest repr)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise _mismatch(path, spec, value)
    try:
        dec = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise Rejected(ErrorCode.INVALID_VALUE, f"{path} is not a finite number") from None
    if not dec.is_finite():
        raise Rejected(ErrorCode.INVALID_VALUE, f"{path} is not a finite number")
    if abs(dec) >= Decimal(10) ** (spec.precision - spec.scale):
        raise Rejected(
            ErrorCode.INVALID_VALUE,
            f"{path} exceeds DECIMAL({spec.precision},{spec.scale})",
        )
    exponent = dec.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -spec.scale:
        quantum = Decimal(1).scaleb(-spec.scale)
        if dec != dec.quantize(quantum):  # 1.500 is fine, 1.505 is not
            raise Rejected(ErrorCode.INVALID_VALUE, f"{path} has more than {spec.scale} decimals")
    return dec


def compile_field(spec: FieldSpec, path: str) -> Checker:
    """A function that returns the normalised value or raises ``Rejected``."""
    compile_kind = _COMPILERS.get(spec.kind)
    if compile_kind is None:
        raise ValueError(f"{path}: no checker for kind {spec.kind}")
    return compile_kind(spec, path)


def _range_check(spec: FieldSpec, path: str) -> Callable[[Any], None]:
    lo, hi = spec.minimum, spec.maximum

    def check_range(v: Any) -> None:
        if lo is not None and v < lo:
            raise Rejected(ErrorCode.INVALID_VALUE, f"{path} must be >= {lo}")
        if hi is not None and v > hi:
            raise Rejected(ErrorCode.INVALID_VALUE, f"{path} must be <= {hi}")

    return check_range


def _compile_string(spec: FieldSpec, path: str) -> Checker:
    pattern = re.compile(spec.pattern) if spec.pattern else None
    min_len, max_len = spec.min_length, spec.max_length

    def check_string(v: Any) -> Any:
        if not isinstance(v, str):
            raise _mismatch(path, spec, v)
        if min_len is not None and len(v) < min_len:
            raise Rejected(
                ErrorCode.INVALID_VALUE, f"{path} must have at least {min_len} characters"
            )
        if max_len is not None and len(v) > max_len:
            raise Rejected(
                ErrorCode.INVALID_VALUE,
                f"{path} must have at most {max_len} characters, got {len(v)}",
            )
        if pattern is not None and not pattern.fullmatch(v):
            raise Rejected(ErrorCode.INVALID_VALUE, f"{path} does not match {spec.pattern}")
        return v

    return check_string


def _compile_enum(spec: FieldSpec, path: str) -> Checker:
    symbols = frozenset(spec.symbols)
    listing = ", ".join(spec.symbols)

    def check_enum(v: Any) -> Any:
        if not isinstance(v, str):
            raise _mismatch(path, spec, v)
        if v not in symbols:
            raise Rejected(ErrorCode.INVALID_VALUE, f"{path} is not one of {listing}")
        return v

    return check_enum


def _compile_long(spec: FieldSpec, path: str) -> Checker:
    check_range = _range_check(spec, path)

    def check_long(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _mismatch(path, spec, v)
        if not INT64_MIN <= v <= INT64_MAX:
            raise Rejected(ErrorCode.INVALID_VALUE, f"{path} is outside the 64-bit integer range")
        check_range(v)
        return v

    return check_long


def _compile_double(spec: FieldSpec, path: str) -> Checker:
    check_range = _range_check(spec, path)

    def check_double(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _mismatch(path, spec, v)
        if not math.isfinite(v):
            raise Rejected(ErrorCode.INVALID_VALUE, f"{path} is not a finite number")
        check_range(v)
        return float(v)

    return check_double


def _compile_boolean(spec: FieldSpec, path: str) -> Checker:
    def check_bool(v: Any) -> Any:
        if not isinstance(v, bool):
            raise _mismatch(path, spec, v)
        return v

    return check_bool


def _compile_money(spec: FieldSpec, path: str) -> Checker:
    check_range = _range_check(spec, path)

    def check_money(v: Any) -> Any:
        dec = money_value(v, path, spec)
        check_range(dec)
        # Transport as a JSON number when a double holds it exactly, else as text.
        as_float = float(dec)
        return as_float if Decimal(repr(as_float)) == dec else str(dec)

    return check_money


# Field kind -> the compiler of its checker. ``map`` and ``record`` have none:
# ``compile_field`` raises ValueError for them (``Validator`` checks ``identities`` itself).
_COMPILERS: Final[dict[str, Callable[[FieldSpec, str], Checker]]] = {
    "string": _compile_string,
    "enum": _compile_enum,
    "long": _compile_long,
    "double": _compile_double,
    "boolean": _compile_boolean,
    "money": _compile_money,
}


class CompiledEvent:
    __slots__ = ("checkers", "free_form", "names", "required", "schema")

    def __init__(self, schema: EventSchema) -> None:
        self.schema = schema
        # ``trackflow.free_form`` on the record: properties beyond the declared ones are
        # expected (identify's profile traits, group's traits), so they are kept (PII
        # masked, as any unknown property) but not reported as tracking-plan drift.
        self.free_form = bool((schema.avro.get("trackflow") or {}).get("free_form"))
        self.names = frozenset(schema.fields)
        self.checkers = tuple(
            (name, spec.required, compile_field(spec, f"properties.{name}"))
            for name, spec in schema.fields.items()
        )
        self.required = tuple(n for n, s in schema.fields.items() if s.required)


class Validator:
    """Turns a decoded event object into a normalised record, or raises ``Rejected``."""

    def __init__(self, plan: TrackingPlan, hasher: PiiHasher, historic: bool = False) -> None:
        """``historic``: no lower bound on event_time (``trackflow backfill`` loads history
        older than the stream's limit); every other rule, the future bound included, holds."""
        self.plan = plan
        self.hasher = hasher
        env = plan.envelope
        self._env = env
        # About 3,000 years: any event time Arrow can store passes the past bound.
        self._max_past = 10**11 if historic else env.max_past_seconds
        self._events = {name: CompiledEvent(s) for name, s in plan.latest.items()}
        self._versions = {key: CompiledEvent(s) for key, s in plan.versions.items()}
        f = env.fields
        self._event_id = compile_field(f["event_id"], "event_id")
        self._event_name = compile_field(f["event_name"], "event_name")
        self._platform = compile_field(f["platform"], "platform")
        self._ids = {n: clean_identifier(n, compile_field(f[n], n)) for n in env.one_of_required}
        self._optional_strings = tuple(
            (n, clean_identifier(n, compile_field(f[n], n))) for n in ("app_version", "channel")
        )
        idspec = f["identities"]
        self._identity_keys = frozenset(idspec.keys)
        self._identity_max = idspec.max_length or 128
        self._pii_keys = frozenset(env.pii_identity_keys)
        self._pii_props = frozenset(env.pii_property_names)

    def validate(
        self, obj: Any, now_ms: int, version: int | None = None
    ) -> dict[str, Any] | object:
        if not isinstance(obj, dict):
            raise Rejected(
                ErrorCode.MALFORMED_PAYLOAD, f"an event must be a JSON object, got {json_type(obj)}"
            )
        consent_marketing = self._consent(obj.get("consent"))
        if consent_marketing is CONSENT_DROPPED:
            return CONSENT_DROPPED

        event_id = self._required(obj, "event_id", self._event_id)
        event_name = self._required(obj, "event_name", self._event_name)
        compiled = (
            self._versions.get((event_name, version)) if version else self._events.get(event_name)
        )
        if compiled is None:
            raise Rejected(ErrorCode.UNKNOWN_EVENT, "event_name is not in the tracking plan")
        raw_time = obj.get("event_time")
        if raw_time is None:
            raise Rejected(ErrorCode.MISSING_REQUIRED_FIELD, "event_time is required")
        event_time = parse_event_time(raw_time)
        check_time_range(event_time, now_ms, self._max_past, self._env.max_future_seconds)

        ids: dict[str, Any] = {}
        for name, check in self._ids.items():
            value = obj.get(name)
            ids[name] = None if value is None else check(value)
        if all(v is None for v in ids.values()):
            raise Rejected(
                ErrorCode.MISSING_REQUIRED_FIELD,
                f"one of {', '.join(self._ids)} is required",
            )
        for name in compiled.schema.envelope_requires:
            if obj.get(name) is None:
                raise Rejected(
                    ErrorCode.MISSING_REQUIRED_FIELD, f"{name} is required on {event_name}"
                )
        platform = self._required(obj, "platform", self._platform)
        record: dict[str, Any] = {
            "event_id": event_id,
            "event_name": event_name,
            "event_time": event_time,
            "anonymous_id": ids.get("anonymous_id"),
            "user_id": ids.get("user_id"),
            "platform": platform,
        }
        for name, check in self._optional_strings:
            value = obj.get(name)
            record[name] = None if value is None else check(value)
        record["identities"] = self._identities(obj.get("identities"))
        record["consent_marketing"] = consent_marketing
        record["schema_version"] = compiled.schema.version
        props, unknown = self._properties(obj.get("properties"), compiled)
        record["properties"] = props
        if unknown:
            record["unknown_properties"] = unknown
        return record

    @staticmethod
    def _required(obj: dict[str, Any], name: str, check: Checker) -> Any:
        value = obj.get(name)
        if value is None:
            raise Rejected(ErrorCode.MISSING_REQUIRED_FIELD, f"{name} is required")
        return check(value)

    @staticmethod
    def _consent(consent: Any) -> Any:
        if consent is None:
            return None
        if not isinstance(consent, dict):
            raise Rejected(
                ErrorCode.TYPE_MISMATCH, f"consent must be an object, got {json_type(consent)}"
            )
        for key in ("analytics", "marketing"):
            value = consent.get(key)
            if value is not None and not isinstance(value, bool):
                raise Rejected(
                    ErrorCode.TYPE_MISMATCH,
                    f"consent.{key} must be a boolean, got {json_type(value)}",
                )
        if consent.get("analytics") is False:
            return CONSENT_DROPPED
        return consent.get("marketing")

    def _identities(self, value: Any) -> dict[str, str] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise Rejected(
                ErrorCode.TYPE_MISMATCH, f"identities must be an object, got {json_type(value)}"
            )
        out: dict[str, str] = {}
        for key, raw in value.items():
            if key not in self._identity_keys:
                raise Rejected(
                    ErrorCode.INVALID_VALUE,
                    f"identities.{shown_name(key)} is not one of "
                    f"{', '.join(sorted(self._identity_keys))}",
                )
            if raw is None:
                continue
            if not isinstance(raw, str):
                raise Rejected(
                    ErrorCode.TYPE_MISMATCH,
                    f"identities.{key} must be a string, got {json_type(raw)}",
                )
            if key in self._pii_keys:
                out[key] = self.hasher.hash_identifier(key, raw)
                continue
            if not 1 <= len(raw) <= self._identity_max:
                raise Rejected(
                    ErrorCode.INVALID_VALUE,
                    f"identities.{key} must have 1 to {self._identity_max} characters",
                )
            if _INVISIBLE.search(raw):
                raise Rejected(
                    ErrorCode.INVALID_VALUE,
                    f"identities.{key} contains control or invisible formatting characters",
                )
            out[key] = raw
        return out or None

    def _properties(self, props: Any, compiled: CompiledEvent) -> tuple[dict[str, Any], list[str]]:
        if props is None:
            if compiled.required:
                raise Rejected(
                    ErrorCode.MISSING_REQUIRED_FIELD,
                    f"properties.{compiled.required[0]} is required on {compiled.schema.name}",
                )
            return {}, []
        if not isinstance(props, dict):
            raise Rejected(
                ErrorCode.TYPE_MISMATCH, f"properties must be an object, got {json_type(props)}"
            )
        out: dict[str, Any] = {}
        for name, required, check in compiled.checkers:
            value = props.get(name)
            if value is None:
                if required:
                    raise Rejected(
                        ErrorCode.MISSING_REQUIRED_FIELD,
                        f"properties.{name} is required on {compiled.schema.name}",
                    )
                continue
            out[name] = check(value)
        unknown = [k for k in props if k not in compiled.names]
        if unknown:
            if compiled.schema.strict:
                raise Rejected(
                    ErrorCode.UNKNOWN_PROPERTY,
                    f"properties.{shown_name(unknown[0])} is not in {compiled.schema.name} "
                    f"v{compiled.schema.version}, which is strict",
                )
            extra = {key: props[key] for key in unknown}
            for key, value in extra.items():
                if _too_deep(value, MAX_PROPERTY_DEPTH):
                    raise Rejected(
                        ErrorCode.INVALID_VALUE,
                        f"properties.{shown_name(key)} is nested deeper than "
                        f"{MAX_PROPERTY_DEPTH} levels",
                    )
            # Unknown properties are free-form: hash PII keys at any depth, mask PII text.
            out.update(self.hasher.mask_value(extra, self._pii_props))
            if compiled.free_form:
                return out, []
        return out, unknown

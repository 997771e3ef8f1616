"""Checking one profile update against the dictionary: types, allowed values and ranges,
then the rules across fields (DESIGN 14). Shared by the importer and the identify path.

``check`` turns the values of one row (after the mapping's transforms) into the typed
values that are stored, or lists every rule the row breaks; a row with any violation is
rejected whole. Details never carry a phone number or an e-mail address: PII fields hold
hashes by then, and their values are never quoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Any

from pipeline.contract.errors import ErrorCode
from pipeline.contract.profiles import TODAY, CrossRule, ProfileDictionary, ProfileField

RULE_VIOLATION = "rule_violation"  # a rule across fields (the dictionary's "rules")
_INT = re.compile(r"^[+-]?\d{1,18}(?:\.0*)?$")  # "100", "100.0", "100." (integral)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_TRUE = frozenset({"true", "1", "yes", "y", "t", "是", "对"})
_FALSE = frozenset({"false", "0", "no", "n", "f", "否", "不"})
_MAX_STRING = 1024


@dataclass(frozen=True)
class Violation:
    field: str
    code: str
    rule: str
    detail: str


class _Bad(Exception):
    def __init__(self, code: str, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.rule, self.detail = code, rule, detail


def _shown(f: ProfileField, value: Any) -> str:
    """The value as a detail may quote it: never for PII fields, cut to 40 characters."""
    if f.pii:
        return "(value withheld: personal data)"
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


def _string(f: ProfileField, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Bad(ErrorCode.TYPE_MISMATCH, f"{f.name}.type", f"{f.name} must be a string")
    text = value if isinstance(value, str) else str(value)
    limit = f.max_length or _MAX_STRING
    if not f.pii and len(text) > limit:
        raise _Bad(
            ErrorCode.INVALID_VALUE, f"{f.name}.max_length", f"{f.name} is over {limit} characters"
        )
    return text


def _int(f: ProfileField, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT.match(value.strip()):
        return int(value.strip().split(".", 1)[0])
    raise _Bad(
        ErrorCode.TYPE_MISMATCH, f"{f.name}.type", f"{f.name} {_shown(f, value)} is not an integer"
    )


def _number(f: ProfileField, value: Any) -> float | int:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        number = float(value.strip())
        return int(number) if number.is_integer() and "." not in value else number
    raise _Bad(
        ErrorCode.TYPE_MISMATCH, f"{f.name}.type", f"{f.name} {_shown(f, value)} is not a number"
    )


def _bool(f: ProfileField, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Bad(
        ErrorCode.TYPE_MISMATCH, f"{f.name}.type", f"{f.name} {_shown(f, value)} is not a boolean"
    )


def _date(f: ProfileField, value: Any) -> date:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    raise _Bad(
        ErrorCode.INVALID_VALUE,
        f"{f.name}.type",
        f"{f.name} {_shown(f, value)} is not an ISO date (add a date transform)",
    )


def _list(f: ProfileField, value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if any(isinstance(i, bool) or not isinstance(i, str | int | float) for i in items):
        raise _Bad(ErrorCode.TYPE_MISMATCH, f"{f.name}.type", f"{f.name} must be a list of strings")
    out = [i if isinstance(i, str) else str(i) for i in items]
    if f.max_items is not None and len(out) > f.max_items:
        raise _Bad(
            ErrorCode.INVALID_VALUE, f"{f.name}.max_items", f"{f.name} has over {f.max_items} items"
        )
    limit = f.max_length or _MAX_STRING
    if any(len(i) > limit for i in out):
        raise _Bad(
            ErrorCode.INVALID_VALUE,
            f"{f.name}.max_length",
            f"an item of {f.name} is over {limit} characters",
        )
    return out


_COERCE = {
    "string": _string,
    "int": _int,
    "number": _number,
    "bool": _bool,
    "date": _date,
    "list": _list,
}


@cache
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


def _bounds(f: ProfileField, value: Any, today: date) -> None:
    lo = today if f.min == TODAY else f.min
    hi = today if f.max == TODAY else f.max
    if lo is not None and value < lo:
        what = "today" if f.min == TODAY else str(lo)
        raise _Bad(
            ErrorCode.INVALID_VALUE,
            f"{f.name}.min",
            f"{f.name} {value} is before {what}"
            if f.type == "date"
            else f"{f.name} {value} is below {what}",
        )
    if hi is not None and value > hi:
        if f.max == TODAY:
            detail = f"{f.name} {value} is in the future"
        elif f.type == "date":
            detail = f"{f.name} {value} is after {hi}"
        else:
            detail = f"{f.name} {value} is above {hi}"
        raise _Bad(ErrorCode.INVALID_VALUE, f"{f.name}.max", detail)


def coerce(f: ProfileField, value: Any, today: date) -> Any:
    """The stored form of one value (a date as an ISO string), or raises ``_Bad``."""
    if value is None:
        return None
    typed = _COERCE[f.type](f, value)
    if f.allowed is not None and f.type in ("string", "list"):
        bad = [v for v in (typed if isinstance(typed, list) else [typed]) if v not in f.allowed]
        if bad:
            raise _Bad(
                ErrorCode.INVALID_VALUE,
                f"{f.name}.allowed",
                f"{f.name} {_shown(f, bad[0])} is not one of {', '.join(f.allowed)}",
            )
    if f.pattern and isinstance(typed, str) and not _pattern(f.pattern).fullmatch(typed):
        raise _Bad(
            ErrorCode.INVALID_VALUE,
            f"{f.name}.pattern",
            f"{f.name} {_shown(f, typed)} does not match {f.pattern}",
        )
    if f.type in ("int", "number", "date"):
        _bounds(f, typed, today)
    return typed.isoformat() if isinstance(typed, date) else typed


def _cross(rule: CrossRule, typed: dict[str, Any]) -> Violation | None:
    value = typed.get(rule.field)
    if rule.when is not None and rule.requires:
        if value == rule.when and typed.get(rule.requires) is None:
            detail = f"{rule.field} {rule.when} requires {rule.requires} ({rule.description})"
            return Violation(rule.requires, RULE_VIOLATION, rule.name, detail)
        return None
    for other, after in ((rule.not_after, True), (rule.not_before, False)):
        if other is None or value is None or typed.get(other) is None:
            continue
        broken = value > typed[other] if after else value < typed[other]
        if broken:
            word = "after" if after else "before"
            detail = f"{rule.field} {value} is {word} {other} {typed[other]} ({rule.description})"
            return Violation(rule.field, RULE_VIOLATION, rule.name, detail)
    return None


class Memo:
    """Coerced values of low-cardinality text (levels, regions, dates): most member rows
    repeat them, and checking each costs more than a lookup. Bounded; PII never cached."""

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self.values: dict[tuple[str, str, date], tuple[Any, _Bad | None]] = {}

    def coerce(self, f: ProfileField, value: Any, today: date) -> Any:
        if f.pii or not isinstance(value, str):
            return coerce(f, value, today)
        key = (f.name, value, today)
        hit = self.values.get(key)
        if hit is None:
            try:
                hit = (coerce(f, value, today), None)
            except _Bad as bad:
                hit = (None, bad)
            if len(self.values) >= self.limit:
                self.values.clear()
            self.values[key] = hit
        if hit[1] is not None:
            raise hit[1]
        return hit[0]


def check(
    dictionary: ProfileDictionary,
    values: dict[str, Any],
    today: date,
    required: frozenset[str] = frozenset(),
    memo: Memo | None = None,
) -> tuple[dict[str, Any], list[Violation]]:
    """Typed values of a row, and every violation (empty when the row is good)."""
    typed: dict[str, Any] = {}
    violations: list[Violation] = []
    convert = memo.coerce if memo is not None else coerce
    for name, value in values.items():
        f = dictionary.fields[name]
        if value is None and name in required:
            violations.append(
                Violation(
                    name,
                    ErrorCode.MISSING_REQUIRED_FIELD,
                    f"{name}.required",
                    f"{name} is required and has no value",
                )
            )
            continue
        try:
            typed[name] = convert(f, value, today)
        except _Bad as bad:
            violations.append(Violation(name, bad.code, bad.rule, bad.detail))
    broken = {v.field for v in violations}
    for rule in dictionary.rules:
        involved = {rule.field, rule.not_after, rule.not_before, rule.requires} - {None}
        if involved & broken:
            continue
        found = _cross(rule, typed)
        if found is not None:
            violations.append(found)
    return typed, violations

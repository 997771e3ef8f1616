"""Transform steps of a mapping (DESIGN 14): ``trim``, ``lower``, ``phone``, ``email``,
``{"date": [formats]}``, ``{"map": {raw: standard}}``, ``{"default": value}``, ``split``.

Each step is compiled once into a function of one value. ``None`` is "no value": an empty
string becomes ``None`` after every step, steps other than ``default`` pass ``None`` on.
A value a step cannot read raises ``FieldError``; the row is then rejected whole.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from pipeline.contract.errors import ErrorCode, Rejected
from pipeline.contract.pii import PiiHasher

Step = Callable[[Any], Any]
STEP_NAMES = ("trim", "lower", "phone", "email", "date", "map", "default", "split")
# Whitespace a Chinese export adds: ideographic space and the BOM-like zero-width ones.
_SPACES = " \t\r\n\u3000\u00a0\ufeff\u200b"
_SPLIT = re.compile(r"[,，;；、]")


class MappingError(ValueError):
    """The mapping file is broken: one line naming the field and what is wrong."""


class FieldError(Exception):
    """A value one field cannot take: rejects its row (code, the rule broken, a detail
    that never holds a phone number or an e-mail address in clear)."""

    def __init__(self, code: str, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.rule = rule
        self.detail = detail


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _none_if_empty(value: Any) -> Any:
    return None if value == "" else value


def trim(value: Any) -> Any:
    return None if value is None else _none_if_empty(_text(value).strip(_SPACES))


def lower(value: Any) -> Any:
    return None if value is None else _none_if_empty(_text(value).lower())


def split(value: Any) -> Any:
    """A comma list (also the full-width ``，``, ``;`` and ``、``) to a list of strings."""
    if value is None or isinstance(value, list):
        return value
    items = [part.strip(_SPACES) for part in _SPLIT.split(_text(value))]
    return [item for item in items if item] or None


def hashing(hasher: PiiHasher, kind: str, field: str) -> Step:
    """Normalise then hash (DESIGN 5); the error names the field, never the value.

    Member files spell numbers more loosely than SDKs: full-width digits and ``＋``
    (NFKC makes them ASCII) and a country code in brackets, ``(+86) 138...``."""

    def step(value: Any) -> Any:
        if value is None:
            return None
        text = unicodedata.normalize("NFKC", _text(value))
        if kind == "phone":
            text = text.replace("(", "").replace(")", "")
        try:
            return hasher.hash_identifier(kind, text)
        except Rejected:
            what = "a phone number" if kind == "phone" else "an e-mail address"
            raise FieldError(
                ErrorCode.INVALID_VALUE, f"transform.{kind}", f"{field} is not {what}"
            ) from None

    return step


def date_step(formats: list[str], field: str) -> Step:
    """Parse with the first format that fits; the result is an ISO date. Dates repeat a
    lot in member files (and strptime is slow), so results are cached."""

    @lru_cache(maxsize=65536)
    def parse(text: str) -> str | None:
        for fmt in formats:
            try:
                return datetime.strptime(text, fmt).date().isoformat()
            except ValueError:
                continue
        return None

    def step(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, date):  # a database DATE or TIMESTAMP column
            return (value.date() if isinstance(value, datetime) else value).isoformat()
        text = _text(value).strip(_SPACES)
        parsed = parse(text)
        if parsed is None:
            raise FieldError(
                ErrorCode.INVALID_VALUE,
                "transform.date",
                f"{field} {text[:40]!r} matches none of the date formats {formats}",
            )
        return parsed

    return step


def map_step(table: dict[str, Any]) -> Step:
    """Raw spelling -> standard value; a value not in the table passes unchanged (the
    dictionary's allowed values then judge it)."""

    def step(value: Any) -> Any:
        if value is None:
            return None
        key = value if isinstance(value, str) else _text(value)
        return table.get(key, value)

    return step


def default_step(default: Any) -> Step:
    def step(value: Any) -> Any:
        return default if value is None or value == "" else value

    return step


def compile_steps(field: str, steps: Any, hasher: PiiHasher | None) -> list[Step]:
    """The mapping's transform list for ``field`` as functions; ``MappingError`` names the
    first step that is not one of ``STEP_NAMES`` or is malformed."""
    if steps is None:
        return []
    if not isinstance(steps, list):
        raise MappingError(f"field {field!r}: transform must be a list of steps")
    out: list[Step] = []
    for step in steps:
        out.append(_compile(field, step, hasher))
    return out


def _compile(field: str, step: Any, hasher: PiiHasher | None) -> Step:
    where = f"field {field!r}: transform"
    if isinstance(step, str):
        simple: dict[str, Step] = {"trim": trim, "lower": lower, "split": split}
        if step in simple:
            return simple[step]
        if step in ("phone", "email"):
            if hasher is None:
                raise MappingError(f"{where} {step!r} needs the PII key")
            return hashing(hasher, step, field)
        raise MappingError(f"{where}: unknown step {step!r} (steps: {', '.join(STEP_NAMES)})")
    if not isinstance(step, dict) or len(step) != 1:
        raise MappingError(f"{where}: a step is a name or an object with one key, not {step!r}")
    ((name, arg),) = step.items()
    if name == "date":
        formats = [arg] if isinstance(arg, str) else arg
        if not (isinstance(formats, list) and formats and all(isinstance(f, str) for f in formats)):
            raise MappingError(f'{where} "date" takes a list of strptime formats')
        return date_step(formats, field)
    if name == "map":
        if not isinstance(arg, dict):
            raise MappingError(f'{where} "map" takes an object {{raw: standard}}')
        return map_step(arg)
    if name == "default":
        return default_step(arg)
    raise MappingError(f"{where}: unknown step {name!r} (steps: {', '.join(STEP_NAMES)})")


def apply_steps(steps: list[Step], value: Any) -> Any:
    value = _none_if_empty(value)
    for step in steps:
        value = _none_if_empty(step(value))
    return value

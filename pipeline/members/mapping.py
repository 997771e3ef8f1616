"""The mapping file (DESIGN 14): which column feeds which profile field, through which steps.

``{"source": name, "key": member-id column, "incremental": column (optional),
"fields": {profile_field: {"from": column, "transform": [steps], "required": bool}}}``.
Every problem is found when the file is loaded or the source's columns are known, before
anything is read or written, and reported as one line (``MappingError``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.contract.pii import PiiHasher
from pipeline.contract.profiles import ProfileDictionary
from pipeline.members.transforms import MappingError, Step, compile_steps, hashing

# Sources name files, metrics labels and runs: short and plain. "identify" is the
# collector's identify calls.
_SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
IDENTIFY_SOURCE = "identify"

__all__ = ["IDENTIFY_SOURCE", "FieldMap", "Mapping", "MappingError", "load_mapping"]


@dataclass(frozen=True)
class FieldMap:
    field: str
    column: str
    steps: tuple[Step, ...]
    required: bool
    date_formats: tuple[str, ...]


@dataclass(frozen=True)
class Mapping:
    source: str
    key: str
    incremental: str | None
    fields: tuple[FieldMap, ...]
    path: Path | None = None
    sla_hours: float | None = None  # how often the source must import (the alert's SLA)

    @property
    def columns(self) -> list[str]:
        """Every source column the mapping reads, key first."""
        out = [self.key]
        for c in [self.incremental, *(f.column for f in self.fields)]:
            if c and c not in out:
                out.append(c)
        return out

    @property
    def required(self) -> frozenset[str]:
        return frozenset(f.field for f in self.fields if f.required)

    def time_formats(self) -> tuple[str, ...]:
        """Date formats of steps on the incremental column, to read its times too."""
        return tuple(
            fmt for f in self.fields if f.column == self.incremental for fmt in f.date_formats
        )

    def check_columns(self, columns: list[str], where: str) -> None:
        """``MappingError`` naming the first column the mapping reads and ``where`` lacks."""
        have = set(columns)
        for c in self.columns:
            if c not in have:
                shown = ", ".join(columns[:20]) + (" ..." if len(columns) > 20 else "")
                raise MappingError(
                    f"the mapping reads column {c!r}, which {where} does not have "
                    f"(columns: {shown or 'none'})"
                )


def load_mapping(path: Path, dictionary: ProfileDictionary, hasher: PiiHasher | None) -> Mapping:
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise MappingError(f"cannot read the mapping {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise MappingError(f"the mapping {path} is not JSON: {exc}") from None
    try:
        return parse_mapping(data, dictionary, hasher, path)
    except MappingError as exc:
        raise MappingError(f"mapping {path}: {exc}") from None


def parse_mapping(
    data: Any, dictionary: ProfileDictionary, hasher: PiiHasher | None, path: Path | None = None
) -> Mapping:
    if not isinstance(data, dict):
        raise MappingError("must be a JSON object with source, key and fields")
    source = data.get("source")
    if not isinstance(source, str) or not _SOURCE.match(source):
        raise MappingError("'source' must be a name of letters, digits, '_', '.', '-' (1-64)")
    if source == IDENTIFY_SOURCE:
        raise MappingError(f"source name {IDENTIFY_SOURCE!r} is kept for the collector's calls")
    key = data.get("key")
    if not isinstance(key, str) or not key:
        raise MappingError("'key' must name the column of the member id")
    incremental = data.get("incremental")
    if incremental is not None and (not isinstance(incremental, str) or not incremental):
        raise MappingError("'incremental' must name a column (e.g. updated_at) or be left out")
    fields = data.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise MappingError("'fields' must be an object of profile_field: {from, transform}")
    maps = tuple(_field(name, spec, dictionary, hasher) for name, spec in fields.items())
    sla = data.get("sla_hours")
    if sla is not None and (isinstance(sla, bool) or not isinstance(sla, int | float) or sla <= 0):
        raise MappingError("'sla_hours' must be a positive number of hours")
    return Mapping(source, key, incremental, maps, path, sla)


def _field(
    name: str, spec: Any, dictionary: ProfileDictionary, hasher: PiiHasher | None
) -> FieldMap:
    if name not in dictionary.fields:
        known = ", ".join(sorted(dictionary.fields))
        raise MappingError(
            f"field {name!r} is not in the profile dictionary "
            f"{dictionary.name} v{dictionary.version} (fields: {known})"
        )
    if isinstance(spec, str):
        spec = {"from": spec}
    if not isinstance(spec, dict):
        raise MappingError(f"field {name!r}: must be an object {{from, transform, required}}")
    column = spec.get("from", name)
    if not isinstance(column, str) or not column:
        raise MappingError(f"field {name!r}: 'from' must name a column")
    required = spec.get("required", False)
    if not isinstance(required, bool):
        raise MappingError(f"field {name!r}: 'required' must be true or false")
    raw_steps = spec.get("transform") or []
    steps = compile_steps(name, raw_steps, hasher)
    pii = dictionary.fields[name].pii
    if pii and pii not in raw_steps:
        # Personal data is never stored in clear: the hash step is added when missing.
        if hasher is None:
            raise MappingError(f"field {name!r} is personal data ({pii}) and needs the PII key")
        steps.append(hashing(hasher, pii, name))
    formats = tuple(
        fmt
        for step in raw_steps
        if isinstance(step, dict) and "date" in step
        for fmt in (step["date"] if isinstance(step["date"], list) else [step["date"]])
    )
    return FieldMap(name, column, tuple(steps), required, formats)

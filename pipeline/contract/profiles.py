"""The member profile dictionary (DESIGN section 14): ``schemas/profiles/<name>/v<N>.json``.

Every profile field with its type, description, owner and allowed values or range, plus
the rules across fields. It is data, like the tracking plan: the importer checks rows
against it, the worker checks ``identify`` traits against it, and the ``profiles`` view has
one column per field. Loading fails with one clear message naming the file and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from pipeline.contract.plan import default_schemas_dir

TYPES = ("string", "int", "number", "bool", "date", "list")
PII_KINDS = ("phone", "email")
IDENTITY_KINDS = ("phone", "email", "openid", "unionid")
# Columns of the profiles view that are not fields: a field may not take their names.
RESERVED = ("person_id", "user_id", "anonymous_id", "updated_at", "source")
TODAY = "today"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class DictionaryError(ValueError):
    """The profile dictionary file is broken; the message names the file and the field."""


@dataclass(frozen=True)
class ProfileField:
    name: str
    type: str
    description: str
    owner: str
    allowed: tuple[str, ...] | None = None
    min: Any = None  # int/float, a date, or "today" (dates)
    max: Any = None
    max_length: int | None = None
    max_items: int | None = None
    pattern: str | None = None
    pii: str | None = None  # "phone" | "email": only the keyed hash is stored
    identity: str | None = None  # One ID identifier type the field links to the member
    traits: tuple[str, ...] = ()  # identify trait names that set it (besides its name)


@dataclass(frozen=True)
class CrossRule:
    """A rule across fields: ``field`` not after / not before ``other``, or ``field`` equal
    to ``when`` requires ``requires`` to be set."""

    name: str
    field: str
    description: str
    not_after: str | None = None
    not_before: str | None = None
    when: str | None = None
    requires: str | None = None


@dataclass(frozen=True)
class ProfileDictionary:
    name: str
    version: int
    path: Path
    fields: dict[str, ProfileField]
    rules: tuple[CrossRule, ...] = field(default_factory=tuple)

    def identity_fields(self) -> dict[str, str]:
        """Profile field -> One ID identifier type."""
        return {f.name: f.identity for f in self.fields.values() if f.identity}

    def trait_names(self) -> dict[str, str]:
        """identify trait name -> profile field."""
        out = {name: name for name in self.fields}
        for f in self.fields.values():
            for trait in f.traits:
                out[trait] = f.name
        return out


def default_dictionary_path(name: str = "member", schemas_dir: Path | None = None) -> Path:
    return (schemas_dir or default_schemas_dir()) / "profiles" / name


def load_profile_dictionary(
    path: Path | None = None, schemas_dir: Path | None = None, name: str = "member"
) -> ProfileDictionary:
    """Load and check a dictionary file; the latest version when given its directory."""
    path = path or default_dictionary_path(name, schemas_dir)
    if path.is_dir():
        files = sorted(path.glob("v*.json"), key=lambda p: int(p.stem[1:] or 0))
        if not files:
            raise DictionaryError(f"no profile dictionary v*.json in {path}")
        path = files[-1]
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise DictionaryError(f"{path}: cannot read the profile dictionary: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("fields"), dict):
        raise DictionaryError(f"{path}: a profile dictionary is an object with 'fields'")
    fields = {n: _field(path, n, spec) for n, spec in data["fields"].items()}
    rules = tuple(_rule(path, spec, fields) for spec in data.get("rules") or [])
    return ProfileDictionary(
        name=str(data.get("name", path.parent.name)),
        version=int(data.get("version", 1)),
        path=path,
        fields=fields,
        rules=rules,
    )


def _field(path: Path, name: str, spec: Any) -> ProfileField:
    where = f"{path}: field {name!r}"
    if not _NAME.match(name) or name in RESERVED:
        raise DictionaryError(f"{where}: names are [a-z][a-z0-9_]* and not one of {RESERVED}")
    if not isinstance(spec, dict):
        raise DictionaryError(f"{where}: must be an object")
    typ = spec.get("type")
    if typ not in TYPES:
        raise DictionaryError(f"{where}: type must be one of {', '.join(TYPES)}")
    for key in ("description", "owner"):
        if not spec.get(key):
            raise DictionaryError(f"{where}: has no {key}")
    if spec.get("pii") not in (None, *PII_KINDS):
        raise DictionaryError(f"{where}: pii must be phone or email")
    if spec.get("identity") not in (None, *IDENTITY_KINDS):
        raise DictionaryError(f"{where}: identity must be one of {', '.join(IDENTITY_KINDS)}")
    lo, hi = (_bound(where, typ, spec.get(k)) for k in ("min", "max"))
    allowed = spec.get("allowed")
    if allowed is not None and not (isinstance(allowed, list) and allowed):
        raise DictionaryError(f"{where}: allowed must be a non-empty list")
    if spec.get("pattern") is not None:
        try:
            re.compile(spec["pattern"])
        except re.error as exc:
            raise DictionaryError(f"{where}: bad pattern: {exc}") from None
    return ProfileField(
        name=name,
        type=typ,
        description=spec["description"],
        owner=spec["owner"],
        allowed=tuple(str(v) for v in allowed) if allowed else None,
        min=lo,
        max=hi,
        max_length=spec.get("max_length"),
        max_items=spec.get("max_items"),
        pattern=spec.get("pattern"),
        pii=spec.get("pii"),
        identity=spec.get("identity"),
        traits=tuple(spec.get("traits") or ()),
    )


def _bound(where: str, typ: str, value: Any) -> Any:
    if value is None:
        return None
    if typ == "date":
        if value == TODAY:
            return TODAY
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise DictionaryError(f"{where}: min/max must be ISO dates or 'today'") from None
    if typ in ("int", "number") and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise DictionaryError(f"{where}: min/max only for int, number and date fields")


def _rule(path: Path, spec: Any, fields: dict[str, ProfileField]) -> CrossRule:
    if not isinstance(spec, dict) or not spec.get("name") or not spec.get("description"):
        raise DictionaryError(f"{path}: every rule needs a name and a description")
    rule = CrossRule(
        name=spec["name"],
        field=spec.get("field", ""),
        description=spec["description"],
        not_after=spec.get("not_after"),
        not_before=spec.get("not_before"),
        when=spec.get("when"),
        requires=spec.get("requires"),
    )
    named = [rule.field, rule.not_after, rule.not_before, rule.requires]
    for other in (n for n in named if n is not None):
        if other not in fields:
            raise DictionaryError(f"{path}: rule {rule.name!r} names unknown field {other!r}")
    if not (rule.not_after or rule.not_before or (rule.when is not None and rule.requires)):
        raise DictionaryError(
            f"{path}: rule {rule.name!r} needs not_after, not_before, or when with requires"
        )
    return rule

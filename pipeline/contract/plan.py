"""The tracking plan: Avro schemas under ``schemas/`` loaded into validation rules.

The rules Avro cannot express (ranges, patterns, lengths, money, strictness) live in each
field's ``trackflow`` metadata, so adding an event is adding a file, not code.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

# The lake's own columns of events (pipeline.lake.schema.EVENT_COLUMNS, and the partition
# column event_date): a property of the same name would clash with one of them.
ENVELOPE_COLUMNS = frozenset(
    {
        "event_id", "event_name", "event_time", "received_at", "anonymous_id", "user_id",
        "person_id", "platform", "app_version", "channel", "properties", "identities",
        "consent_marketing", "schema_version", "event_date", "source_partition", "source_offset",
        "source_index", "source",
    }
)  # fmt: skip


class PlanError(ValueError):
    """The tracking plan on disk is inconsistent; raised at start-up, never per event."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    kind: str  # string | long | double | boolean | enum | money | map | record
    required: bool
    doc: str
    symbols: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    scale: int = 2
    precision: int = 18
    keys: tuple[str, ...] = ()
    timestamp: bool = False


@dataclass(frozen=True, slots=True)
class EventSchema:
    name: str
    version: int
    owner: str
    doc: str
    strict: bool
    envelope_requires: tuple[str, ...]
    fields: dict[str, FieldSpec]
    avro: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class EnvelopeRules:
    version: int
    fields: dict[str, FieldSpec]
    max_event_bytes: int
    max_past_seconds: int
    max_future_seconds: int
    one_of_required: tuple[str, ...]
    pii_identity_keys: tuple[str, ...]
    pii_property_names: tuple[str, ...]
    avro: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class TrackingPlan:
    root: Path
    envelope: EnvelopeRules
    latest: dict[str, EventSchema]
    versions: dict[tuple[str, int], EventSchema]
    # CRC-64-AVRO fingerprint of the composed (envelope + event) schema -> (parsed, event)
    avro_by_fingerprint: dict[int, tuple[Any, EventSchema]]

    def event(self, name: str) -> EventSchema | None:
        return self.latest.get(name)

    def property_columns(self) -> dict[str, FieldSpec]:
        """Union of the typed property columns of the latest versions, one type per name."""
        out: dict[str, FieldSpec] = {}
        for schema in self.latest.values():
            for spec in schema.fields.values():
                out.setdefault(spec.name, spec)
        return out

    def composed_avro(self, name: str, version: int | None = None) -> dict[str, Any]:
        """The writer schema producers use for Avro single-object encoding of one event."""
        schema = self.latest[name] if version is None else self.versions[(name, version)]
        return compose(self.envelope.avro, schema.avro)


def default_schemas_dir() -> Path:
    """The built-in tracking plan: the top-level ``schemas/`` directory, found next to this code.

    pyproject.toml maps ``schemas/`` to the data package ``pipeline.contract.schemas``, so an
    installed wheel has it beside this module (``pipeline/contract/schemas/``). A source checkout
    (editable install, whatever its mode) has it at the root, beside ``pipeline/`` and
    ``pyproject.toml``, read live so edits apply at once. The import system is not asked: the
    directory has no ``__init__.py`` and setuptools' editable finder does not resolve a mapped
    namespace package nested in a regular one. Nothing is looked up from the cwd, so an install
    never silently reads some other ``./schemas``.
    """
    here = Path(__file__).resolve().parent
    shipped = here / "schemas"
    if shipped.is_dir():
        return shipped
    checkout = here.parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "schemas").is_dir():
        return checkout / "schemas"
    raise PlanError(
        f"built-in tracking plan not found: neither {shipped} (installed package) nor "
        f"{checkout / 'schemas'} (source checkout) exists; reinstall trackflow"
    )


def _field_spec(raw: dict[str, Any], where: str) -> FieldSpec:
    name = raw.get("name")
    doc = raw.get("doc")
    if not name or not doc:
        raise PlanError(f"{where}: every field needs a name and a doc (description)")
    typ = raw["type"]
    required = True
    if isinstance(typ, list):
        non_null = [t for t in typ if t != "null"]
        if len(non_null) != 1:
            raise PlanError(f"{where}.{name}: only ['null', T] unions are supported")
        required = len(non_null) == len(typ)
        typ = non_null[0]
    meta = raw.get("trackflow", {})
    symbols: tuple[str, ...] = ()
    if isinstance(typ, dict):
        t = typ["type"]
        if t == "enum":
            kind, symbols = "enum", tuple(typ["symbols"])
        elif t == "bytes" and typ.get("logicalType") == "decimal":
            kind = "money"
        elif t == "long" and typ.get("logicalType") == "timestamp-millis":
            kind = "long"
        elif t in ("map", "record"):
            kind = t
        else:
            raise PlanError(f"{where}.{name}: unsupported type {typ!r}")
    elif typ in ("string", "boolean", "double"):
        kind = typ
    elif typ in ("int", "long"):
        kind = "long"
    elif typ == "float":
        kind = "double"
    else:
        raise PlanError(f"{where}.{name}: unsupported type {typ!r}")
    if kind == "money" and not meta.get("money"):
        raise PlanError(f"{where}.{name}: decimal fields must be marked trackflow.money")
    return FieldSpec(
        name=name,
        kind=kind,
        required=required,
        doc=doc,
        symbols=symbols,
        minimum=meta.get("minimum"),
        maximum=meta.get("maximum"),
        min_length=meta.get("min_length"),
        max_length=meta.get("max_length"),
        pattern=meta.get("pattern"),
        scale=typ.get("scale", 2) if isinstance(typ, dict) else 2,
        precision=typ.get("precision", 18) if isinstance(typ, dict) else 18,
        keys=tuple(meta.get("keys", ())),
        timestamp=bool(meta.get("timestamp")),
    )


def compose(envelope_avro: dict[str, Any], event_avro: dict[str, Any]) -> dict[str, Any]:
    """Envelope record whose ``properties`` field is the event's own record."""
    composed = copy.deepcopy(envelope_avro)
    event = {k: v for k, v in event_avro.items() if k != "trackflow"}
    ns = event_avro["namespace"]
    composed["name"] = f"{ns}.Event"
    composed.pop("namespace", None)
    composed.pop("trackflow", None)
    for f in composed["fields"]:
        f.pop("trackflow", None)
        if f["name"] == "properties":
            f["type"] = event
            f.pop("default", None)
    return composed


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise PlanError(f"{path}: a schema must be a JSON object")
    return data


def load_plan(root: Path | None = None) -> TrackingPlan:
    root = Path(root) if root else default_schemas_dir()
    env_files = sorted((root / "envelope").glob("v*.avsc"), key=lambda p: int(p.stem[1:]))
    if not env_files:
        raise PlanError(f"{root}/envelope: no envelope schema")
    env_raw = _load_json(env_files[-1])
    fastavro.parse_schema(copy.deepcopy(env_raw))
    em = env_raw["trackflow"]
    envelope = EnvelopeRules(
        version=int(em["version"]),
        fields={f["name"]: _field_spec(f, "envelope") for f in env_raw["fields"]},
        max_event_bytes=int(em["max_event_bytes"]),
        max_past_seconds=int(em["max_past_seconds"]),
        max_future_seconds=int(em["max_future_seconds"]),
        one_of_required=tuple(em["one_of_required"]),
        pii_identity_keys=tuple(em["pii_identity_keys"]),
        pii_property_names=tuple(em["pii_property_names"]),
        avro=env_raw,
    )
    versions: dict[tuple[str, int], EventSchema] = {}
    latest: dict[str, EventSchema] = {}
    by_fp: dict[int, tuple[Any, EventSchema]] = {}
    column_types: dict[str, tuple[str, str]] = {}
    for event_dir in sorted(p for p in (root / "events").iterdir() if p.is_dir()):
        files = sorted(event_dir.glob("v*.avsc"), key=lambda p: int(p.stem[1:]))
        for path in files:
            raw = _load_json(path)
            meta = raw.get("trackflow") or {}
            where = f"{event_dir.name}/{path.name}"
            if meta.get("event") != event_dir.name or meta.get("version") != int(path.stem[1:]):
                raise PlanError(f"{where}: trackflow.event/version must match the file path")
            if not raw.get("doc"):
                raise PlanError(f"{where}: the event needs a doc")
            fields = {f["name"]: _field_spec(f, where) for f in raw["fields"]}
            for spec in fields.values():
                if spec.name in ENVELOPE_COLUMNS:
                    raise PlanError(f"{where}: property {spec.name!r} clashes with a lake column")
                seen = column_types.setdefault(spec.name, (spec.kind, where))
                if seen[0] != spec.kind:
                    raise PlanError(
                        f"{where}: property {spec.name!r} is {spec.kind} here but {seen[0]} "
                        f"in {seen[1]}; one lake column cannot hold both"
                    )
            schema = EventSchema(
                name=event_dir.name,
                version=int(meta["version"]),
                owner=str(meta.get("owner", "")),
                doc=raw["doc"],
                strict=bool(meta.get("strict", False)),
                envelope_requires=tuple(meta.get("envelope_requires", ())),
                fields=fields,
                avro=raw,
            )
            versions[(schema.name, schema.version)] = schema
            latest[schema.name] = schema
            composed = compose(env_raw, raw)
            parsed = fastavro.parse_schema(composed)
            fp = int(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"), 16)
            by_fp[fp] = (parsed, schema)
    if not latest:
        raise PlanError(f"{root}/events: no event schemas")
    return TrackingPlan(root, envelope, latest, versions, by_fp)

"""Judging a replayed dead letter whose PII values are already hashed (DESIGN 17).

A dead letter keeps its payload with every value under a PII key (``identities.phone``,
``identities.email``, a property named ``phone``, ``mobile``, ...) replaced by the same
HMAC the pipeline stores (pipeline/contract/pii.py). Judged as it is, such a payload would
fail (a hash is not a phone number) or be hashed twice. So for a replay marked
``hashed_pii``: hashed identity values are taken out before validation and put back
unchanged after it, and unknown properties are kept as the payload has them (the
dead-letter masking and the stored form are the same ``mask_value``). The stored event is
then the one the original would have produced.
"""

from __future__ import annotations

import re
from typing import Any

HASHED = re.compile(r"^[0-9a-f]{64}$")  # an HMAC-SHA256 hex digest


def split_hashed(obj: Any, pii_keys: frozenset[str]) -> tuple[Any, dict[str, str]]:
    """(``obj`` without its hashed PII identities, those identities)."""
    if not isinstance(obj, dict):
        return obj, {}
    identities = obj.get("identities")
    if not isinstance(identities, dict):
        return obj, {}
    hashed = {
        k: v
        for k, v in identities.items()
        if k in pii_keys and isinstance(v, str) and HASHED.match(v)
    }
    if not hashed:
        return obj, {}
    rest = {k: v for k, v in identities.items() if k not in hashed}
    return {**obj, "identities": rest}, hashed


def restore_hashed(record: dict[str, Any], obj: Any, hashed: dict[str, str]) -> None:
    """Put the hashed identities back into the validated ``record`` and keep the payload's
    unknown properties verbatim (already masked)."""
    if hashed:
        record["identities"] = {**(record.get("identities") or {}), **hashed}
    props = obj.get("properties") if isinstance(obj, dict) else None
    if isinstance(props, dict):
        for key in record.get("unknown_properties") or ():
            if key in props:
                record["properties"][key] = props[key]

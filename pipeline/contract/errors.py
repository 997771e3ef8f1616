"""Dead-letter error codes (DESIGN section 8) and the exception that carries one."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    MALFORMED_PAYLOAD = "malformed_payload"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    MISSING_REQUIRED_FIELD = "missing_required_field"
    TYPE_MISMATCH = "type_mismatch"
    UNKNOWN_EVENT = "unknown_event"
    INVALID_VALUE = "invalid_value"
    INVALID_TIMESTAMP = "invalid_timestamp"
    UNKNOWN_PROPERTY = "unknown_property"
    # Not a producer error: an unexpected exception inside trackflow. The event is kept in
    # the DLQ instead of being lost; any row with this code is a trackflow bug.
    PROCESSING_ERROR = "processing_error"


class Rejected(Exception):
    """An event (or message) breaks the contract; becomes one DLQ record."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error details."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__

"""Phone and email normalisation and keyed hashing, so no clear PII reaches Kafka or the lake.

The hash is HMAC-SHA256 keyed by a secret from settings: without the key nobody can
test guesses against the lake, and the same person hashes the same way everywhere
(stored events, DLQ masking, ``trackflow report trail``).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from typing import Any

from pipeline.contract.errors import ErrorCode, Rejected

_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Masking of PII inside bytes that are not even JSON (dead-letter payloads): mainland mobile
# numbers in their usual spellings, E.164 numbers, and e-mail addresses.
_PHONE_IN_TEXT = re.compile(
    r"(?<![0-9A-Za-z+])(?:\+\d{1,3}[\s-]?\d(?:[\s-]?\d){6,13}|(?:(?:00|\+)?86[\s-]?)?1[3-9]\d(?:[\s-]?\d{4}){2})(?!\d)"
)
# Matches start only where a run of local-part characters starts, and the runs are
# possessive: linear time even on a 32 KiB run of letters (no catastrophic backtracking).
_EMAIL_IN_TEXT = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++)+"
)
MAX_MASK_DEPTH = 64


class PiiHasher:
    def __init__(self, secret: str, default_country_code: str = "86") -> None:
        self._key = secret.encode()
        self._cc = default_country_code

    def digest(self, kind: str, normalised: str) -> str:
        return hmac.digest(self._key, f"{kind}:{normalised}".encode(), "sha256").hex()

    def normalise_phone(self, raw: str) -> str:
        """Digits with country code, as ``+<cc><number>``; raises ``Rejected`` if not a phone."""
        s = raw.strip()
        plus = s.startswith("+")
        digits = _PHONE_SEPARATORS.sub("", s[1:] if plus else s)
        if not digits.isdigit() or not digits.isascii():
            raise Rejected(ErrorCode.INVALID_VALUE, "identities.phone is not a phone number")
        if plus:
            number = digits
        elif digits.startswith("00"):
            number = digits[2:]
        elif len(digits) == 11 and digits[0] == "1":
            number = self._cc + digits  # mainland mobile without country code
        elif digits.startswith(self._cc) and len(digits) == len(self._cc) + 11:
            number = digits
        else:
            number = self._cc + digits.lstrip("0")
        if not 8 <= len(number) <= 15:
            raise Rejected(
                ErrorCode.INVALID_VALUE,
                "identities.phone must have 8 to 15 digits with country code",
            )
        return "+" + number

    @staticmethod
    def normalise_email(raw: str) -> str:
        email = raw.strip().lower()
        if not _EMAIL.match(email):
            raise Rejected(ErrorCode.INVALID_VALUE, "identities.email is not an e-mail address")
        return email

    def hash_phone(self, raw: str) -> str:
        return self.digest("phone", self.normalise_phone(raw))

    def hash_email(self, raw: str) -> str:
        return self.digest("email", self.normalise_email(raw))

    def hash_identifier(self, kind: str, raw: str) -> str:
        """Hash ``raw`` if ``kind`` is a PII identifier type, else return it unchanged."""
        if kind == "phone":
            return self.hash_phone(raw)
        if kind == "email":
            return self.hash_email(raw)
        return raw

    def hash_loose(self, kind: str, raw: str) -> str:
        """Best-effort hash for values that failed normalisation: never return them in clear."""
        try:
            return self.hash_identifier(kind, raw)
        except Rejected:
            return self.digest(kind, raw.strip().lower())

    # -- masking of dead-letter payloads -------------------------------------------------

    def mask_text(self, text: str) -> str:
        text = _EMAIL_IN_TEXT.sub(lambda m: f"[email:{self.hash_loose('email', m.group())}]", text)
        return _PHONE_IN_TEXT.sub(lambda m: f"[phone:{self.hash_loose('phone', m.group())}]", text)

    def mask_value(self, value: Any, pii_names: Iterable[str]) -> Any:
        """Copy of a decoded JSON value with PII keys hashed and PII-looking text masked."""
        names = frozenset(n.lower() for n in pii_names)

        def walk(v: Any, key: str | None, depth: int) -> Any:
            if depth > MAX_MASK_DEPTH:
                return "[masked: nested too deeply]"
            if isinstance(v, dict):
                # Keys too: a phone number sent as a key is still a phone number.
                return {
                    self.mask_text(k): walk(item, str(k).lower(), depth + 1)
                    for k, item in v.items()
                }
            if isinstance(v, list):
                return [walk(item, key, depth + 1) for item in v]
            if key in names and isinstance(v, str | int) and not isinstance(v, bool):
                return self.hash_loose("email" if "mail" in key else "phone", str(v))
            if isinstance(v, str):
                return self.mask_text(v)
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 1_000_000:
                text = str(v)  # SDKs send phone numbers as JSON numbers too
                masked = self.mask_text(text)
                return v if masked == text else masked
            return v

        return walk(value, None, 0)

"""Phone/email normalisation, keyed hashing and masking of free text (DESIGN section 5)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
import time

import pytest

from pipeline.contract.errors import ErrorCode, Rejected
from pipeline.contract.pii import PiiHasher

SECRET = "unit-test-secret"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
MASK = re.compile(r"\[(phone|email):([0-9a-f]{64})\]")
PII_NAMES = ("phone", "mobile", "email", "tel", "telephone")


@pytest.fixture(scope="module")
def hasher() -> PiiHasher:
    return PiiHasher(SECRET)


# -- phone ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("13812345678", "+8613812345678"),
        ("  13812345678  ", "+8613812345678"),
        ("138 1234 5678", "+8613812345678"),
        ("138-1234-5678", "+8613812345678"),
        ("(138) 1234.5678", "+8613812345678"),
        ("+86 138 1234 5678", "+8613812345678"),
        ("+86-138-1234-5678", "+8613812345678"),
        ("+86 138-1234-5678", "+8613812345678"),
        ("+8613812345678", "+8613812345678"),
        ("008613812345678", "+8613812345678"),
        ("0086 138 1234 5678", "+8613812345678"),
        ("8613812345678", "+8613812345678"),
        ("19912345678", "+8619912345678"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("+44 20 7946 0958", "+442079460958"),
        ("001 415 555 0100", "+14155550100"),
    ],
)
def test_normalise_phone(hasher: PiiHasher, raw: str, expected: str) -> None:
    assert hasher.normalise_phone(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "abc",
        "phone",
        "138-1234-567a",
        "13812345678 ext 9",
        "1381234567x",
        "12345",  # too short even with the country code
        "+123",
        "+1234567890123456",  # 16 digits
        "++8613812345678",
        "１３８１２３４５６７８",  # full-width digits
        "138_1234_5678",
        "+",
    ],
)
def test_invalid_phone(hasher: PiiHasher, raw: str) -> None:
    with pytest.raises(Rejected) as info:
        hasher.normalise_phone(raw)
    assert info.value.code == ErrorCode.INVALID_VALUE
    assert "identities.phone" in info.value.detail


def test_hash_phone_is_keyed_hmac_of_the_normalised_number(hasher: PiiHasher) -> None:
    expected = hmac.new(SECRET.encode(), b"phone:+8613812345678", hashlib.sha256).hexdigest()
    for spelling in ("13812345678", "+86 138-1234-5678", "008613812345678", "138 1234 5678"):
        assert hasher.hash_phone(spelling) == expected


def test_hash_depends_on_the_secret() -> None:
    a = PiiHasher("secret-a").hash_phone("13812345678")
    b = PiiHasher("secret-b").hash_phone("13812345678")
    assert HEX64.match(a)
    assert HEX64.match(b)
    assert a != b
    assert a != hashlib.sha256(b"+8613812345678").hexdigest()


def test_hash_of_other_number_differs(hasher: PiiHasher) -> None:
    assert hasher.hash_phone("13812345678") != hasher.hash_phone("13812345679")


def test_default_country_code_is_configurable() -> None:
    assert PiiHasher(SECRET, default_country_code="852").normalise_phone("1234 5678") == (
        "+85212345678"
    )


# -- email ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alice@example.com", "alice@example.com"),
        ("  Alice@Example.COM \n", "alice@example.com"),
        ("A.B+Tag@Sub.Example.CN", "a.b+tag@sub.example.cn"),
        ("x@y.io", "x@y.io"),
    ],
)
def test_normalise_email(raw: str, expected: str) -> None:
    assert PiiHasher.normalise_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "alice",
        "alice@",
        "@example.com",
        "alice@example",
        "a b@example.com",
        "a@b@example.com",
        "alice@exa mple.com",
    ],
)
def test_invalid_email(raw: str) -> None:
    with pytest.raises(Rejected) as info:
        PiiHasher.normalise_email(raw)
    assert info.value.code == ErrorCode.INVALID_VALUE
    assert "identities.email" in info.value.detail


def test_hash_email_ignores_case_and_spaces(hasher: PiiHasher) -> None:
    h = hasher.hash_email(" Alice@Example.COM ")
    assert HEX64.match(h)
    assert h == hasher.hash_email("alice@example.com")
    assert h != hasher.hash_email("alice2@example.com")


def test_kinds_are_domain_separated(hasher: PiiHasher) -> None:
    assert hasher.digest("phone", "x") != hasher.digest("email", "x")


def test_hash_identifier_only_hashes_pii_kinds(hasher: PiiHasher) -> None:
    assert hasher.hash_identifier("openid", "oX1") == "oX1"
    assert hasher.hash_identifier("phone", "13812345678") == hasher.hash_phone("13812345678")
    assert hasher.hash_identifier("email", "A@B.cn") == hasher.hash_email("a@b.cn")


@pytest.mark.parametrize(("kind", "raw"), [("phone", "n/a"), ("email", "nobody"), ("phone", "")])
def test_hash_loose_never_returns_clear_text(hasher: PiiHasher, kind: str, raw: str) -> None:
    out = hasher.hash_loose(kind, raw)
    assert HEX64.match(out)
    assert out == hasher.digest(kind, raw.strip().lower())


# -- mask_text -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "13812345678",
        "138 1234 5678",
        "138-1234-5678",
        "+86 138 1234 5678",
        "+86-138-1234-5678",
        "+8613812345678",
        "8613812345678",
        "86 13812345678",
        "008613812345678",
    ],
)
@pytest.mark.parametrize(
    "template",
    [
        "{}",
        "call me at {} please",
        '{{"phone":"{}"}}',
        '{{"note":"tel:{}",',
        "电话：{}",  # full-width colon
        "<{}>",
    ],
)
def test_mask_text_masks_mainland_mobiles(hasher: PiiHasher, spelling: str, template: str) -> None:
    text = template.format(spelling)
    masked = hasher.mask_text(text)
    assert "12345678" not in masked
    assert "1234" not in re.sub(MASK, "", masked)
    found = MASK.findall(masked)
    assert found == [("phone", hasher.hash_phone("13812345678"))]
    assert masked == text.replace(spelling, f"[phone:{found[0][1]}]")


@pytest.mark.parametrize(
    ("number", "normalised"),
    [
        ("+14155550100", "+14155550100"),
        ("+1 415 555 0100", "+14155550100"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+852 9123 4567", "+85291234567"),
    ],
)
def test_mask_text_masks_e164_numbers(hasher: PiiHasher, number: str, normalised: str) -> None:
    masked = hasher.mask_text(f"contact {number} now")
    assert masked == f"contact [phone:{hasher.digest('phone', normalised)}] now"


@pytest.mark.parametrize(
    "text", ["Alice.W@Example.com", "mail: alice.w@example.com;", '"email":"Alice.W@EXAMPLE.COM"']
)
def test_mask_text_masks_emails(hasher: PiiHasher, text: str) -> None:
    masked = hasher.mask_text(text)
    assert "alice" not in masked.lower()
    assert "example" not in masked.lower()
    assert MASK.findall(masked) == [("email", hasher.hash_email("alice.w@example.com"))]


@pytest.mark.parametrize(
    "text",
    [
        "1795420800123",  # epoch ms (13 digits, starts like a mobile)
        "1763856000123",
        '{"event_time":1795420800123}',
        "ts=1795420800123;",
        "202611230800001234",  # 18-digit order id
        "138123456781234567",  # 18-digit order id starting like a mobile
        "order 861381234567890123 paid",
        "1795420800",  # epoch seconds
        "1381234567",  # 10 digits: too short for a mobile
        "evt-0001 home product_detail 19.99",
        "2026-11-23T08:00:00+08:00",
        "",
    ],
)
def test_mask_text_leaves_other_numbers_alone(hasher: PiiHasher, text: str) -> None:
    assert hasher.mask_text(text) == text


def test_mask_text_masks_every_occurrence(hasher: PiiHasher) -> None:
    masked = hasher.mask_text("a 13812345678 b 13912345678 c bob@x.cn")
    assert [k for k, _ in MASK.findall(masked)] == ["phone", "phone", "email"]
    assert "138" not in re.sub(MASK, "", masked)
    assert "139" not in re.sub(MASK, "", masked)


def test_mask_text_masks_a_mobile_right_after_chinese_text(hasher: PiiHasher) -> None:
    # "联系电话13812345678" (contact phone ...) is the most common spelling in a Chinese
    # mini-program; CJK characters count as \w, so the look-behind refuses the match.
    masked = hasher.mask_text("联系电话13812345678")
    assert "13812345678" not in masked
    assert masked == f"联系电话[phone:{hasher.hash_phone('13812345678')}]"


@pytest.mark.parametrize("char", ["a", "1"])
def test_mask_text_time_is_linear_in_the_text_length(hasher: PiiHasher, char: str) -> None:
    # DLQ payloads go through mask_text and may be up to 32 KiB. A 32 KiB run of word
    # characters takes about a second (the e-mail pattern retries the run from every
    # position), so a burst of such rejects stalls the validate agent.
    text = char * 32_000
    start = time.perf_counter()
    assert hasher.mask_text(text) == text
    assert time.perf_counter() - start < 0.25


# -- mask_value ----------------------------------------------------------------------------


def test_mask_value_hashes_pii_keys_at_any_depth(hasher: PiiHasher) -> None:
    value = {
        "event_id": "e1",
        "identities": {"phone": "+86 138 1234 5678", "openid": "oX"},
        "properties": {
            "page": "home",
            "contacts": [{"phone": "13912345678"}, {"email": " Bob@Shop.CN "}],
            "deep": {"a": {"b": {"c": [{"mobile": 13812345678}]}}},
            "n": 5,
            "flag": True,
            "nothing": None,
        },
    }
    original = copy.deepcopy(value)
    out = hasher.mask_value(value, PII_NAMES)
    assert value == original  # not mutated
    assert out == {
        "event_id": "e1",
        "identities": {"phone": hasher.hash_phone("13812345678"), "openid": "oX"},
        "properties": {
            "page": "home",
            "contacts": [
                {"phone": hasher.hash_phone("13912345678")},
                {"email": hasher.hash_email("bob@shop.cn")},
            ],
            "deep": {"a": {"b": {"c": [{"mobile": hasher.hash_phone("13812345678")}]}}},
            "n": 5,
            "flag": True,
            "nothing": None,
        },
    }


def test_mask_value_hashes_unparseable_pii_loosely(hasher: PiiHasher) -> None:
    out = hasher.mask_value({"phone": "not a phone", "email": "nobody"}, PII_NAMES)
    assert out == {
        "phone": hasher.digest("phone", "not a phone"),
        "email": hasher.digest("email", "nobody"),
    }


def test_mask_value_masks_text_under_other_keys(hasher: PiiHasher) -> None:
    out = hasher.mask_value({"note": "call 138-1234-5678", "ts": 1795420800123}, PII_NAMES)
    assert out == {
        "note": f"call [phone:{hasher.hash_phone('13812345678')}]",
        "ts": 1795420800123,
    }


def test_mask_value_without_pii_is_equal(hasher: PiiHasher) -> None:
    value = {"event_id": "e1", "properties": {"order_id": "202611230800001234", "amount": 9.9}}
    assert hasher.mask_value(value, PII_NAMES) == value

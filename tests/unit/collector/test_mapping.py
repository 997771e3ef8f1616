"""Segment calls -> envelopes -> events.raw messages (DESIGN section 13), and what the
worker's validation then makes of them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.collector.mapping import (
    MAX_MESSAGE_BYTES,
    RequestInfo,
    build,
    envelope,
    event_time,
    merge,
    partition_of,
)
from pipeline.contract.errors import Rejected
from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import load_plan
from pipeline.ingest.codecs import decode_message
from pipeline.ingest.validation import CONSENT_DROPPED, Validator
from pipeline.tools.produce import content_key

RECEIVED = 1_795_420_800_000  # 2026-11-23T08:00:00Z
INFO = RequestInfo(RECEIVED, "web")
LIMIT = 32 * 1024


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator(load_plan(), PiiHasher("unit-test-secret"))


def call(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "messageId": "m-1",
        "anonymousId": "anon-1",
        "timestamp": "2026-11-23T07:59:00.000Z",
    }
    base.update(fields)
    return base


# -- every call type -------------------------------------------------------------------


def test_track() -> None:
    env = envelope(
        call(
            event="add_to_cart",
            userId="m-7",
            properties={"product_id": "p1", "quantity": 2, "price": 9.9},
            context={"app": {"version": "3.1.0"}, "ip": "1.2.3.4", "library": {"name": "x"}},
            integrations={"All": True},
            writeKey="secret",
        ),
        "track",
        INFO,
    )
    assert env == {
        "event_id": "m-1",
        "event_name": "add_to_cart",
        "event_time": "2026-11-23T07:59:00.000Z",
        "anonymous_id": "anon-1",
        "user_id": "m-7",
        "platform": "web",
        "app_version": "3.1.0",
        "properties": {"product_id": "p1", "quantity": 2, "price": 9.9},
    }


@pytest.mark.parametrize("kind", ["page", "screen"])
def test_page_and_screen_are_page_views_named_by_the_call(kind: str) -> None:
    env = envelope(call(name="home", properties={"referrer": "r", "url": "u"}), kind, INFO)
    assert env["event_name"] == "page_view"
    assert env["properties"] == {"referrer": "r", "url": "u", "page": "home"}
    # Without a name the call's own properties stay as they are (validation judges page).
    assert envelope(call(properties={"page": "cart"}), kind, INFO)["properties"] == {"page": "cart"}
    assert envelope(call(name="home"), kind, INFO)["properties"] == {"page": "home"}


def test_identify_traits_become_properties_and_identities() -> None:
    env = envelope(
        call(
            userId="m-7",
            traits={"email": "Ada@Example.com", "name": "Ada", "plan": "gold", "phone": ""},
            context={"traits": {"phone": "138 1234 5678", "email": "old@example.com"}},
        ),
        "identify",
        INFO,
    )
    assert env["event_name"] == "identify"
    # The call's traits win over context.traits; an empty trait is no identifier.
    assert env["identities"] == {"phone": "138 1234 5678", "email": "Ada@Example.com"}
    assert env["properties"] == {"name": "Ada", "plan": "gold"}


def test_identify_traits_only_in_context_as_rudderstack_sends_them() -> None:
    """RudderStack's SDKs put identify's traits in context.traits alone."""
    traits = {"email": "ada@example.com", "name": "Ada"}
    env = envelope(call(userId="m-7", context={"traits": traits}), "identify", INFO)
    assert env["identities"] == {"email": "ada@example.com"}
    assert env["properties"] == {"name": "Ada"}
    # Not for other calls: context.traits describe the person, not the event.
    other = envelope(call(event="signup", context={"traits": traits}), "track", INFO)
    assert "name" not in (other.get("properties") or {})


def test_alias_links_previous_id_and_user_id() -> None:
    env = envelope(call(previousId="anon-0", userId="m-7"), "alias", INFO)
    assert env["event_name"] == "alias"
    assert env["anonymous_id"] == "anon-0"  # previousId, not the call's anonymousId
    assert env["user_id"] == "m-7"
    assert "properties" not in env


def test_group_keeps_its_traits_but_they_are_not_the_persons_identities() -> None:
    env = envelope(
        call(
            userId="m-7",
            groupId="g-1",
            traits={"name": "Shop", "email": "shop@example.com"},
            context={"traits": {"email": "ada@example.com"}},
        ),
        "group",
        INFO,
    )
    assert env["event_name"] == "group"
    assert env["properties"] == {"name": "Shop", "email": "shop@example.com", "group_id": "g-1"}
    assert env["identities"] == {"email": "ada@example.com"}


def test_track_identities_come_from_context_traits() -> None:
    env = envelope(
        call(event="login", context={"traits": {"openid": "o-1", "unionid": "u-1", "x": 1}}),
        "track",
        INFO,
    )
    assert env["identities"] == {"openid": "o-1", "unionid": "u-1"}


def test_an_unknown_type_keeps_it_as_the_event_name() -> None:
    assert envelope(call(), "purchase", INFO)["event_name"] == "purchase"
    assert "event_name" not in envelope(call(), None, INFO)


# -- timestamps ----------------------------------------------------------------------------


def test_timestamp_wins() -> None:
    assert event_time({"timestamp": 123, "sentAt": "x"}, INFO) == 123


def test_clock_skew_is_corrected_from_sent_at_and_original_timestamp() -> None:
    c = {"originalTimestamp": "2026-11-23T08:00:00.000Z", "sentAt": "2026-11-23T08:00:05.000Z"}
    # The device's clock is fast or slow; only the 5 s between the two matter.
    assert event_time(c, INFO) == RECEIVED - 5_000
    batch_sent = RequestInfo(RECEIVED, "web", sent_at="2026-11-23T08:01:00+00:00")
    assert event_time({"originalTimestamp": "2026-11-23T08:00:00Z"}, batch_sent) == (
        RECEIVED - 60_000
    )


def test_received_at_when_nothing_else_says() -> None:
    assert event_time({}, INFO) == RECEIVED
    assert event_time({"originalTimestamp": "2026-11-23T08:00:00Z"}, INFO) == RECEIVED
    assert event_time({"sentAt": "2026-11-23T08:00:00Z"}, INFO) == RECEIVED


def test_an_unreadable_time_is_left_for_validation_to_reject(validator: Validator) -> None:
    c = call(event="signup", properties={"method": "phone"}, timestamp=None)
    c.update(originalTimestamp="yesterday", sentAt="2026-11-23T08:00:00Z")
    assert event_time(c, INFO) == "yesterday"
    with pytest.raises(Rejected) as err:
        validator.validate(envelope(c, "track", INFO), RECEIVED)
    assert err.value.code == "invalid_timestamp"


# -- context, consent, platform ---------------------------------------------------------


def test_batch_context_is_merged_into_each_call_which_wins() -> None:
    base = {"traits": {"phone": "13800000000", "email": "a@b.cn"}, "app": {"version": "1"}}
    info = RequestInfo(RECEIVED, "web", context=base)
    env = envelope(call(event="x", context={"traits": {"email": "c@d.cn"}}), "track", info)
    assert env["identities"] == {"phone": "13800000000", "email": "c@d.cn"}
    assert env["app_version"] == "1"
    assert base == {"traits": {"phone": "13800000000", "email": "a@b.cn"}, "app": {"version": "1"}}
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}
    assert merge({"a": 1}, None) == {"a": 1}


def test_consent_category_preferences(validator: Validator) -> None:
    def consent(prefs: Any) -> Any:
        ctx = {"consent": {"categoryPreferences": prefs}}
        return envelope(call(event="x", context=ctx), "track", INFO).get("consent")

    assert consent({"analytics": False, "ads": True}) == {"analytics": False}
    assert consent({"analytics": True, "marketing": False}) == {
        "analytics": True,
        "marketing": False,
    }
    assert consent({"ads": True}) is None
    assert consent(None) is None
    assert consent("yes") == "yes"  # not an object: dead-lettered rather than stored
    dropped = call(
        event="signup",
        properties={"method": "phone"},
        timestamp=RECEIVED,
        context={"consent": {"categoryPreferences": {"analytics": False}}},
    )
    assert validator.validate(envelope(dropped, "track", INFO), RECEIVED) is CONSENT_DROPPED


def test_platform_from_the_call_else_the_source() -> None:
    assert envelope(call(), "track", INFO)["platform"] == "web"
    assert envelope(call(context={"platform": "h5"}), "track", INFO)["platform"] == "h5"
    assert envelope(call(platform="ios"), "track", INFO)["platform"] == "ios"
    assert "platform" not in envelope(call(), "track", RequestInfo(RECEIVED, None))


# -- bad input goes through validation like a Kafka producer's --------------------------


@pytest.mark.parametrize(
    ("fields", "code", "detail"),
    [
        ({"messageId": None}, "missing_required_field", "event_id"),
        ({"messageId": 42}, "type_mismatch", "event_id"),
        ({"messageId": ""}, "invalid_value", "event_id"),
        ({"event": 7}, "type_mismatch", "event_name"),
        ({"event": "purchase"}, "unknown_event", "event_name"),
        ({"properties": "cheap"}, "type_mismatch", "properties"),
        ({"properties": {"method": "fax"}}, "invalid_value", "properties.method"),
        ({"anonymousId": 5}, "type_mismatch", "anonymous_id"),
        ({"anonymousId": None}, "missing_required_field", "anonymous_id"),
        ({"timestamp": "2026-11-23 08:00"}, "invalid_timestamp", "event_time"),
        ({"context": {"traits": {"phone": 13812345678}}}, "type_mismatch", "identities.phone"),
        ({"context": {"traits": {"email": "nope"}}}, "invalid_value", "identities.email"),
    ],
)
def test_bad_calls_are_rejected_by_validation(
    validator: Validator, fields: dict[str, Any], code: str, detail: str
) -> None:
    c = call(event="signup", properties={"method": "phone"}, timestamp=RECEIVED - 1000)
    c.update(fields)
    with pytest.raises(Rejected) as err:
        validator.validate(envelope(c, "track", INFO), RECEIVED)
    assert err.value.code == code
    assert detail in err.value.detail


def test_message_ids_the_envelope_refuses_become_stable_digests(validator: Validator) -> None:
    classic_node = "node-" + "0" * 32 + "-" + "f47ac10b-58cc-4372-a567-0e02b2c3d479"  # 74
    for message_id in (classic_node, "order:42", "id with spaces", "事件-1", "x" * 65):
        env = envelope(call(messageId=message_id, event="signup"), "track", INFO)
        assert env["event_id"].startswith("mid-")
        assert env["event_id"] == envelope(call(messageId=message_id), "track", INFO)["event_id"]
        c = call(messageId=message_id, event="signup", properties={"method": "phone"})
        c["timestamp"] = RECEIVED - 1000
        record = validator.validate(envelope(c, "track", INFO), RECEIVED)
        assert isinstance(record, dict)
    assert envelope(call(messageId="node-next-1-ab_C"), "track", INFO)["event_id"] == (
        "node-next-1-ab_C"
    )
    other = envelope(call(messageId="order:43"), "track", INFO)["event_id"]
    assert other != envelope(call(messageId="order:42"), "track", INFO)["event_id"]


def test_good_calls_pass_validation_with_identifiers_hashed(validator: Validator) -> None:
    calls = [
        ("track", call(event="signup", properties={"method": "phone"})),
        ("page", call(name="product_detail", properties={"product_id": "p1"})),
        ("screen", call(name="cart")),
        ("identify", call(userId="m-1", traits={"phone": "13812345678", "name": "Ada"})),
        ("alias", call(previousId="anon-1", userId="m-1")),
        ("group", call(groupId="g-1", traits={"name": "Shop"})),
    ]
    for kind, c in calls:
        c["timestamp"] = "2026-11-23T07:59:00+08:00"
        record = validator.validate(envelope(c, kind, INFO), RECEIVED - 8 * 3_600_000)
        assert isinstance(record, dict), kind
        assert record["event_id"] == "m-1"
        assert "13812345678" not in orjson.dumps(record).decode()
    identify = validator.validate(envelope(calls[3][1], "identify", INFO), RECEIVED)
    assert isinstance(identify, dict)
    assert len(identify["identities"]["phone"]) == 64


# -- Kafka messages ---------------------------------------------------------------------


def test_one_message_per_partition_arrays_for_several_events_in_order() -> None:
    calls = [
        call(type="track", event="a", messageId="1", anonymousId="x"),
        call(type="track", event="b", messageId="2", anonymousId="y"),
        call(type="page", name="home", messageId="3", anonymousId="x"),
        call(type="track", event="c", messageId="4", anonymousId=None, userId="m"),
        7,
    ]
    keys = [b"x", b"y", b"x", b"m", content_key(b"7")]
    for partitions in (1, 3, 8, 64):
        out = build(calls, None, INFO, False, LIMIT, partitions)
        assert out.events == 5
        assert len({p for p, _, _ in out.messages}) == len(out.messages)  # one per partition
        placed: dict[bytes, int] = {}
        for partition, key, value in out.messages:
            decoded = orjson.loads(value)
            for element in decoded if isinstance(decoded, list) else [decoded]:
                i = [1, 2, 3, 4, 7].index(
                    int(element["event_id"]) if isinstance(element, dict) else element
                )
                placed[keys[i]] = partition
            assert partition_of(key, partitions) == partition
        # Every event on its own key's partition: a retry meets its first copy's memory.
        assert placed == {k: partition_of(k, partitions) for k in keys}
    (one,) = build(calls, None, INFO, False, LIMIT, 1).messages
    assert [e if isinstance(e, int) else e["event_id"] for e in orjson.loads(one[2])] == [
        "1",
        "2",
        "3",
        "4",
        7,
    ]


def test_the_endpoint_kind_wins_over_the_bodys_type() -> None:
    out = build([call(type="track", name="home")], "page", INFO, False, LIMIT, 8)
    assert orjson.loads(out.messages[0][2])["event_name"] == "page_view"


def test_an_oversized_call_goes_alone_as_it_came_without_its_write_key() -> None:
    big = call(type="track", event="a", messageId="big", properties={"blob": "x" * 40_000})
    big["writeKey"] = "secret-key"
    small = call(type="track", event="a", messageId="small")
    out = build([small, big], None, INFO, True, LIMIT, 8)
    assert out.oversized == 1
    ((partition, key, value),) = out.messages
    items = decode_message(value, load_plan())
    assert key == b"anon-1"
    assert partition == partition_of(b"anon-1", 8)
    assert items[0].error is None
    assert items[1].error is not None
    assert items[1].error.code == "payload_too_large"
    assert b"secret-key" not in value
    assert orjson.loads(value)[1]["messageId"] == "big"


def test_messages_are_split_under_the_kafka_limit() -> None:
    calls = [
        call(type="track", event="a", messageId=f"m{i}", properties={"p": "x" * 20_000})
        for i in range(60)
    ]
    out = build(calls, None, INFO, True, LIMIT, 8)
    assert len(out.messages) > 1
    assert all(len(v) <= MAX_MESSAGE_BYTES for _, _, v in out.messages)
    ids = [e["event_id"] for _, _, v in out.messages for e in orjson.loads(v)]
    assert ids == [f"m{i}" for i in range(60)]


def test_a_retry_gives_the_same_messages() -> None:
    calls = [
        call(type="track", event="a", messageId=str(i), anonymousId=f"a{i % 3}") for i in range(9)
    ]
    assert (
        build(calls, None, INFO, False, LIMIT, 8).messages
        == build(calls, None, INFO, False, LIMIT, 8).messages
    )

"""Write keys, bodies (gzip, text/plain), answers, and the delivery wait."""

from __future__ import annotations

import asyncio
import base64
import gzip
import zlib

import pytest
from confluent_kafka import KafkaError

from pipeline.collector.http import (
    MAX_REQUEST_BYTES,
    Refusal,
    basic_key,
    body_key,
    decode_body,
    inflate,
)
from pipeline.collector.kafka import Delivery


def basic(user_password: str) -> str:
    return "Basic " + base64.b64encode(user_password.encode()).decode()


def test_basic_auth_user_is_the_write_key() -> None:
    assert basic_key(basic("wk-1:")) == "wk-1"
    assert basic_key(basic("wk-1:ignored")) == "wk-1"
    assert basic_key("basic " + base64.b64encode(b"wk-2:").decode()) == "wk-2"
    assert basic_key(basic(":")) is None  # no key here: the body may have one
    assert basic_key(None) is None
    assert basic_key("Bearer abc") is None
    with pytest.raises(Refusal) as err:
        basic_key("Basic !!!not-base64")
    assert err.value.status == 401


def test_write_key_in_the_body_or_the_first_call() -> None:
    assert body_key({"writeKey": "k"}, []) == "k"
    calls = [{"writeKey": "k2"}]
    assert body_key({"batch": calls}, calls) == "k2"
    assert body_key({"writeKey": 5}, []) is None
    assert body_key({"writeKey": ""}, []) is None


def test_plain_and_gzip_bodies() -> None:
    doc = b'{"batch": [{"type": "track"}]}'
    assert decode_body(doc, None) == ({"batch": [{"type": "track"}]}, len(doc))
    assert decode_body(gzip.compress(doc), "gzip")[0] == {"batch": [{"type": "track"}]}
    assert decode_body(zlib.compress(doc), "deflate")[0] == {"batch": [{"type": "track"}]}
    raw_deflate = zlib.compressobj(wbits=-15)
    data = raw_deflate.compress(doc) + raw_deflate.flush()
    assert decode_body(data, "deflate")[0] == {"batch": [{"type": "track"}]}


@pytest.mark.parametrize(
    ("raw", "encoding", "status"),
    [
        (b"not json", None, 400),
        (b"", None, 400),
        (b"   ", None, 400),
        (b"{}", "br", 400),
        (b"not gzip at all", "gzip", 400),
        # cut short; mtime=0 keeps the test id the same in every xdist worker
        (gzip.compress(b'{"a": 1}', mtime=0)[:-12], "gzip", 400),
    ],
)
def test_bad_bodies(raw: bytes, encoding: str | None, status: int) -> None:
    with pytest.raises(Refusal) as err:
        decode_body(raw, encoding)
    assert err.value.status == status


def test_a_gzip_bomb_is_413_without_inflating_it_all() -> None:
    bomb = gzip.compress(b" " * (50 * MAX_REQUEST_BYTES))
    assert len(bomb) < MAX_REQUEST_BYTES // 10
    with pytest.raises(Refusal) as err:
        inflate(bomb)
    assert err.value.status == 413
    assert len(inflate(gzip.compress(b" " * MAX_REQUEST_BYTES))) == MAX_REQUEST_BYTES


def test_refusal_answers_are_json() -> None:
    response = Refusal(429, "slow down", {"Retry-After": "2"}).response()
    assert response.status == 429
    assert response.headers["Retry-After"] == "2"
    assert response.body == b'{"success":false,"error":"slow down"}'


# -- one wait for all acknowledgements of a request --------------------------------------


class Owner:
    """The producer side a Delivery reports to: its loop and count of waiting requests."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.outstanding = 0


def run_delivery(outcomes: list[KafkaError | None], unsent: int = 0) -> tuple[Delivery, Owner]:
    async def main() -> tuple[Delivery, Owner]:
        owner = Owner(asyncio.get_running_loop())
        delivery = Delivery(owner, len(outcomes) + unsent)  # type: ignore[arg-type]
        assert owner.outstanding == 1
        if unsent:
            delivery.unsent(unsent, "queue full")
        waiting = asyncio.ensure_future(delivery.wait(5))
        await asyncio.sleep(0)
        for err in outcomes[:-1]:  # acks arrive one poll at a time
            delivery(err, None)  # type: ignore[arg-type]
            await asyncio.sleep(0)
            assert not waiting.done()
        delivery(outcomes[-1], None)  # type: ignore[arg-type]
        assert await waiting == (delivery.failed == 0)
        assert owner.outstanding == 0
        return delivery, owner

    return asyncio.run(main())


def test_delivery_resolves_when_every_message_is_acknowledged() -> None:
    delivery, _ = run_delivery([None, None, None])
    assert delivery.failed == 0
    assert delivery.error is None


def test_one_failed_message_fails_the_request() -> None:
    delivery, _ = run_delivery([None, KafkaError(KafkaError._MSG_TIMED_OUT), None])
    assert delivery.failed == 1
    assert delivery.error == "_MSG_TIMED_OUT"


def test_messages_never_handed_over_fail_the_request() -> None:
    delivery, _ = run_delivery([None], unsent=2)
    assert delivery.failed == 2
    assert delivery.error == "queue full"


def test_a_delivery_without_acks_times_out_and_late_acks_change_nothing() -> None:
    async def main() -> tuple[Delivery, Owner, bool]:
        owner = Owner(asyncio.get_running_loop())
        delivery = Delivery(owner, 2)  # type: ignore[arg-type]
        delivery(None, None)  # type: ignore[arg-type]
        ok = await delivery.wait(0.05)
        delivery(None, None)  # type: ignore[arg-type]  # after the answer: counted once
        return delivery, owner, ok

    delivery, owner, ok = asyncio.run(main())
    assert not ok
    assert delivery.error == "timed out waiting for Kafka"
    assert owner.outstanding == 0

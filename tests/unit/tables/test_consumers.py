"""tables.consumers: a reader whose start fails or is cancelled is closed, not leaked.

No broker needed: a closed port makes ``start`` fail, a socket that accepts and never
answers keeps it waiting until it is cancelled. aiokafka reports a consumer collected
unclosed through the loop's exception handler ("Unclosed AIOKafkaConsumer").
"""

from __future__ import annotations

import asyncio
import gc
import socket
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError

from tables.consumers import reading_consumer


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kafka(port: int) -> Any:
    return SimpleNamespace(
        aiokafka=lambda: {"bootstrap_servers": f"127.0.0.1:{port}", "request_timeout_ms": 2000}
    )


def _unclosed_reports(body: Any) -> list[str]:
    """Run ``body()`` and collect the unclosed-consumer reports of what it dropped."""
    reports: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: reports.append(ctx["message"]))
        await body()
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(main())
    return [r for r in reports if "Unclosed AIOKafkaConsumer" in r]


def test_the_bare_pattern_leaks_a_consumer_whose_start_failed() -> None:
    """What the helper is for: start before try/finally leaves the consumer open."""

    async def bare() -> None:
        consumer = AIOKafkaConsumer(**_kafka(_closed_port()).aiokafka(), group_id=None)
        with pytest.raises(KafkaConnectionError):
            await consumer.start()  # the bare pattern's try/finally only follows this line
        del consumer

    assert _unclosed_reports(bare) == ["Unclosed AIOKafkaConsumer"]


def test_a_start_that_fails_closes_the_consumer() -> None:
    async def failing() -> None:
        with pytest.raises(KafkaConnectionError):
            async with reading_consumer(_kafka(_closed_port())):
                pass

    assert _unclosed_reports(failing) == []


def test_a_start_that_is_cancelled_closes_the_consumer() -> None:
    async def cancelled() -> None:
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        entered = False

        async def read() -> None:
            nonlocal entered
            async with reading_consumer(_kafka(port)):
                entered = True

        task = asyncio.create_task(read())
        await asyncio.sleep(0.3)  # connected, waiting for metadata that never comes
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        silent.close()
        assert not entered

    assert _unclosed_reports(cancelled) == []

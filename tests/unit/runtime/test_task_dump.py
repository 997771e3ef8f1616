"""SIGUSR1's task dump names every task and the await it is parked on."""

from __future__ import annotations

import asyncio
import os
import signal

from pipeline.runtime import task_dump


async def parked_on_an_event(event: asyncio.Event) -> None:
    await event.wait()


def test_the_dump_shows_where_each_task_waits() -> None:
    async def main() -> str:
        event = asyncio.Event()
        task = asyncio.create_task(parked_on_an_event(event), name="stuck-agent")
        await asyncio.sleep(0)
        text = task_dump.dump_tasks()
        event.set()
        await task
        return text

    text = asyncio.run(main())
    assert "--- stuck-agent:" in text
    assert "parked_on_an_event" in text
    assert "event.wait()" in text


def test_sigusr1_triggers_it() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        real = task_dump.dump_tasks

        def spy() -> str:
            done.set()
            return real()

        task_dump.dump_tasks = spy  # type: ignore[assignment]
        try:
            task_dump.install(loop)
            os.kill(os.getpid(), signal.SIGUSR1)
            await asyncio.wait_for(done.wait(), 5)
        finally:
            task_dump.dump_tasks = real  # type: ignore[assignment]
            loop.remove_signal_handler(signal.SIGUSR1)

    asyncio.run(main())

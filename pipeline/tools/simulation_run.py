"""Sending simulated traffic to Kafka, paced in real time or as fast as possible."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.tools.simulator import SimConfig, generate


class Sender(Protocol):
    """Where simulated messages go: Kafka (``RawProducer``) or the HTTP collector
    (``HttpSender``)."""

    def send(self, key: bytes | None, value: bytes) -> None: ...
    def flush_soon(self) -> None: ...
    def flush(self, timeout: float = 60.0) -> int: ...


@dataclass
class SimSummary:
    messages: int = 0
    events: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def describe(self) -> str:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(self.kinds.items()))
        return (
            f"sent {self.messages} messages / {self.events} events in {self.seconds:.1f}s ({kinds})"
        )


def run_simulation(
    producer: Sender,
    config: SimConfig,
    paced: bool = True,
    on_progress: Callable[[SimSummary], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SimSummary:
    summary = SimSummary()
    started = time.monotonic()
    first_ms: int | None = None
    last_report = started
    for message in generate(config):
        if should_stop is not None and should_stop():
            break
        if paced:
            first_ms = message.event_time_ms if first_ms is None else first_ms
            delay = (message.event_time_ms - first_ms) / 1000 - (time.monotonic() - started)
            if delay > 0:
                producer.flush_soon()
                time.sleep(delay)
        producer.send(message.key, message.value)
        summary.messages += 1
        summary.events += message.events
        summary.kinds[message.kind] += 1
        now = time.monotonic()
        if on_progress is not None and now - last_report >= 0.5:
            summary.seconds = now - started
            on_progress(summary)
            last_report = now
    producer.flush()
    summary.seconds = time.monotonic() - started
    return summary

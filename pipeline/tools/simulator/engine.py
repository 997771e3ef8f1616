"""The clock: a Poisson process of ``rate`` events per second that decides, message by
message, whether the next one is junk, an SDK retry or a session's next step(s).

Messages are held in a heap until the clock passes their event time, so the stream comes
out in non-decreasing ``event_time_ms`` although retries are sent after a delay.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from random import Random

from pipeline.tools.simulator.catalog import Catalog
from pipeline.tools.simulator.checkout import Checkout, OrderIds, Outage
from pipeline.tools.simulator.config import SimConfig, SimMessage
from pipeline.tools.simulator.journeys import Journeys
from pipeline.tools.simulator.junk import JunkMaker
from pipeline.tools.simulator.logins import Logins
from pipeline.tools.simulator.population import Population
from pipeline.tools.simulator.scheduler import SessionPool


@dataclass(frozen=True)
class KindOdds:
    """Per-message probabilities of each kind, drawn with one roll per message."""

    malformed: float
    duplicate: float
    batch: float

    @classmethod
    def of(cls, config: SimConfig) -> KindOdds:
        # Duplicates are defined as a share of events, so their per-message probability is
        # scaled by the expected events per message.
        m = min(max(config.malformed_share, 0.0), 1.0)
        d = min(max(config.duplicate_share, 0.0), 0.9)
        b = min(max(config.batch_share, 0.0), 1.0)
        per_session_msg = 1.0 + b * 2.6  # batches hold ~3.6 events after session ends
        q = d * (m + per_session_msg * (1 - m)) / (1 - d + d * per_session_msg)
        duplicate = min(q, 1.0 - m)
        rest = 1.0 - m - duplicate
        return cls(m, duplicate, min(1.0, b / rest) if rest > 0 else 0.0)


class Simulation:
    def __init__(self, config: SimConfig) -> None:
        if max(0, config.members) + max(0, config.anonymous_visitors) == 0:
            raise ValueError("the simulation needs at least one member or anonymous visitor")
        self.cfg = config
        # Everything draws from this one generator; the order of construction below is the
        # order of the draws, so it is part of what a seed means.
        rng = self.rng = Random(config.seed)
        start = config.start_ms if config.start_ms is not None else int(time.time() * 1000)
        self.start_ms = start
        self.end_ms = start + config.duration * 1000.0
        run_tag = f"{rng.randrange(10**4):04d}"
        population = Population(rng, config)
        catalog = Catalog(rng)
        logins = Logins(rng, config.phone_share)
        checkout = Checkout(rng, logins, Outage.of(config, start), OrderIds(start, run_tag))
        journeys = Journeys(rng, catalog, logins, checkout)
        self.sessions = SessionPool(rng, config, population.devices, journeys)
        self.junk = JunkMaker(rng, population.devices, catalog)
        self.odds = KindOdds.of(config)
        self.recent_singles: deque[SimMessage] = deque(maxlen=64)

    def run(self) -> Iterator[SimMessage]:
        rng, cfg = self.rng, self.cfg
        if cfg.rate <= 0 or cfg.duration <= 0:
            return
        pending: list[tuple[float, int, SimMessage]] = []
        seq = 0
        clock = float(self.start_ms)
        mean_gap_ms = 1000.0 / cfg.rate
        while clock < self.end_ms:
            msg, sort_ms = self._next_message(clock)
            heapq.heappush(pending, (sort_ms, seq, msg))
            seq += 1
            for _ in range(msg.events):
                clock += rng.expovariate(1.0) * mean_gap_ms
            while pending and pending[0][0] <= clock:
                yield heapq.heappop(pending)[2]
        while pending:
            yield heapq.heappop(pending)[2]

    def _next_message(self, clock: float) -> tuple[SimMessage, float]:
        """The message the clock produces now, and the time to release it at."""
        rng, odds = self.rng, self.odds
        t = int(clock)
        roll = rng.random()
        if roll < odds.malformed:
            key, value, events = self.junk.make(t)
            return SimMessage(key, value, events, t, "malformed"), t
        if roll < odds.malformed + odds.duplicate and self.recent_singles:
            original = self.recent_singles.popleft()
            resend = int(max(clock, original.event_time_ms) + rng.uniform(300, 3000))
            return SimMessage(original.key, original.value, 1, resend, "duplicate"), resend
        batch = rng.random() < odds.batch
        msg = self.sessions.message(clock, batch)
        if not batch:
            self.recent_singles.append(msg)
        return msg, msg.event_time_ms


def generate(config: SimConfig) -> Iterator[SimMessage]:
    """Messages of the whole run, in non-decreasing ``event_time_ms`` order."""
    return Simulation(config).run()

"""The sessions in flight: which device starts a visit, which visit speaks next.

Concurrency is capped so each session keeps a believable pace between its events while the
run as a whole still reaches the requested rate.
"""

from __future__ import annotations

from random import Random
from typing import Any

import orjson

from pipeline.tools.simulator.config import SimConfig, SimMessage
from pipeline.tools.simulator.journeys import Journeys
from pipeline.tools.simulator.population import Device
from pipeline.tools.simulator.session import Session
from pipeline.tools.simulator.wire import envelope

_THINK_S = 3.0  # mean seconds between two events of one session at low rates
_CHANNELS = ("organic", "wechat_share", "ad_feed", "search_ad", "kol_live", "push", "qr_offline")
_CHANNEL_WEIGHTS = (30, 22, 18, 8, 8, 8, 6)


class SessionPool:
    def __init__(
        self, rng: Random, config: SimConfig, devices: list[Device], journeys: Journeys
    ) -> None:
        self.rng = rng
        self.consent_withdrawn_share = config.consent_withdrawn_share
        self.journeys = journeys
        self.idle: list[Device] = list(devices)
        self.active: list[Session] = []
        # Short runs compress sessions so that a 30-second demo still shows orders.
        think_s = min(_THINK_S, max(0.3, config.duration / 60))
        self.pace = think_s / _THINK_S
        self.concurrency = max(1, min(round(config.rate * think_s), len(devices) // 2 or 1))

    def message(self, clock: float, batch: bool) -> SimMessage:
        """The next message of some session at or after ``clock``: one event or a batch."""
        while True:
            session = self._pick(clock)
            events, first_ms = self._advance(session, clock, batch)
            if events:
                break
        key = session.device.anonymous_id.encode()
        if session.consent is not None and session.consent["analytics"] is False:
            kind = "consent_withdrawn"
        else:
            kind = "batch" if batch else "event"
        value = orjson.dumps(events if batch else events[0])
        return SimMessage(key, value, len(events), first_ms, kind)

    def _advance(
        self, session: Session, clock: float, batch: bool
    ) -> tuple[list[dict[str, Any]], int]:
        """Steps of ``session`` for one message; ends it when its script runs out."""
        rng = self.rng
        t = max(clock, session.ready_ms)
        size = rng.randint(2, 6) if batch else 1
        events: list[dict[str, Any]] = []
        first_ms = int(t)
        for i in range(size):
            if i:
                t += rng.uniform(300, 2000) * self.pace
            session.now_ms = int(t)
            step = next(session.script, None)
            if step is None:
                self._end(session)
                break
            events.append(envelope(rng, session, *step))
        else:
            session.ready_ms = t + rng.uniform(400, 2500) * self.pace
        return events, first_ms

    def _pick(self, clock: float) -> Session:
        """A new visit while below the cap, else a few tries for one that is ready."""
        rng = self.rng
        active = self.active
        want_new = len(active) < self.concurrency and rng.random() > len(active) / self.concurrency
        if self.idle and (want_new or not active):
            return self._start(clock)
        best = None
        for _ in range(4):
            candidate = active[rng.randrange(len(active))]
            if candidate.ready_ms <= clock:
                return candidate
            if best is None or candidate.ready_ms < best.ready_ms:
                best = candidate
        if self.idle:
            return self._start(clock)
        assert best is not None
        return best

    def _start(self, clock: float) -> Session:
        rng = self.rng
        idle = self.idle
        i = rng.randrange(len(idle))
        if idle[i].owner is None:
            i = rng.randrange(len(idle))  # members come back more often than passers-by
        idle[i], idle[-1] = idle[-1], idle[i]
        dev = idle.pop()
        member = dev.owner
        if dev.shared_with is not None and rng.random() < 0.3:
            member = dev.shared_with
        channel = rng.choices(_CHANNELS, _CHANNEL_WEIGHTS)[0] if rng.random() < 0.55 else None
        session = Session(dev, member, channel, self._consent(), ready_ms=clock)
        session.slot = len(self.active)
        session.script = self.journeys.script(session)
        self.active.append(session)
        return session

    def _consent(self) -> dict[str, bool] | None:
        """Most SDKs send no consent; some visitors have withdrawn analytics consent."""
        rng = self.rng
        if rng.random() < self.consent_withdrawn_share:
            return {"analytics": False, "marketing": False}
        if rng.random() < 0.2:
            return {"analytics": True, "marketing": rng.random() < 0.6}
        return None

    def _end(self, session: Session) -> None:
        active = self.active
        last = active.pop()
        if last is not session:
            active[session.slot] = last
            last.slot = session.slot
        self.idle.append(session.device)

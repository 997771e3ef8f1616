"""Seeded generator of mini-program e-commerce tracking traffic for ``trackflow simulate``.

Pure and deterministic: one ``SimConfig`` always yields the same bytes, so a demo, a load
test or a failing pipeline run can be replayed exactly. Producing to Kafka is the CLI's job.

Traffic is a set of concurrent sessions (a person on a device) advanced one message at a
time by a Poisson clock of ``rate`` events per second, so the event count tracks
``rate * duration`` while each session keeps a believable order: home first, browse, cart,
checkout, pay request, pay result.

Modules, by what they model: ``config`` (the public types), ``population`` (members and
devices), ``catalog`` (products and prices), ``session`` (a visit in progress), ``wire``
(the event envelope), ``logins``, ``journeys`` (the shopping funnel) and ``checkout``
(orders, payments, the outage), ``junk`` (malformed messages), ``scheduler`` (which visit
speaks next) and ``engine`` (the clock that interleaves them all).
"""

from __future__ import annotations

from pipeline.tools.simulator.config import SimConfig, SimMessage
from pipeline.tools.simulator.engine import generate

__all__ = ["SimConfig", "SimMessage", "generate"]

"""The HTTP collector (DESIGN section 13): the Segment HTTP Tracking API in front of events.raw.

Browsers, mini-programs and apps cannot produce to Kafka; they send with the Segment (or
RudderStack) SDKs they already use, to ``trackflow collect``. The collector only
authenticates, maps each call to the event envelope and produces it, keyed like any
producer's events; validation, dedup, consent, PII hashing and One ID stay in the worker,
so HTTP and Kafka events are judged by exactly the same code.

- ``sources``: the sources file (write keys, platform, rate limits) and token buckets.
- ``mapping``: Segment calls -> envelopes -> Kafka messages (pure, unit-tested).
- ``kafka``: the idempotent producer and one delivery wait per request.
- ``server``: the aiohttp application, answer codes, CORS, /metrics, /health.
"""

"""Business metrics: definitions as data, event-time windows, two-phase rollups, funnels.

Not to be confused with ``pipeline.runtime.telemetry``, the Prometheus metrics of the
pipeline itself.
"""

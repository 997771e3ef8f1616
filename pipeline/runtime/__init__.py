"""Faust wiring: topology, streams, offset guard, telemetry and the wire formats between
agents. The only part of ``pipeline`` (with ``agents`` and ``tables``) that imports Faust."""

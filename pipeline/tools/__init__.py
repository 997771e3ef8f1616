"""Operator tools around the pipeline: the embedded broker, producing, schema checks,
the traffic simulator and the demo."""

"""Anomaly detection over final rollups: detectors, alert rules, incidents, scoring."""

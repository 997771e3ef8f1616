"""Ingest: decoding producer messages, validating events against the plan, dedup memory."""

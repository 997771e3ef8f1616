"""The contract every stage shares: the tracking plan, error codes, PII rules, event time.

Pure data and functions; every other domain package may import this one, and this one
imports none of them.
"""

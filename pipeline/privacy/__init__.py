"""Privacy (DESIGN 15): suppression, deletion by person, request status and audit.

``requests`` is the request record on the ``privacy.requests`` topic, ``state`` what the
workers derive from all of them (who is suppressed, whose rows are purged), ``resolve``
finds a person's identifiers in the lake, ``matching`` says which lake rows belong to
them, ``rewrite`` replaces a Parquet file crash-safely, ``deletion`` removes a person from
the lake, ``audit`` writes the audit table, ``kafka`` talks to the broker for the CLI.
See docs/privacy.md.
"""

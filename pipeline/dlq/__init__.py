"""Dead-letter statistics and replay (DESIGN section 17; docs/dlq-replay.md).

``selection`` reads dead letters from the lake with the command's filters, ``ledger`` is
the crash-safe record of what was sent back, ``replay`` decides per dead letter and drives
the sending, ``kafka`` is the broker side, ``suppression`` the privacy check (the one
place a suppressed person's dead letters are kept from replay).
"""

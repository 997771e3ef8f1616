"""Source positions: where an event came from, packed into one sortable int.

``offset << 20 | index``: the Kafka offset of the producer message and the event's index
inside it (a batch). Dedup memory and lake checkpoints both order events by it.
"""

from __future__ import annotations

INDEX_BITS = 20
INDEX_MASK = (1 << INDEX_BITS) - 1


def pack(offset: int, index: int) -> int:
    return (offset << INDEX_BITS) | index


def unpack(pos: int) -> tuple[int, int]:
    return pos >> INDEX_BITS, pos & INDEX_MASK

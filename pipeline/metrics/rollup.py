"""The two-phase metric aggregation, under its former module name.

It now lives in three modules: ``pipeline.metrics.series`` (series kinds and their
values), ``pipeline.metrics.partials`` (phase 1, the partials of one batch) and
``pipeline.metrics.combine`` (phase 2, ``CombineState``). New code imports from those;
this module re-exports their public names for the callers not yet moved.
"""

from __future__ import annotations

from pipeline.metrics.combine import CombineState
from pipeline.metrics.partials import Partials, funnel_events, identifier_column, partials
from pipeline.metrics.series import (
    HLL_LG_K,
    SIMPLE,
    SeriesKey,
    decode,
    dims_json,
    encode,
    kind_of,
    merge,
    new_hll,
    result,
)

__all__ = [
    "HLL_LG_K",
    "SIMPLE",
    "CombineState",
    "Partials",
    "SeriesKey",
    "decode",
    "dims_json",
    "encode",
    "funnel_events",
    "identifier_column",
    "kind_of",
    "merge",
    "new_hll",
    "partials",
    "result",
]

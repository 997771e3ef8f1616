"""The identity map as a Faust global table: every worker holds and reads all of it.

Only the identity agent writes. Its changelog records are the link batches it applied;
every worker (the writer too, after a restart or a move) rebuilds the map by applying the
same links to its own ``IdentityGraph``. The graph is a function of the set of links, so
applying a record twice, or records the worker already applied itself, changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
from faust.types import EventT

from pipeline.identity_graph import IdentityGraph, Link

PARTITION = 0


class IdentityTable(faust.GlobalTable):
    graph: IdentityGraph

    def attach(self, graph: IdentityGraph) -> None:
        self.graph = graph

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        links: list[Link] = []
        for event in batch:
            value: Any = event.value
            if value:
                links.extend((a, b, int(t)) for a, b, t in value["links"])
        if links:
            self.graph.add(links, emit=False)

    def record(self, key: str, links: list[Link]) -> Any:
        return self.send_changelog(PARTITION, key, {"links": [list(link) for link in links]})

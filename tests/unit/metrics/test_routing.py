"""Placement of metrics on combine partitions."""

from __future__ import annotations

from pipeline.contract.plan import load_plan
from pipeline.metrics.definitions import load_metrics
from pipeline.metrics.routing import groups, partitions

DEFS = load_metrics(load_plan())


def test_a_ratio_goes_with_its_numerator_and_denominator() -> None:
    place = partitions(DEFS, 8)
    ratios = [d for d in DEFS.values() if d.type == "ratio"]
    assert ratios
    for d in ratios:
        assert place[d.name] == place[str(d.numerator)] == place[str(d.denominator)], d.name


def test_placement_is_stable_and_spreads_the_metrics() -> None:
    place = partitions(DEFS, 4)
    assert place == partitions(dict(reversed(DEFS.items())), 4)  # not order-dependent
    assert set(place) == set(DEFS)
    assert len(set(place.values())) > 1, "every metric on one partition: nothing spread"
    assert partitions(DEFS, 1) == dict.fromkeys(DEFS, 0)


def test_groups_join_ratios_that_share_a_part() -> None:
    g = groups(DEFS)
    for d in DEFS.values():
        if d.type == "ratio":
            assert g[d.name] == g[str(d.numerator)] == g[str(d.denominator)]
    singles = [m for m, root in g.items() if root == m and list(g.values()).count(m) == 1]
    assert singles, "some metrics stand alone"


def test_pairs_asked_to_go_together_do() -> None:
    lone = [m for m, root in groups(DEFS).items() if list(groups(DEFS).values()).count(root) == 1]
    a, b = lone[:2]
    assert groups(DEFS, [(a, b)])[a] == groups(DEFS, [(a, b)])[b]
    for n in (2, 3, 4, 8):
        place = partitions(DEFS, n, [(a, b)])
        assert place[a] == place[b]

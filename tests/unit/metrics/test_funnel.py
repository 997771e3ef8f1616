"""The funnel state machine."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.contract.plan import load_plan
from pipeline.metrics.definitions import load_metrics
from pipeline.metrics.funnel import counts_by_hour, entries, step_mask

FUNNEL = load_metrics(load_plan())["purchase_funnel"]
M = 60_000
W = 30 * M
HOME, DETAIL, CART, CHECKOUT, PAID = 1, 2, 4, 8, 16


def test_step_masks_follow_the_definition() -> None:
    assert step_mask(FUNNEL, "page_view", {"page": "home"}) == HOME
    assert step_mask(FUNNEL, "page_view", {"page": "product_detail"}) == DETAIL
    assert step_mask(FUNNEL, "page_view", {"page": "cart"}) == 0
    assert step_mask(FUNNEL, "add_to_cart", {}) == CART
    assert step_mask(FUNNEL, "pay_success", {"amount": 1}) == PAID


def test_a_full_purchase_reaches_step_five() -> None:
    ev = [(0, HOME), (M, DETAIL), (2 * M, CART), (3 * M, CHECKOUT), (4 * M, PAID)]
    assert entries(ev, 5, W) == [(0, 5)]


def test_steps_must_be_in_order_and_within_the_window() -> None:
    assert entries([(0, HOME), (M, CART), (2 * M, DETAIL)], 5, W) == [(0, 2)]
    assert entries([(0, HOME), (31 * M, DETAIL)], 5, W) == [(0, 1)]
    assert entries([(5, DETAIL), (5, HOME)], 5, W) == [(5, 1)]  # not after the entry


def test_a_home_view_within_30_minutes_of_the_entry_is_not_an_entry() -> None:
    ev = [(0, HOME), (10 * M, HOME), (29 * M, HOME), (30 * M, HOME), (45 * M, HOME)]
    assert [t for t, _ in entries(ev, 5, W)] == [0, 30 * M]
    assert [t for t, _ in entries(ev, 5, W, last_entry=-5 * M)] == [29 * M]


def test_entries_in_a_range_keep_the_chain_before_it() -> None:
    ev = [(0, HOME), (25 * M, HOME), (50 * M, HOME)]
    assert entries(ev, 5, W, since=40 * M) == [(50 * M, 1)]
    assert entries(ev, 5, W, until=40 * M) == [(0, 1)]


def test_counts_per_hour_count_every_step_up_to_the_furthest() -> None:
    assert counts_by_hour([(0, 3), (10 * M, 1), (3_600_000, 5)], 5) == {
        0: [2, 1, 1, 0, 0],
        3_600_000: [1, 1, 1, 1, 1],
    }


@given(
    st.lists(
        st.tuples(st.integers(0, 200 * M), st.sampled_from([HOME, DETAIL, CART, CHECKOUT, PAID])),
        max_size=40,
    ),
    st.integers(0, 200 * M),
)
def test_splitting_at_a_boundary_with_the_last_entry_gives_the_same_entries(
    raw: list[tuple[int, int]], cut: int
) -> None:
    ev = sorted(raw)
    whole = entries(ev, 5, W)
    before = [e for e in whole if e[0] < cut]
    last = before[-1][0] if before else None
    after = entries(ev, 5, W, last_entry=last, since=cut)
    assert before + after == whole

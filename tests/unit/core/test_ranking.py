"""Pareto dominance and ties within errors (hpscan.core.ranking): pure functions, checked by hand and by property."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hpscan.core.ranking import dominates, overlap, pareto_ids, tie_note, tied_with_best


def test_dominance_respects_each_objectives_goal():
    up = ["maximize", "maximize"]
    assert dominates([200.0, 7.0], [150.0, 7.0], up)  # better in one, no worse in the other
    assert not dominates([200.0, 7.0], [200.0, 7.0], up)  # equal points do not dominate each other
    assert not dominates([200.0, 5.0], [150.0, 7.0], up)  # a trade-off: neither dominates
    assert dominates([0.5, 7.0], [0.6, 7.0], ["minimize", "maximize"])
    assert not dominates([0.6, 7.0], [0.5, 7.0], ["minimize", "maximize"])


def test_the_pareto_set_is_the_trade_off_ordered_by_the_first_objective():
    points = {"a": [200.0, 5.0], "b": [150.0, 7.0], "c": [100.0, 6.0], "d": [180.0, 6.0], "e": [150.0, 7.0]}
    assert pareto_ids(points, ["maximize", "maximize"]) == ["a", "d", "b", "e"]  # c is beaten by d; b and e tie


@given(st.dictionaries(st.text("abcdef", min_size=1, max_size=3), st.tuples(st.integers(0, 9), st.integers(0, 9))))
def test_no_member_is_dominated_and_every_other_point_is(raw):
    points = {k: [float(x), float(y)] for k, (x, y) in raw.items()}
    goals = ["maximize", "minimize"]
    front = set(pareto_ids(points, goals))
    for i, p in points.items():
        beaten = any(dominates(q, p, goals) for q in points.values())
        assert (i in front) == (not beaten)


def test_values_tie_when_their_error_intervals_overlap():
    assert overlap(205.0, 4.0, 211.0, 4.0)  # 6 apart, errors sum to 8
    assert not overlap(205.0, 2.0, 211.0, 3.0)
    assert overlap(1.0, None, 1.0, None) and not overlap(1.0, None, 1.1, None)


def test_the_leaders_tied_with_the_best_are_named_and_a_clear_winner_stands_alone():
    leaders = [("a", 211.0, 4.0), ("b", 205.0, 4.0), ("c", 190.0, 3.0), ("d", 207.0, None)]
    assert tied_with_best(leaders) == ["a", "b", "d"]
    assert tied_with_best([("a", 211.0, 1.0), ("b", 205.0, 1.0)]) == []
    assert tied_with_best([("a", 0.5, None), ("b", 0.6, None)]) == []  # a loss without errors: the best wins
    assert tied_with_best([]) == []
    assert tie_note([], 5) == ""
    assert tie_note(["a", "b"], 5) == "tied within errors: 2 of the 5 best (a, b)"
    assert "perhaps more" in tie_note(["a", "b"], 2)

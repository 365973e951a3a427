"""The pure checks of workflows: parents of a job, the edge columns, cycles among jobs of one call."""

from __future__ import annotations

import pytest

from pgqueue import InBatch, InvalidJobError
from pgqueue.queue.jobs import dependency_columns, parents_of


def test_parents_are_deduplicated_in_order() -> None:
    assert parents_of([5, 3, 5, InBatch(0), InBatch(0)], batch_size=2, position=1) == [5, 3, InBatch(0)]
    assert parents_of(None, batch_size=1, position=0) == []


def test_edge_columns_are_one_based_positions() -> None:
    columns = dependency_columns([[], [InBatch(0), 42]], ["cancel", "run"])
    assert columns == {
        "waiting_for": [0, 2],
        "edge_children": [2, 2],
        "edge_parent_ids": [None, 42],
        "edge_parent_indexes": [1, None],
        "edge_on_failure": ["run", "run"],
    }


def test_a_cycle_through_a_long_chain_is_found_without_recursion() -> None:
    length = 100_000
    parents = [[InBatch(length - 1)]] + [[InBatch(i - 1)] for i in range(1, length)]
    with pytest.raises(InvalidJobError, match=r"cycle: 0 -> 99999 -> 99998 .* -> \.\.\."):
        dependency_columns(parents, ["cancel"] * length)


def test_a_dag_that_names_later_jobs_is_accepted() -> None:
    # job 0 waits for job 2, which waits for job 1: no cycle, though not in order
    columns = dependency_columns([[InBatch(2)], [], [InBatch(1)]], ["cancel"] * 3)
    assert columns["waiting_for"] == [1, 0, 1]

"""sort_tree's batching: every photo exactly once, in order, with a short final batch."""

from __future__ import annotations

import pytest

from nordlys.daemon.sorter import tapered_batches


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, 8, 9, 16, 17, 64, 100])
@pytest.mark.parametrize("size", [1, 2, 8, 32])
def test_every_item_once_in_order_and_no_batch_over_size(count, size):
    items = list(range(count))
    batches = tapered_batches(items, size)
    assert [x for b in batches for x in b] == items
    assert all(1 <= len(b) <= size for b in batches)


def test_full_batches_then_halving_tail():
    sizes = [len(b) for b in tapered_batches(list(range(64)), 8)]
    assert sizes == [8] * 7 + [4, 2, 1, 1]
    assert [len(b) for b in tapered_batches(list(range(20)), 8)] == [8, 6, 3, 1, 1, 1]
    assert [len(b) for b in tapered_batches(list(range(5)), 8)] == [2, 1, 1, 1]

"""SeqRanges answers as a set of the seqs added would, in memory that grows with the gaps."""

from __future__ import annotations

import random

from llmgine_daemon.bus.seqranges import SeqRanges


def test_it_answers_as_a_set_does_in_any_order():
    rng = random.Random(7)
    for _ in range(200):
        seen: set[int] = set()
        ranges = SeqRanges()
        for _ in range(rng.randint(1, 80)):
            seq = rng.randint(1, 60)
            ranges.add(seq, 0.0)
            seen.add(seq)
            assert all((s in ranges) == (s in seen) for s in range(0, 62))
        # Disjoint, sorted and not touching (two ranges that touch would have been one).
        assert all(hi + 1 < lo for hi, lo in zip(ranges.his, ranges.los[1:], strict=False))
        assert all(lo <= hi for lo, hi in zip(ranges.los, ranges.his, strict=True))


def test_seqs_in_order_are_one_range_however_many():
    ranges = SeqRanges()
    for seq in range(1, 100_001):
        ranges.add(seq, 0.0)
    assert len(ranges) == 1 and 1 in ranges and 100_000 in ranges and 100_001 not in ranges


def test_a_gap_filled_joins_the_two_ranges():
    ranges = SeqRanges()
    for seq in (1, 2, 4, 5):
        ranges.add(seq, 0.0)
    assert len(ranges) == 2 and 3 not in ranges
    ranges.add(3, 0.0)
    assert len(ranges) == 1 and all(s in ranges for s in range(1, 6))


def test_trim_forgets_the_ranges_that_did_not_grow_since():
    ranges = SeqRanges()
    ranges.add(1, 10.0)
    ranges.add(5, 20.0)
    ranges.add(9, 30.0)
    ranges.add(2, 31.0)  # the first range grew late: it stays
    ranges.trim(25.0)
    assert 1 in ranges and 2 in ranges and 5 not in ranges and 9 in ranges
    assert len(ranges) == 2
